"""The Telna-like carrier's REST/JSON API (Telna Connect v2.1 shapes) over the engine.

Auth: the ``Authorization`` header holds the raw API key (a ``Bearer `` prefix is
accepted). Errors are ``{"error": "message"}``: 400 bad body or paging, 401 bad key,
404 unknown sim/package/template, 409 wrong state. Times are epoch milliseconds, data in
bytes; lists page with ``count``/``offset`` → ``{total, count, offset, <items>}`` where
``count`` is the number of items in this page.

Invented where nothing public says (see CARRIERS.md): ``price_cents``, ``reset`` and
``reset_utc_offset_minutes`` on templates; sim-registry status ``ACTIVE`` while a package
is active, else ``READY``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from simulators.core import CarrierEngine
from simulators.errors import SimulationError, WrongState
from simulators.records import Package, Product

MAX_PAGE = 1000


def ms(t: float | None) -> int | None:
    return None if t is None else round(t * 1000)


class TelnaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class TelnaRoute(APIRoute):
    """Maps validation and engine errors to Telna's ``{"error": ...}`` with a 4xx status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"][1:]) or str(first["loc"][0])
                return _error(400, f"invalid {where}: {first['msg']}")
            except TelnaError as exc:
                return _error(exc.status, exc.message)
            except WrongState as exc:
                return _error(409, str(exc))
            except SimulationError as exc:
                return _error(404, str(exc))

        return guarded


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class OrderIn(BaseModel):
    sim: str = Field(min_length=1)
    package_template: str | int
    customer_ref: str | None = Field(default=None, max_length=255)
    # AUTO: the package activates on attach, i.e. as soon as the SIM has no active one.
    activation_type: Literal["MANUAL", "AUTO"] = "MANUAL"


def package_json(p: Package) -> dict[str, Any]:
    return {
        "id": p.id,
        "sim": p.iccid,
        "package_template": p.product_id,
        "customer_ref": p.reference,
        "status": p.status,
        "created_date": ms(p.ordered_at),
        "activated_date": ms(p.activated_at),
        "expiry_date": ms(p.expires_at),
        "terminated_date": ms(p.terminated_at),
        "data_usage": int(p.used_bytes),
        "data_usage_allowance": p.allowance_bytes,
        "data_usage_remaining": p.remaining_bytes,
        "activation_type": "AUTO" if p.auto else "MANUAL",
    }


def template_json(p: Product) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "data_usage_allowance": p.allowance_bytes,
        "time_allowance": {"duration": p.validity_seconds, "unit": "SECOND"},
        "activation_type": "MANUAL",
        "traffic_policy": {"throttle_kbps": p.throttle_kbps},
        "price_cents": p.price_cents,
        "reset": p.reset,
        "reset_utc_offset_minutes": p.reset_utc_offset_minutes,
    }


Count = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0)]


def _page(items: list[dict[str, Any]], key: str, count: int, offset: int) -> dict[str, Any]:
    page = items[offset : offset + count]
    return {"total": len(items), "count": len(page), "offset": offset, key: page}


def create_telna_router(engine: CarrierEngine, api_key: str) -> APIRouter:
    """The ``/v2.1`` routes; every one needs the API key."""
    expected = api_key.encode()

    async def authorize(authorization: Annotated[str | None, Header()] = None) -> None:
        token = (authorization or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        if not hmac.compare_digest(token.encode(), expected):
            raise TelnaError(401, "missing or invalid API key")

    router = APIRouter(prefix="/v2.1", route_class=TelnaRoute, dependencies=[Depends(authorize)])

    @router.get("/pcr/package-templates")
    async def list_templates(count: Count = 100, offset: Offset = 0) -> dict[str, Any]:
        """The package templates (the catalogue)."""
        items = [template_json(p) for p in engine.products.values()]
        return _page(items, "package_templates", count, offset)

    @router.post("/pcr/packages", status_code=201)
    async def order(body: OrderIn) -> dict[str, Any]:
        """Order a package on a SIM; it is NOT_ACTIVE until activated."""
        auto = body.activation_type == "AUTO"
        package = engine.order(body.sim, str(body.package_template), body.customer_ref, auto)
        return package_json(package)

    @router.get("/pcr/packages")
    async def list_packages(
        sim: str | None = None, count: Count = 100, offset: Offset = 0
    ) -> dict[str, Any]:
        """Packages, optionally of one SIM, oldest first."""
        listed = engine.listed(sim) if sim is not None else engine.packages()
        items = [package_json(p) for p in listed]
        return _page(items, "packages", count, offset)

    @router.get("/pcr/packages/{package_id}")
    async def get_package(package_id: str) -> dict[str, Any]:
        """One package."""
        return package_json(engine.package(package_id))

    @router.post("/pcr/packages/{package_id}/activate", status_code=202)
    async def activate(package_id: str) -> dict[str, Any]:
        """Request activation; the package turns ACTIVE after the carrier's latency."""
        return package_json(engine.activate(package_id))

    @router.post("/pcr/packages/{package_id}/terminate")
    async def terminate(package_id: str) -> dict[str, Any]:
        """Terminate a package at once (idempotent)."""
        return package_json(engine.terminate(package_id))

    @router.get("/usage/packages/{package_id}")
    async def usage(package_id: str) -> dict[str, Any]:
        """Data usage of one package, now."""
        package = engine.package(package_id)
        return {
            "package_id": package.id,
            "data_usage": int(package.used_bytes),
            "data_usage_allowance": package.allowance_bytes,
            "data_usage_remaining": package.remaining_bytes,
            "timestamp": ms(engine.advance()),
        }

    @router.get("/inventory/sim-registries/{iccid}")
    async def sim_registry(iccid: str) -> dict[str, Any]:
        """One SIM of the inventory."""
        active = any(p.status == "ACTIVE" for p in engine.packages(iccid))
        return {"iccid": iccid, "status": "ACTIVE" if active else "READY"}

    return router
