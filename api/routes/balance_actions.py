"""Operator actions on a balance: pause, resume, cancel, rotate — each one signal.

Signals are asynchronous: the answer is 202 with the balance as the database shows it
now; its ``state`` changes once the workflow has acted (poll ``GET /v1/balances/{id}``).
Repeating an action is harmless (pausing a paused balance changes nothing). The actions
that buy a line, resume and rotate, are rate limited per balance and per key
(``api.action_limits``: 429 with ``Retry-After``), and rotate keeps within the day's cost
cap unless ``force`` (409 ``cap_reached``; the workflow refuses it too).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body
from sqlmodel import col, func, select
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client

from api import temporal
from api.action_limits import BUYING, give_back, take_turn
from api.auth import Caller
from api.deps import ClientDep, OperatorDep, SettingsDep
from api.errors import ApiError, documented
from api.lookups import open_balance_or_409
from api.schemas.balances import ActionBody, BalancePublic, RotateBody
from api.schemas.common import BalanceIdPath
from api.views import balance_public
from config import Settings
from models import money
from models.db import session_scope
from models.payloads import ActionRequest, LineState, Policy
from models.tables import Balance, BalanceLine, Product

router = APIRouter(prefix="/v1/balances", tags=["balance actions"])

OptionalBody = Annotated[ActionBody | None, Body()]
OptionalRotateBody = Annotated[RotateBody | None, Body()]
ERRORS = documented(400, 401, 403, 404, 409, 413, 422, 503)
BUYING_ERRORS = documented(400, 401, 403, 404, 409, 413, 422, 429, 503)


@router.post("/{balance_id}/pause", status_code=202, responses=ERRORS)
async def pause(
    balance_id: BalanceIdPath,
    caller: OperatorDep,
    settings: SettingsDep,
    client: ClientDep,
    body: OptionalBody = None,
) -> BalancePublic:
    """Suspend the eSIM now: its lines are ended at the carrier until resume."""
    return await _act(settings, client, caller, balance_id, "pause", body)


@router.post("/{balance_id}/resume", status_code=202, responses=BUYING_ERRORS)
async def resume(
    balance_id: BalanceIdPath,
    caller: OperatorDep,
    settings: SettingsDep,
    client: ClientDep,
    body: OptionalBody = None,
) -> BalancePublic:
    """Bring a paused eSIM back on a fresh line."""
    return await _act(settings, client, caller, balance_id, "resume", body)


@router.post("/{balance_id}/cancel", status_code=202, responses=ERRORS)
async def cancel(
    balance_id: BalanceIdPath,
    caller: OperatorDep,
    settings: SettingsDep,
    client: ClientDep,
    body: OptionalBody = None,
) -> BalancePublic:
    """End the balance: every line is ended at the carrier, the workflow completes."""
    return await _act(settings, client, caller, balance_id, "cancel", body)


@router.post("/{balance_id}/rotate", status_code=202, responses=BUYING_ERRORS)
async def rotate(
    balance_id: BalanceIdPath,
    caller: OperatorDep,
    settings: SettingsDep,
    client: ClientDep,
    body: OptionalRotateBody = None,
) -> BalancePublic:
    """Switch to a fresh line now, whatever the active one's time or usage; within the
    day's cost cap unless ``force``."""
    return await _act(settings, client, caller, balance_id, "rotate_now", body)


async def _act(
    settings: Settings,
    client: Client,
    caller: Caller,
    balance_id: str,
    signal: str,
    body: ActionBody | None,
) -> BalancePublic:
    balance = await run_in_threadpool(_open_balance, settings.database_url, balance_id)
    request = ActionRequest(
        actor=caller.actor,
        reason=body.reason if body else "",
        force=isinstance(body, RotateBody) and body.force,
    )
    await send_action(settings, client, balance, caller.identity, signal, request)
    return balance_public(balance)


async def send_action(
    settings: Settings,
    client: Client,
    balance: Balance,
    identity: str,
    signal: str,
    request: ActionRequest,
) -> None:
    """Send an operator action to the balance's workflow: a rotation within the cost cap
    unless forced, an action that buys a line within its rate limits."""
    url, limits = settings.database_url, settings.action_limits
    if signal == "rotate_now" and not request.force:
        refusal = await run_in_threadpool(cap_refusal, url, balance)
        if refusal is not None:
            raise ApiError(
                409,
                "cap_reached",
                f"balance {balance.id} {refusal} (its cost cap): send force: true to rotate anyway",
            )
    if signal not in BUYING:
        await temporal.signal(client, balance.workflow_id, balance.id, signal, request)
        return
    window = await run_in_threadpool(take_turn, url, limits, balance.id, identity)
    try:
        await temporal.signal(client, balance.workflow_id, balance.id, signal, request)
    except BaseException:
        await run_in_threadpool(give_back, url, limits, balance.id, identity, window)
        raise


def cap_refusal(url: str, balance: Balance) -> str | None:
    """Why a rotation now would pass the balance's cost cap of today (UTC), as the
    workflow counts it (and enforces itself too), or None: its lines started today, or
    what buying the next line would bring today's spend to. A next line bought already
    costs nothing more to switch to."""
    policy = Policy.model_validate(balance.policy or {})
    lines_cap, spend_cap = policy.max_lines_per_day, policy.max_spend_per_day
    if lines_cap is not None and _lines_today(url, balance.id) >= lines_cap:
        return f"has had its {lines_cap} lines of today"
    if spend_cap is None:
        return None
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with session_scope(url) as session:
        product = session.get(Product, balance.next_product_id or balance.product_id)
        waiting = session.exec(
            select(func.count())
            .select_from(BalanceLine)
            .where(BalanceLine.balance_id == balance.id)
            .where(BalanceLine.state == LineState.scheduled.value)
            .where(col(BalanceLine.carrier_line_id).is_not(None))
        ).one()
        if product is None or waiting:
            return None
        spent: int = (
            session.exec(
                select(func.coalesce(func.sum(BalanceLine.price_cents), 0))
                .where(BalanceLine.balance_id == balance.id)
                .where(col(BalanceLine.ordered_at) >= midnight)
                .where(BalanceLine.currency == product.currency)
            ).one()
            or 0
        )
    if spent + product.price_cents <= money.cents(spend_cap):
        return None
    after = money.amount(spent + product.price_cents)
    return (
        f"would spend {after} {product.currency} today with its next line, past its "
        f"{money.amount(money.cents(spend_cap))}"
    )


def _lines_today(url: str, balance_id: str) -> int:
    """Lines of the balance activated since 00:00 UTC, as the workflow counts them
    against its cost cap (which it enforces itself too)."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with session_scope(url) as session:
        return session.exec(
            select(func.count())
            .select_from(BalanceLine)
            .where(BalanceLine.balance_id == balance_id)
            .where(col(BalanceLine.activated_at) >= midnight)
        ).one()


def _open_balance(url: str, balance_id: str) -> Balance:
    with session_scope(url) as session:
        return open_balance_or_409(session, balance_id)
