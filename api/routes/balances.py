"""Balances: start one (idempotently), list, read with its lines, change product/policy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from sqlalchemy import and_, or_
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from api import idempotency, pagination, temporal
from api.balance_start import start_balance
from api.deps import (
    ClientDep,
    EnrolerDep,
    OperatorDep,
    ReaderDep,
    SessionDep,
    SettingsDep,
    TelemetryDep,
)
from api.errors import documented
from api.lookups import balance_or_404, check_policy, line_page, open_balance_or_409, product_for
from api.schemas.balances import (
    BalanceCreate,
    BalanceDetail,
    BalancePublic,
    BalancesPublic,
    BalanceUpdate,
)
from api.schemas.common import BalanceIdPath, CarrierName
from api.views import balance_detail, balance_public
from api.window import SinceQuery, window_start
from models.continuity import load_balance_continuity
from models.db import session_scope
from models.payloads import BalanceStatus, ChangePolicy, ChangeProduct
from models.spend import load_balance_spend
from models.tables import Balance, Product
from services.enrolment import product_spec

router = APIRouter(prefix="/v1/balances", tags=["balances"])

IDEMPOTENCY_SCOPE = "POST /v1/balances"


@router.post(
    "",
    status_code=201,
    response_model=BalancePublic,
    responses={
        200: {"model": BalancePublic, "description": "The eSIM's open balance, already started"},
        **documented(400, 401, 403, 409, 413, 422, 503),
    },
)
async def create_balance(
    body: BalanceCreate,
    caller: EnrolerDep,
    settings: SettingsDep,
    client: ClientDep,
    telemetry: TelemetryDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Same key and body from the same API key: the first answer again; "
            "another body: 409",
        ),
    ] = None,
) -> JSONResponse:
    """Start a balance for a registered eSIM (idempotent with an Idempotency-Key header)."""

    async def start() -> idempotency.Answer:
        return await start_balance(settings, client, body, caller.actor)

    if idempotency_key is None:
        status, content = await start()
        return JSONResponse(content, status_code=status)
    key = idempotency.Key(IDEMPOTENCY_SCOPE, caller.identity, idempotency_key)
    request_hash = idempotency.fingerprint(body.model_dump(mode="json"))
    status, content, replayed = await idempotency.run_once(
        settings.database_url, key, request_hash, start
    )
    if not replayed:
        return JSONResponse(content, status_code=status)
    telemetry.idempotent_replays.inc()
    return JSONResponse(content, status_code=status, headers={"Idempotent-Replayed": "true"})


@router.get("", responses=documented(401, 403, 422))
def list_balances(
    _: ReaderDep,
    session: SessionDep,
    state: BalanceStatus | None = None,
    carrier: CarrierName | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> BalancesPublic:
    """Balances, newest first, filtered by state and carrier; follow `next_cursor`."""
    query = select(Balance)
    if state is not None:
        query = query.where(Balance.state == state.value)
    if carrier is not None:
        query = query.where(Balance.carrier == carrier)
    if cursor is not None:
        at, after_id = pagination.decode(cursor)
        created = col(Balance.created_at)
        query = query.where(or_(created < at, and_(created == at, col(Balance.id) < after_id)))
    query = query.order_by(col(Balance.created_at).desc(), col(Balance.id).desc())
    rows = list(session.exec(query.limit(limit + 1)).all())
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = pagination.encode(page[-1].created_at, page[-1].id) if more else None
    return BalancesPublic(data=[balance_public(row) for row in page], next_cursor=next_cursor)


@router.get("/{balance_id}", responses=documented(401, 403, 404, 422))
def get_balance(
    balance_id: BalanceIdPath,
    _: ReaderDep,
    session: SessionDep,
    since: SinceQuery = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Lines per page")] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> BalanceDetail:
    """The balance with a page of its lines, newest first (follow `next_cursor`), its
    continuity figures since `since`, and what every pass it bought cost."""
    balance = balance_or_404(session, balance_id)
    lines, next_cursor = line_page(session, balance_id, limit, cursor)
    now = datetime.now(UTC)
    start = window_start(since, now)
    figures = load_balance_continuity(session, balance, now, start)
    spend = load_balance_spend(session, balance_id)
    return balance_detail(balance, lines, next_cursor, start, figures, spend)


@router.patch("/{balance_id}", responses=documented(400, 401, 403, 404, 409, 413, 422, 503, 504))
async def update_balance(
    balance_id: BalanceIdPath,
    body: BalanceUpdate,
    caller: OperatorDep,
    settings: SettingsDep,
    client: ClientDep,
) -> BalancePublic:
    """Change the product and/or policy of an open balance, from its next line on."""
    url = settings.database_url
    balance, product = await run_in_threadpool(_check_update, url, balance_id, body)
    wid = balance.workflow_id
    next_product_id = balance.next_product_id
    if product is not None:
        change = ChangeProduct(product=product_spec(product), actor=caller.actor)
        view = await temporal.update(client, wid, balance_id, "change_product", change)
        next_product_id = view.next_product_id
    if body.policy is not None:
        policy = ChangePolicy(policy=body.policy, actor=caller.actor)
        await temporal.update(client, wid, balance_id, "change_policy", policy)
    row = await run_in_threadpool(_store_update, url, balance_id, next_product_id, body)
    return balance_public(row)


def _check_update(url: str, balance_id: str, body: BalanceUpdate) -> tuple[Balance, Product | None]:
    """Everything that can be checked before Temporal is asked."""
    with session_scope(url) as session:
        balance = open_balance_or_409(session, balance_id)
        new = product_for(session, body.product_id, balance.carrier) if body.product_id else None
        ids = {balance.product_id, balance.next_product_id if new is None else new.id}
        governed = [p for p in (session.get(Product, i) for i in ids if i) if p is not None]
        check_policy(body.policy, *governed)
        return balance, new


def _store_update(
    url: str, balance_id: str, next_product_id: str | None, body: BalanceUpdate
) -> Balance:
    """Mirror what the workflow accepted (it writes the rest itself)."""
    with session_scope(url) as session:
        balance = balance_or_404(session, balance_id)
        if body.product_id is not None:
            balance.next_product_id = next_product_id
        if body.policy is not None:
            balance.policy = body.policy.model_dump(mode="json", exclude_none=True)
        session.add(balance)
        session.flush()
        return balance
