"""The ``/_sim`` control API shared by the simulators (DESIGN section 6).

``create_control_router(engine, faults, webhooks)`` gives an APIRouter; the app adds
:class:`FaultInjectionMiddleware` (re-exported here) with the same ``faults``. Times are
ISO 8601 UTC; errors are ``{"error": {"code", "message"}}`` (422 for bad bodies).

Beyond DESIGN: ``GET/POST /_sim/config`` (activation latency of real products, webhook
target, duplicate rate and random delay, and the deliveries so far) and
``GET /_sim/packages?iccid=`` (the carrier's packages, for debugging).

The control API adds eSIMs, traffic and faults at will, so a simulator reachable by
others guards it: with ``SIM_CONTROL_TOKEN`` set (a setting of the simulators, not of the
product), every ``/_sim`` request needs ``Authorization: Bearer <token>`` and is answered
401 without it. Unset, it is open, as ``make run`` and the tests use it on 127.0.0.1.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from simulators.core import CarrierEngine
from simulators.errors import SimulationError, UnknownSim
from simulators.faults import FaultInjectionMiddleware, Faults, FaultSettings
from simulators.identifiers import InvalidIccid, validate_iccid
from simulators.records import Package
from simulators.webhooks import WebhookDispatcher

__all__ = [
    "CONTROL_PREFIX",
    "CONTROL_TOKEN_ENV",
    "FaultInjectionMiddleware",
    "Faults",
    "control_token_from_env",
    "create_control_router",
    "guard_control",
    "iso",
]

CONTROL_PREFIX = "/_sim"
CONTROL_TOKEN_ENV = "SIM_CONTROL_TOKEN"


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with a ``Z``."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EsimsIn(_Body):
    iccids: list[str] = Field(min_length=1)

    @field_validator("iccids")
    @classmethod
    def _valid(cls, iccids: list[str]) -> list[str]:
        for iccid in iccids:
            try:
                validate_iccid(iccid)
            except InvalidIccid as exc:
                raise ValueError(f"{iccid!r}: {exc}") from exc
        return iccids


class TrafficIn(_Body):
    iccid: str | None = None
    bytes_per_second: float = Field(ge=0)


class ConfigIn(_Body):
    activation_latency_min_seconds: float | None = Field(default=None, ge=0)
    activation_latency_max_seconds: float | None = Field(default=None, ge=0)
    webhook_url: str | None = None
    webhook_duplicate_rate: float | None = Field(default=None, ge=0, le=1)
    webhook_delay_seconds: float | None = Field(default=None, ge=0, le=300)
    list_limit: int | None = Field(default=None, ge=0)


class _ControlError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class ControlRoute(APIRoute):
    """Turns validation and engine errors into the control API's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                message = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
                return _error(422, "invalid_request", message)
            except UnknownSim as exc:
                return _error(404, "unknown_sim", str(exc))
            except SimulationError as exc:
                return _error(409, "conflict", str(exc))
            except _ControlError as exc:
                return _error(exc.status, exc.code, exc.message)

        return guarded


def package_view(p: Package) -> dict[str, Any]:
    """A package in the control API's generic shape."""
    return {
        "id": p.id,
        "iccid": p.iccid,
        "product_id": p.product_id,
        "reference": p.reference,
        "status": p.status,
        "ordered_at": iso(p.ordered_at),
        "activation_requested_at": iso(p.activation_requested_at),
        "activated_at": iso(p.activated_at),
        "expires_at": iso(p.expires_at),
        "terminated_at": iso(p.terminated_at),
        "used_bytes": int(p.used_bytes),
        "allowance_bytes": p.allowance_bytes,
    }


def control_token_from_env() -> str | None:
    """The token ``/_sim`` requests need (``SIM_CONTROL_TOKEN``), or None: open."""
    return os.environ.get(CONTROL_TOKEN_ENV) or None


def guard_control(app: FastAPI, token: str | None, open_prefix: str | None = None) -> None:
    """Put ``app``'s control API behind ``token``; None leaves it open. Paths under
    ``open_prefix`` stay open: what the carrier serves anyone (its SNS certificate).

    Call it after every other middleware is added: it must be the outermost, so that no
    ``/_sim`` request, a route's or an unknown path's, reaches anything before it."""
    if token:
        app.add_middleware(ControlTokenMiddleware, token=token, open_prefix=open_prefix)


class ControlTokenMiddleware:
    """Answers 401 to any request under ``/_sim`` without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str, open_prefix: str | None = None) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._open = open_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The prefix as fault injection exempts it (and routing matches it), so a path the
        # router would serve as control is never let through as something else.
        path = scope["path"] if scope["type"] == "http" else ""
        if path.startswith(CONTROL_PREFIX) and not (self._open and path.startswith(self._open)):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                message = f"the control API needs Authorization: Bearer <{CONTROL_TOKEN_ENV}>"
                refusal = _error(401, "unauthorized", message)
                refusal.headers["WWW-Authenticate"] = "Bearer"
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_control_router(
    engine: CarrierEngine, faults: Faults, webhooks: WebhookDispatcher | None = None
) -> APIRouter:
    """The ``/_sim`` routes over one engine; ``webhooks`` None means a polling-only carrier."""
    router = APIRouter(prefix=CONTROL_PREFIX, tags=["simulator control"], route_class=ControlRoute)

    @router.post("/esims")
    async def add_esims(body: EsimsIn) -> dict[str, int]:
        """Add ICCIDs to the carrier's inventory (idempotent)."""
        return {"added": engine.add_esims(body.iccids)}

    @router.post("/traffic")
    async def set_traffic(body: TrafficIn) -> dict[str, Any]:
        """Set device traffic of one ICCID, or of all (now and later) if none named."""
        engine.set_traffic(body.bytes_per_second, body.iccid)
        return {"iccid": body.iccid, "bytes_per_second": body.bytes_per_second}

    @router.post("/faults")
    async def set_faults(body: FaultSettings) -> dict[str, object]:
        """Replace the faults in force; ``{}`` clears them."""
        faults.configure(body)
        return faults.report()

    @router.get("/faults")
    async def get_faults() -> dict[str, object]:
        """Faults in force and how many of each kind were injected so far."""
        return faults.report()

    @router.get("/ledger")
    async def ledger(iccid: str | None = None) -> dict[str, Any]:
        """Every order (with the price billed for it), activation, deactivation, expiry,
        exhaustion and cancellation."""
        entries = [
            {
                "at": iso(e.at),
                "action": e.action,
                "iccid": e.iccid,
                "package_id": e.package_id,
                "reference": e.reference,
                "product_id": e.product_id,
                # An order's price, what the carrier bills for it; null on other actions.
                "price_cents": e.price_cents,
                "currency": e.currency,
            }
            for e in engine.ledger(iccid)
        ]
        return {"entries": entries}

    @router.get("/timeline/{iccid}")
    async def timeline(iccid: str) -> dict[str, Any]:
        """The carrier's truth: high_speed / throttled / none intervals."""
        intervals = engine.timeline(iccid)
        return {
            "iccid": iccid,
            "intervals": [
                {"state": i.state, "start": iso(i.start), "end": iso(i.end)} for i in intervals
            ],
        }

    @router.get("/products")
    async def products() -> dict[str, Any]:
        """The catalogue, in the carrier's own product ids."""
        return {
            "products": [
                {
                    "id": p.id,
                    "name": p.name,
                    "allowance_bytes": p.allowance_bytes,
                    "validity_seconds": p.validity_seconds,
                    "reset": p.reset,
                    "reset_utc_offset_minutes": p.reset_utc_offset_minutes,
                    "throttle_kbps": p.throttle_kbps,
                    "price_cents": p.price_cents,
                }
                for p in engine.products.values()
            ]
        }

    @router.get("/packages")
    async def packages(iccid: str | None = None) -> dict[str, Any]:
        """The carrier's packages (all, or one ICCID's), for debugging."""
        return {"packages": [package_view(p) for p in engine.packages(iccid)]}

    def config_view() -> dict[str, Any]:
        low, high = engine.activation_latency
        return {
            "activation_latency_min_seconds": low,
            "activation_latency_max_seconds": high,
            "webhook_url": webhooks.target.url if webhooks else None,
            "webhook_duplicate_rate": webhooks.target.duplicate_rate if webhooks else None,
            "webhook_delay_seconds": webhooks.target.delay_seconds if webhooks else None,
            "webhooks": webhooks.counts() if webhooks else None,
            "list_limit": engine.list_limit,
        }

    @router.get("/config")
    async def get_config() -> dict[str, Any]:
        """Activation latency of real products, the webhook target, and how many of an
        ICCID's newest packages its list shows (``list_limit``; null: all)."""
        return config_view()

    @router.post("/config")
    async def set_config(body: ConfigIn) -> dict[str, Any]:
        """Change the fields given; the others keep their values."""
        given = body.model_fields_set
        low, high = engine.activation_latency
        if body.activation_latency_min_seconds is not None:
            low = body.activation_latency_min_seconds
        if body.activation_latency_max_seconds is not None:
            high = body.activation_latency_max_seconds
        if low > high:
            raise _ControlError(400, "invalid_request", "activation latency min exceeds max")
        hooks = {"webhook_url", "webhook_duplicate_rate", "webhook_delay_seconds"}
        if given & hooks and webhooks is None:
            raise _ControlError(400, "unsupported", "webhooks are not available here")
        engine.set_activation_latency(low, high)
        if "list_limit" in given:
            engine.list_limit = body.list_limit or None
        if webhooks is not None:
            if "webhook_url" in given:
                webhooks.target.url = body.webhook_url or None
            if body.webhook_duplicate_rate is not None:
                webhooks.target.duplicate_rate = body.webhook_duplicate_rate
            if body.webhook_delay_seconds is not None:
                webhooks.target.delay_seconds = body.webhook_delay_seconds
        return config_view()

    return router
