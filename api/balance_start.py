"""Starting a balance over HTTP: the API's checks, then the shared enrolment path.

The eSIM must be registered (its carrier decides which products fit). An eSIM's open
balance on the same product is answered as it is (enrolment is idempotent per ICCID);
on another product it is a 409: change it with PATCH, or cancel it first.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from temporalio.client import Client

from api.errors import ApiError
from api.lookups import balance_or_404, check_policy, product_for
from api.schemas.balances import BalanceCreate
from api.views import balance_public
from config import Settings
from models.db import session_scope
from models.payloads import BalanceState
from models.tables import Balance, Esim
from services.enrolment import EnrolmentError, EnrolRequest, open_balance, register, start_workflow


async def start_balance(
    settings: Settings, client: Client, body: BalanceCreate, actor: str
) -> tuple[int, dict[str, Any]]:
    """Register the balance and start its workflow: (201 new or 200 existing, the balance)."""
    state, created = await run_in_threadpool(_register, settings.database_url, body, actor)
    # Also for an existing balance: a start that failed earlier is completed now.
    await start_workflow(client, settings.task_queue, state)
    row = await run_in_threadpool(_balance_row, settings.database_url, state.balance_id)
    return (201 if created else 200), balance_public(row).model_dump(mode="json")


def _register(url: str, body: BalanceCreate, actor: str) -> tuple[BalanceState, bool]:
    with session_scope(url) as session:
        esim = session.get(Esim, body.iccid)
        if esim is None:
            raise ApiError(
                422, "unknown_esim", f"eSIM {body.iccid} is not registered: POST /v1/esims first"
            )
        product = product_for(session, body.product_id, esim.carrier)
        check_policy(body.policy, product)
        existing = open_balance(session, body.iccid)
        if existing is not None and body.product_id not in (
            existing.product_id,
            existing.next_product_id,
        ):
            raise ApiError(
                409,
                "balance_open",
                f"eSIM {body.iccid} already has open balance {existing.id} on "
                f"{existing.product_id}: PATCH or cancel it",
            )
        carrier = esim.carrier
    req = EnrolRequest(
        iccid=body.iccid,
        carrier=carrier,
        product_id=body.product_id,
        lines=body.lines,
        policy=body.policy,
        customer_ref=body.customer_ref,
    )
    try:
        return register(url, req, actor)
    except EnrolmentError as error:
        raise ApiError(409, "enrolment_conflict", str(error)) from None


def _balance_row(url: str, balance_id: str) -> Balance:
    with session_scope(url) as session:
        return balance_or_404(session, balance_id)
