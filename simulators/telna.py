"""The Telna-like carrier simulator: a FastAPI app over the shared carrier engine.

Run it with ``python -m simulators.telna --port 8102 --state-file .data/telna.json`` or
``uvicorn simulators.telna:create_app_from_settings --factory --port 8102``. The API key
and webhook secret come from ``TELNA__API_KEY`` / ``TELNA__WEBHOOK_SECRET``. Webhooks go
to ``TELNA_SIM_WEBHOOK_URL`` if that variable is set (empty: no webhooks), else to the
product API's Telna endpoint. ``TELNA_SIM_STATE_FILE`` and ``TELNA_SIM_SEED`` serve the
uvicorn factory, which takes no arguments. ``SIM_CONTROL_TOKEN`` puts the ``/_sim``
control API behind a bearer token (``simulators.control``).

Webhooks (the field names and HMAC signing are invented, CARRIERS.md): each usage
threshold (50/80/100 %) and each termination is POSTed as ``{event_id, event, timestamp,
eventDetails}``, signed ``Telna-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret,
b"<t>." + body)>``. ``eventDetails.reason`` (EXPIRED/DEACTIVATED/CANCELLED) says why a
package.status event's package ended.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulators import cli
from simulators.control import (
    FaultInjectionMiddleware,
    Faults,
    control_token_from_env,
    create_control_router,
    guard_control,
)
from simulators.core import CarrierEngine, Clock
from simulators.records import Alert, Product
from simulators.runtime import engine_running, load_snapshot
from simulators.settings import telna_settings
from simulators.telna_api import AUTH_SCHEMES, AuthScheme, create_telna_router, ms
from simulators.webhooks import WebhookDispatcher, WebhookTarget

logger = logging.getLogger(__name__)

MB, GB = 1_000_000, 1_000_000_000
UTC_MIDNIGHT, LOCAL_MIDNIGHT = "utc_midnight", "local_midnight"
CATALOGUE = (
    Product("daily-1gb", "Daily 1 GB", 1 * GB, 86_400, 128, 150),
    Product("daily-3gb", "Daily 3 GB", 3 * GB, 86_400, 1000, 350),
    Product("weekly-10gb", "Weekly 10 GB", 10 * GB, 604_800, 512, 900),
    Product("daily-1gb-utc", "Daily 1 GB, UTC day", GB, 86_400, 128, 150, UTC_MIDNIGHT),
    Product("daily-1gb-utc8", "Daily 1 GB, UTC+8 day", GB, 86_400, 128, 150, LOCAL_MIDNIGHT, 480),
    Product("daily-1gb-manual", "Daily 1 GB, started through the API", GB, 86_400, 128, 150),
    Product(
        "compressed-30s-manual", "Compressed 30 s, started through the API", 3 * MB, 30, 128, 1
    ),
    Product("compressed-10s-manual", "Compressed 10 s, started through the API", MB, 10, 128, 1),
    Product("compressed-10s", "Compressed 10 s", 1_000_000, 10, 128, 1),
    Product("compressed-30s", "Compressed 30 s", 3_000_000, 30, 128, 1),
    Product("compressed-60s", "Compressed 60 s", 6_000_000, 60, 128, 1),
    Product("compressed-600s", "Compressed 600 s", 60_000_000, 600, 128, 1),
    # A compressed "day" is the validity: these end on multiples of 30 s (UTC+8: shifted
    # by a third of it), so every line of them ends in the same second.
    Product("compressed-10s-utc", "Compressed 10 s, UTC day", MB, 10, 128, 1, UTC_MIDNIGHT),
    Product("compressed-30s-utc", "Compressed 30 s, UTC day", 3 * MB, 30, 128, 1, UTC_MIDNIGHT),
    Product(
        "compressed-30s-utc8", "Compressed 30 s, UTC+8", 3 * MB, 30, 128, 1, LOCAL_MIDNIGHT, 480
    ),
    # Longer compressed UTC days for the midnight-herd benchmark (bench/herd.py).
    Product("compressed-120s-utc", "Compressed 120 s, UTC day", 12 * MB, 120, 128, 1, UTC_MIDNIGHT),
    Product("compressed-600s-utc", "Compressed 600 s, UTC day", 60 * MB, 600, 128, 1, UTC_MIDNIGHT),
    Product(
        "compressed-1800s-utc", "Compressed 1800 s, UTC day", 180 * MB, 1800, 128, 1, UTC_MIDNIGHT
    ),
    Product(
        "compressed-3600s-utc", "Compressed 3600 s, UTC day", 360 * MB, 3600, 128, 1, UTC_MIDNIGHT
    ),
    # The same days at UTC+8, whose boundary comes a third of a day before UTC's: the
    # benchmark's naive baseline meets its midnight there, not at the product's.
    *(
        Product(
            f"compressed-{day}s-utc8",
            f"Compressed {day} s, UTC+8 day",
            day * MB // 10,
            day,
            128,
            1,
            LOCAL_MIDNIGHT,
            480,
        )
        for day in (120, 600, 1800, 3600)
    ),
)
# Templates started through the API (activation_type MANUAL); every other starts on attach.
MANUAL_TEMPLATES = frozenset({"daily-1gb-manual", "compressed-10s-manual", "compressed-30s-manual"})
_REASONS = {"expire": "EXPIRED", "deactivate": "DEACTIVATED", "cancel": "CANCELLED"}


class SimulatorConfigError(ValueError):
    """The simulator cannot start with this configuration."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Telna-Signature`` header value for one webhook body."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def webhook_event(alert: Alert) -> dict[str, Any]:
    """An engine alert as the Telna-like webhook body."""
    details: dict[str, Any] = {
        "iccid": alert.iccid,
        "package_id": alert.package_id,
        "customer_ref": alert.reference,
        "data_usage": alert.used_bytes,
        "data_usage_allowance": alert.allowance_bytes,
        "data_usage_remaining": max(0, alert.allowance_bytes - alert.used_bytes),
        "status": alert.status,
    }
    if alert.kind == "usage_threshold":
        details["threshold_percent"] = alert.threshold_percent
    elif alert.reason is not None:
        details["reason"] = _REASONS.get(alert.reason, alert.reason.upper())
    return {
        "event_id": str(uuid.uuid4()),
        "event": "usage.threshold" if alert.kind == "usage_threshold" else "package.status",
        "timestamp": ms(alert.at),
        "eventDetails": details,
    }


class RequestIdMiddleware:
    """Echoes the caller's ``Request-ID`` and stamps every response with a ``Reference-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = dict(scope["headers"]).get(b"request-id")

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"reference-id", str(uuid.uuid4()).encode()))
                if request_id is not None:
                    headers.append((b"request-id", request_id))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)


def create_app(
    api_key: str,
    webhook_secret: str,
    webhook_url: str | None = None,
    state_file: str | Path | None = None,
    seed: int | None = None,
    *,
    clock: Clock = time.time,
    activation_latency: tuple[float, float] | None = None,
    products: Sequence[Product] = CATALOGUE,
    tick_seconds: float = 0.1,
    save_every_seconds: float = 2.0,
    webhook_retry_seconds: float = 0.5,
    control_token: str | None = None,
    auth_schemes: frozenset[AuthScheme] = AUTH_SCHEMES,
    activate_route: bool = True,
) -> FastAPI:
    """A Telna-like carrier. State lives in ``state_file`` (loaded now, saved while running);
    ``control_token``, if given, guards ``/_sim``; ``auth_schemes`` and ``activate_route``
    make an account that differs from the client's choices (``create_telna_router``)."""
    if not api_key:
        raise SimulatorConfigError("the Telna simulator needs an API key (TELNA__API_KEY)")
    if webhook_url and not webhook_secret:
        raise SimulatorConfigError(
            "webhooks need a secret (TELNA__WEBHOOK_SECRET); "
            "set TELNA_SIM_WEBHOOK_URL to an empty value to send none"
        )
    target = WebhookTarget(url=webhook_url or None)
    dispatcher = WebhookDispatcher(
        target,
        lambda body: {"Telna-Signature": sign(webhook_secret, body)},
        seed=seed,
        backoff_seconds=webhook_retry_seconds,
    )
    path = Path(state_file) if state_file is not None else None
    engine = _load_engine(
        path, products, clock, seed, lambda a: dispatcher.submit(webhook_event(a))
    )
    if activation_latency is not None:
        engine.set_activation_latency(*activation_latency)
    faults = Faults(seed=seed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dispatcher.start()
        try:
            async with engine_running(
                engine, path, tick_seconds=tick_seconds, save_every_seconds=save_every_seconds
            ):
                yield
        finally:
            await dispatcher.stop()

    app = FastAPI(title="Telna-like carrier simulator", version="2.1", lifespan=lifespan)
    app.state.engine, app.state.faults, app.state.webhooks = engine, faults, dispatcher
    app.include_router(
        create_telna_router(
            engine,
            api_key,
            MANUAL_TEMPLATES,
            auth_schemes=auth_schemes,
            activate_route=activate_route,
        )
    )
    webhooks = dispatcher if webhook_secret else None
    app.include_router(create_control_router(engine, faults, webhooks))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(FaultInjectionMiddleware, faults=faults)
    guard_control(app, control_token)
    return app


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    message = str(getattr(exc, "detail", "error"))
    if request.url.path.startswith("/_sim"):
        return JSONResponse({"error": {"code": "http_error", "message": message}}, status)
    return JSONResponse({"error": message}, status)


def _load_engine(
    path: Path | None,
    products: Sequence[Product],
    clock: Clock,
    seed: int | None,
    sink: Callable[[Alert], None],
) -> CarrierEngine:
    snapshot = load_snapshot(path) if path is not None else None
    if snapshot is None:
        return CarrierEngine(products, clock=clock, seed=seed, sink=sink)
    logger.info("Telna simulator state loaded from %s", path)
    return CarrierEngine.from_snapshot(snapshot, products, clock=clock, sink=sink)


def create_app_from_settings(
    state_file: str | Path | None = None,
    seed: int | None = None,
    webhook_url: str | None = None,
) -> FastAPI:
    """The app as configured by the environment (``uvicorn ... --factory``)."""
    settings = telna_settings()
    if webhook_url is None:
        env_url = os.environ.get("TELNA_SIM_WEBHOOK_URL")
        webhook_url = settings.webhook_url if env_url is None else env_url
    if state_file is None:
        state_file = os.environ.get("TELNA_SIM_STATE_FILE") or None
    if seed is None and os.environ.get("TELNA_SIM_SEED"):
        try:
            seed = int(os.environ["TELNA_SIM_SEED"])
        except ValueError as exc:
            raise SimulatorConfigError("TELNA_SIM_SEED must be an integer") from exc
    return create_app(
        api_key=settings.api_key,
        webhook_secret=settings.webhook_secret,
        webhook_url=webhook_url or None,
        state_file=state_file,
        seed=seed,
        control_token=control_token_from_env(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = cli.parser("telna", "Telna-like carrier simulator", "TELNA_PORT")
    p.add_argument("--webhook-url", help="overrides TELNA_SIM_WEBHOOK_URL ('' for none)")
    args = p.parse_args(argv)
    return cli.serve(
        p,
        args,
        lambda: create_app_from_settings(args.state_file, args.seed, args.webhook_url),
        telna_settings().port,
    )


if __name__ == "__main__":
    sys.exit(main())
