"""The eSIM Go-like carrier's REST/JSON API (v2.4, also served as v2.5) over the account.

Routes, bodies and auth; the rules are :class:`simulators.esimgo_account.Account`'s and the
shapes :mod:`simulators.esimgo_views`'. Every error is ``{"message": "..."}``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator

from simulators.errors import UnknownProduct, UnknownSim, WrongState
from simulators.esimgo_account import Account, EsimGoError, OrderLine
from simulators.esimgo_views import CURRENT_STATES, bundle_json, bundle_state, grouped

VERSIONS = ("/v2.4", "/v2.5")
MAX_PER_PAGE = 1000


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


class EsimGoRoute(APIRoute):
    """Maps validation and engine errors to ``{"message"}`` with the record's statuses."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"][1:]) or str(first["loc"][0])
                return error(400, f"invalid {where}: {first['msg']}")
            except EsimGoError as exc:
                return error(exc.status, exc.message)
            except UnknownSim as exc:
                return error(403, str(exc))
            except (UnknownProduct, WrongState) as exc:
                return error(400, str(exc))

        return guarded


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderItemIn(_Body):
    type: Literal["bundle"] = "bundle"
    quantity: int = Field(ge=1)
    item: str = Field(min_length=1)
    iccids: list[str] | None = None
    allowReassign: bool = False
    profileID: str | None = None


class OrderIn(_Body):
    """The record's body, or its flattened one-item form ``{type, quantity, item}``."""

    type: Literal["validate", "transaction"]
    assign: bool = False
    order: list[OrderItemIn] | None = None
    quantity: int | None = Field(default=None, ge=1)
    item: str | None = None
    iccids: list[str] | None = None
    allowReassign: bool = False
    profileID: str | None = None

    def lines(self) -> list[OrderLine]:
        if self.order is not None:
            if self.item is not None or self.quantity is not None:
                raise EsimGoError(400, "give order[] or a flattened item, not both")
            return [OrderLine(i.item, i.quantity, i.iccids) for i in self.order]
        if self.item is None or self.quantity is None:
            raise EsimGoError(400, "order[] (or item and quantity) is required")
        return [OrderLine(self.item, self.quantity, self.iccids)]


class ApplyIn(_Body):
    iccid: str | None = None
    bundle: str | None = None
    bundles: list[str] | None = None
    startTime: str | None = None
    repeat: int | None = Field(default=None, ge=1)
    allowReassign: bool = False

    @field_validator("startTime")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("startTime must be an RFC 3339 time") from None
        return value

    def names(self) -> list[str]:
        if (self.bundle is None) == (self.bundles is None):
            raise EsimGoError(400, "give bundle or bundles")
        names = [self.bundle] if self.bundle is not None else list(self.bundles or [])
        if not names:
            raise EsimGoError(400, "bundles must not be empty")
        return names


class RefundIn(_Body):
    name: str = Field(min_length=1)
    quantity: int = Field(ge=1)


Page = Annotated[int, Query(ge=1)]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE)]
Limit = Annotated[int, Query(ge=1, le=200)]
RevokeType = Literal["validate", "transaction"]


def create_esimgo_router(account: Account, api_key: str) -> APIRouter:
    """The API's routes, without a version prefix (the app mounts them under each)."""
    expected = api_key.encode()
    engine = account.engine

    async def authorize(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if not hmac.compare_digest((x_api_key or "").encode(), expected):
            raise EsimGoError(403, "Forbidden")

    router = APIRouter(route_class=EsimGoRoute, dependencies=[Depends(authorize)])

    @router.get("/catalogue")
    async def catalogue(
        page: Page = 1,
        perPage: PerPage = 50,
        description: str | None = None,
        countries: str | None = None,
    ) -> dict[str, Any]:
        """The bundles on sale, a page at a time."""
        items = [bundle_json(p) for p in engine.products.values()]
        if description:
            items = [b for b in items if description.lower() in b["description"].lower()]
        if countries:
            wanted = {c.strip().upper() for c in countries.split(",")}
            items = [b for b in items if {c["iso"] for c in b["countries"]} & wanted]
        start = (page - 1) * perPage
        return {
            "bundles": items[start : start + perPage],
            "pageCount": max(1, -(-len(items) // perPage)),
            "rows": len(items),
            "pageSize": perPage,
        }

    @router.get("/catalogue/{bundle_name}")
    async def catalogue_bundle(bundle_name: str) -> dict[str, Any]:
        """One bundle of the catalogue (names are case-sensitive)."""
        product = engine.products.get(bundle_name)
        if product is None:
            raise EsimGoError(400, f"Bundle {bundle_name!r} not found")
        return bundle_json(product)

    @router.post("/orders")
    async def orders(body: OrderIn) -> dict[str, Any]:
        """Validate or buy bundles, into the inventory or onto eSIMs."""
        return account.order(body.type, body.assign, body.lines())

    @router.get("/inventory")
    async def inventory() -> dict[str, Any]:
        """Bundles bought and not yet applied."""
        items = [
            {"name": name, "description": engine.products[name].name, "available": count}
            for name, count in account.inventory.items()
            if count > 0
        ]
        return {"bundles": items}

    @router.post("/inventory/refund")
    async def refund(body: RefundIn) -> dict[str, Any]:
        """Unused inventory back to the balance."""
        return account.refund_inventory(body.name, body.quantity)

    @router.post("/esims/apply")
    async def apply(body: ApplyIn) -> dict[str, Any]:
        """Apply bundles from the inventory to an eSIM; each queues after processing."""
        return account.apply(body.iccid, body.names(), body.repeat)

    @router.get("/esims/{iccid}/bundles")
    async def bundles(iccid: str, includeUsed: bool = False, limit: Limit = 15) -> dict[str, Any]:
        """The eSIM's assignments, newest first, grouped by bundle."""
        account.accessible(iccid)
        now = engine.advance()
        found = [
            p
            for p in reversed(engine.packages(iccid))
            if includeUsed or bundle_state(p, now) in CURRENT_STATES
        ]
        return {"bundles": grouped(found[:limit], engine.products, account.references, now)}

    @router.get("/esims/{iccid}/bundles/{name}")
    async def bundle_status(iccid: str, name: str) -> dict[str, Any]:
        """The latest assignment of this bundle on the eSIM."""
        account.accessible(iccid)
        now = engine.advance()
        found = [p for p in engine.packages(iccid) if p.product_id == name]
        if not found:
            raise EsimGoError(400, f"bundle {name!r} is not applied to this eSIM")
        return grouped(found[-1:], engine.products, account.references, now)[0]

    @router.delete("/esims/{iccid}/bundles/{name}")
    async def revoke(
        iccid: str, name: str, type: RevokeType = "transaction", refundToBalance: bool = False
    ) -> dict[str, str]:
        """Revoke the oldest unused assignment of this bundle."""
        account.accessible(iccid)
        return account.revoke(account.oldest_unused(iccid, name), type, refundToBalance)

    @router.delete("/esims/{iccid}/bundles/{name}/assignments/{assignment_id}")
    async def revoke_assignment(
        iccid: str,
        name: str,
        assignment_id: str,
        type: RevokeType = "transaction",
        refundToBalance: bool = False,
    ) -> dict[str, str]:
        """Revoke one assignment, in whatever state (an active one ends at once)."""
        account.accessible(iccid)
        package = account.assignment(iccid, name, assignment_id)
        return account.revoke(package, type, refundToBalance)

    return router
