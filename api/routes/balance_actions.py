"""Operator actions on a balance: pause, resume, cancel, rotate — each one signal.

Signals are asynchronous: the answer is 202 with the balance as the database shows it
now; its ``state`` changes once the workflow has acted (poll ``GET /v1/balances/{id}``).
Repeating an action is harmless (pausing a paused balance changes nothing).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client

from api import temporal
from api.auth import Caller
from api.deps import ClientDep, OperatorDep, SettingsDep
from api.errors import documented
from api.lookups import open_balance_or_409
from api.schemas.balances import ActionBody, BalancePublic
from api.schemas.common import BalanceIdPath
from api.views import balance_public
from config import Settings
from models.db import session_scope
from models.payloads import ActionRequest
from models.tables import Balance

router = APIRouter(prefix="/v1/balances", tags=["balance actions"])

OptionalBody = Annotated[ActionBody | None, Body()]
ERRORS = documented(400, 401, 403, 404, 409, 413, 422, 503)


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


@router.post("/{balance_id}/resume", status_code=202, responses=ERRORS)
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


@router.post("/{balance_id}/rotate", status_code=202, responses=ERRORS)
async def rotate(
    balance_id: BalanceIdPath,
    caller: OperatorDep,
    settings: SettingsDep,
    client: ClientDep,
    body: OptionalBody = None,
) -> BalancePublic:
    """Switch to a fresh line now, whatever the active one's time or usage."""
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
    request = ActionRequest(actor=caller.actor, reason=body.reason if body else "")
    await temporal.signal(client, balance.workflow_id, balance_id, signal, request)
    return balance_public(balance)


def _open_balance(url: str, balance_id: str) -> Balance:
    with session_scope(url) as session:
        return open_balance_or_409(session, balance_id)
