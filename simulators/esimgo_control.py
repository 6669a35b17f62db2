"""The eSIM Go simulator's own control routes, beside the shared ``/_sim`` API.

``GET/POST /_sim/esimgo`` ``{refunds_enabled?, signature_encoding?, rate_limit_tokens?,
balance?}`` (the fields given change; ``rate_limit_tokens`` null turns the limit off;
``balance`` in the account's currency) answers the knobs with the balance, inventory and
the ICCIDs removed by the returns process. ``POST /_sim/esimgo/installed``
``{iccids, installed}`` marks eSIMs installed on a device (or on none: such an eSIM never
attaches, and its bundles stay queued).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from simulators.control import CONTROL_PREFIX, ControlRoute
from simulators.esimgo_account import Account
from simulators.esimgo_views import money


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountIn(_Body):
    refunds_enabled: bool | None = None
    signature_encoding: Literal["hex", "base64"] | None = None
    rate_limit_tokens: int | None = Field(default=None, ge=1)
    balance: float | None = Field(default=None, ge=0)


class InstalledIn(_Body):
    iccids: list[str] = Field(min_length=1)
    installed: bool = True


def create_esimgo_control_router(account: Account) -> APIRouter:
    router = APIRouter(
        prefix=f"{CONTROL_PREFIX}/esimgo", tags=["simulator control"], route_class=ControlRoute
    )
    config = account.config

    def view() -> dict[str, Any]:
        return {
            "refunds_enabled": config.refunds_enabled,
            "signature_encoding": config.signature_encoding,
            "rate_limit_tokens": config.rate_limit_tokens,
            "balance": money(account.balance_cents),
            "inventory": {k: v for k, v in account.inventory.items() if v},
            "removed": list(account.removed),
        }

    @router.get("")
    async def get_account() -> dict[str, Any]:
        """The account's knobs and state."""
        return view()

    @router.post("")
    async def set_account(body: AccountIn) -> dict[str, Any]:
        """Change the fields given; the others keep their values."""
        given = body.model_fields_set
        if body.refunds_enabled is not None:
            config.refunds_enabled = body.refunds_enabled
        if body.signature_encoding is not None:
            config.signature_encoding = body.signature_encoding
        if "rate_limit_tokens" in given:
            config.rate_limit_tokens = body.rate_limit_tokens
        if body.balance is not None:
            account.set_balance(round(body.balance * 100))
        return view()

    @router.post("/installed")
    async def installed(body: InstalledIn) -> dict[str, Any]:
        """Mark eSIMs installed on a device (an installed eSIM is never removed)."""
        account.set_installed(body.iccids, body.installed)
        return {"iccids": body.iccids, "installed": body.installed}

    return router
