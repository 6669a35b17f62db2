"""Signals and updates to a balance's workflow, with Temporal's failures as API errors.

The caller has already checked in the database that the balance is open. A workflow that
is gone anyway (it completed a moment ago) is a 409; Temporal unreachable is a 503
(raised as ``RPCError`` and mapped in ``api.errors``); an update the workflow did not
answer in time is a 504, since it may still be applied; a run that Temporal says holds
all the signals it may (a flood of messages, while the run hands over) is a 429.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError
from models.payloads import BalanceStatusView

UPDATE_TIMEOUT = timedelta(seconds=15)
# How Temporal refuses a signal to a run that holds as many as it may (10,000).
SIGNAL_LIMIT = "exceeded workflow execution limit for signal events"


def _gone(balance_id: str) -> ApiError:
    return ApiError(409, "balance_closed", f"balance {balance_id} is closed")


async def signal(
    client: Client, workflow_id: str, balance_id: str, name: str, arg: BaseModel
) -> None:
    """Send signal ``name`` to the balance's workflow."""
    try:
        await client.get_workflow_handle(workflow_id).signal(name, arg)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise _gone(balance_id) from None
        if error.status == RPCStatusCode.INVALID_ARGUMENT and SIGNAL_LIMIT in error.message:
            # A flood of messages has filled the run; it is handing over to a new one.
            raise ApiError(
                429,
                "balance_busy",
                f"balance {balance_id} takes no message until its workflow has handed over "
                "to a new run; try again in a second",
                headers={"Retry-After": "1"},
            ) from None
        raise


async def update(
    client: Client, workflow_id: str, balance_id: str, name: str, arg: BaseModel
) -> BalanceStatusView:
    """Run update ``name`` on the balance's workflow; its validator's refusal is a 409."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        view: BalanceStatusView = await handle.execute_update(
            name, arg, result_type=BalanceStatusView, rpc_timeout=UPDATE_TIMEOUT
        )
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause)
        raise ApiError(409, "update_refused", message) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise ApiError(
            504, "temporal_timeout", "the workflow did not answer in time; check again"
        ) from None
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise _gone(balance_id) from None
        raise
    return view
