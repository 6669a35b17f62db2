"""The Telna-like carrier's REST/JSON API (Telna Connect PCR v2.1) over the engine.

On the record (CARRIERS.md section 2): ``Authorization`` holds the API key, raw or with
``Bearer `` (third parties disagree; both are accepted). Lists page with
``count``/``offset`` → ``{total, count, offset, <items>}`` and ``GET /pcr/packages``
filters by ``sim``, ``package_template`` and ``status``. A package is created with
``POST /pcr/packages {sim, package_template, time_allowance?}`` (201, ``NOT_ACTIVE``;
any other field is refused, 400: there is no place for a caller's reference, so the
ledger's ``reference`` is null);
its fields are ``id, sim, package_template, status, window_activation_start/end,
data_usage_remaining`` (bytes), ``created_date, activated_date, expiry_date,
terminated_date`` (epoch milliseconds, 0 while not yet so) and ``time_allowance``
(seconds). Templates carry ``data_usage_allowance`` (bytes), ``time_allowance
{duration, unit}`` and ``activation_type`` ``AUTO`` (the package starts on attach: as
soon as the SIM has no active package) or ``MANUAL`` (started through the API). Usage is
read off the package (``data_usage_remaining``); a package ends ``TERMINATED`` by time,
by data or when terminated.

The simulator's choices where the record is silent ([NOT PUBLIC]):

- activating and terminating a package: ``POST /pcr/packages/{id}/activate`` and
  ``.../terminate`` (a Telna reseller's paths, under Telna's prefix), answering ``true``;
- errors are ``{"error": "message"}``: 400 bad body or paging, 401 bad key, 404 unknown
  sim/package/template, 409 wrong state;
- ``price_cents``, ``reset``, ``reset_utc_offset_minutes`` and ``throttle_kbps``
  on templates (``traffic_policy`` is the record's integer; ``throttle_kbps`` is never
  applied, as a used-up package is TERMINATED); sim-registry status ``ACTIVE`` while a
  package is active, else ``READY``;
- ``window_activation_end``: the order time plus 30 days;
- template ids are names (``compressed-30s``), not the integers Telna shows; an id of
  digits is answered as an integer.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

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


ACTIVATION_WINDOW_SECONDS = 30 * 86_400  # a package may be started this long after its order
PackageStatus = Literal["NOT_ACTIVE", "ACTIVE", "TERMINATED", "SUSPENDED"]
AuthScheme = Literal["raw", "bearer"]
AUTH_SCHEMES: frozenset[AuthScheme] = frozenset({"raw", "bearer"})


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sim: str = Field(min_length=1)
    package_template: str | int
    time_allowance: int | None = Field(default=None, ge=1, description="seconds")


def package_json(p: Package) -> dict[str, Any]:
    return {
        "id": p.id,
        "sim": p.iccid,
        "package_template": _template_id(p.product_id),
        "status": p.status,
        "window_activation_start": ms(p.ordered_at),
        "window_activation_end": ms(p.ordered_at + ACTIVATION_WINDOW_SECONDS),
        "created_date": ms(p.ordered_at),
        "activated_date": ms(p.activated_at) or 0,
        "expiry_date": ms(p.expires_at) or 0,
        "terminated_date": ms(p.terminated_at) or 0,
        "data_usage_remaining": p.remaining_bytes,
        "time_allowance": p.validity_seconds,
    }


def _template_id(product_id: str) -> int | str:
    return int(product_id) if product_id.isdigit() else product_id


def time_allowance(seconds: int) -> dict[str, Any]:
    """A template's duration in the largest unit that divides it."""
    for unit, size in (("WEEK", 604_800), ("DAY", 86_400), ("HOUR", 3600), ("MINUTE", 60)):
        if seconds % size == 0:
            return {"duration": seconds // size, "unit": unit}
    return {"duration": seconds, "unit": "SECOND"}


def template_json(p: Product, manual: bool) -> dict[str, Any]:
    return {
        "id": _template_id(p.id),
        "name": p.name,
        "data_usage_allowance": p.allowance_bytes,
        "time_allowance": time_allowance(p.validity_seconds),
        "activation_type": "MANUAL" if manual else "AUTO",
        "status": "Active",
        "traffic_policy": 1,
        "throttle_kbps": p.throttle_kbps,
        "price_cents": p.price_cents,
        "reset": p.reset,
        "reset_utc_offset_minutes": p.reset_utc_offset_minutes,
    }


Count = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0)]


def _page(items: list[dict[str, Any]], key: str, count: int, offset: int) -> dict[str, Any]:
    page = items[offset : offset + count]
    return {"total": len(items), "count": len(page), "offset": offset, key: page}


def create_telna_router(
    engine: CarrierEngine,
    api_key: str,
    manual: frozenset[str] = frozenset(),
    *,
    auth_schemes: frozenset[AuthScheme] = AUTH_SCHEMES,
    activate_route: bool = True,
) -> APIRouter:
    """The ``/v2.1`` routes; every one needs the API key. Templates named in ``manual``
    are MANUAL, the others AUTO. An account that takes the key only ``raw`` or only as
    ``bearer``, or has no activate route, is one whose Telna differs from what the
    product's client chose (for the carrier doctor's tests)."""
    expected = api_key.encode()

    async def authorize(authorization: Annotated[str | None, Header()] = None) -> None:
        token = (authorization or "").strip()
        scheme: AuthScheme = "raw"
        if token[:7].lower() == "bearer ":
            token, scheme = token[7:].strip(), "bearer"
        if not hmac.compare_digest(token.encode(), expected) or scheme not in auth_schemes:
            raise TelnaError(401, "missing or invalid API key")

    router = APIRouter(prefix="/v2.1", route_class=TelnaRoute, dependencies=[Depends(authorize)])

    @router.get("/pcr/package-templates")
    async def list_templates(count: Count = 100, offset: Offset = 0) -> dict[str, Any]:
        """The package templates (the catalogue)."""
        items = [template_json(p, p.id in manual) for p in engine.products.values()]
        return _page(items, "package_templates", count, offset)

    @router.get("/pcr/package-templates/{template_id}")
    async def get_template(template_id: str) -> dict[str, Any]:
        """One package template."""
        product = engine.products.get(template_id)
        if product is None:
            raise TelnaError(404, f"unknown package template {template_id!r}")
        return template_json(product, product.id in manual)

    @router.post("/pcr/packages", status_code=201)
    async def order(body: OrderIn) -> dict[str, Any]:
        """Create a package from a template on a SIM; it is NOT_ACTIVE (an AUTO one turns
        ACTIVE at once when the SIM has no active package)."""
        template = str(body.package_template)
        if body.time_allowance is not None:
            raise TelnaError(400, "time_allowance overrides are not sold on this account")
        package = engine.order(body.sim, template, None, template not in manual)
        return package_json(package)

    @router.get("/pcr/packages")
    async def list_packages(
        sim: str | None = None,
        package_template: str | None = None,
        status: PackageStatus | None = None,
        count: Count = 100,
        offset: Offset = 0,
    ) -> dict[str, Any]:
        """Packages, oldest first, filtered by SIM, template and status."""
        found = [
            p
            for p in engine.packages(sim)
            if (package_template is None or p.product_id == package_template)
            and (status is None or p.status == status)
        ]
        if sim is not None and engine.list_limit:
            found = found[-engine.list_limit :]  # only the newest (simulators.control)
        return _page([package_json(p) for p in found], "packages", count, offset)

    @router.get("/pcr/packages/{package_id}")
    async def get_package(package_id: str) -> dict[str, Any]:
        """One package."""
        return package_json(engine.package(package_id))

    if activate_route:

        @router.post("/pcr/packages/{package_id}/activate")
        async def activate(package_id: str) -> bool:
            """Request activation; the package turns ACTIVE after the carrier's latency."""
            engine.activate(package_id)
            return True

    @router.post("/pcr/packages/{package_id}/terminate")
    async def terminate(package_id: str) -> bool:
        """Terminate a package at once (idempotent)."""
        engine.terminate(package_id)
        return True

    @router.get("/inventory/sim-registries/{iccid}")
    async def sim_registry(iccid: str) -> dict[str, Any]:
        """One SIM of the inventory."""
        active = any(p.status == "ACTIVE" for p in engine.packages(iccid))
        return {"iccid": iccid, "status": "ACTIVE" if active else "READY"}

    return router
