"""The Telna-like carrier simulator: a FastAPI app over the shared carrier engine.

Run it with ``python -m simulators.telna --port 8102 --state-file .data/telna.json`` or
``uvicorn simulators.telna:create_app_from_settings --factory --port 8102``. The API key
and webhook secret come from ``TELNA__API_KEY`` / ``TELNA__WEBHOOK_SECRET``. Webhooks go
to ``TELNA_SIM_WEBHOOK_URL`` if that variable is set (empty: no webhooks), else to the
product API's Telna endpoint. ``TELNA_SIM_STATE_FILE`` and ``TELNA_SIM_SEED`` serve the
uvicorn factory, which takes no arguments. ``SIM_CONTROL_TOKEN`` puts the ``/_sim``
control API behind a bearer token (``simulators.control``); the SNS endpoints under
``/_sim/sns/`` stay open, as SNS's own are.

Webhooks, as the record has them (CARRIERS.md 2.5, 4.2): Telna's Flex events reach the
subscriber through AWS SNS. ``PACKAGE_DATA_USAGE_ALERT`` when a package's usage reaches
50 and 80 % of its allowance (no 100 % alert is documented, so none is sent);
``PACKAGE_STATUS_CHANGE`` only for terminations ("production only supports package
termination events"), whatever ended the package: expiry, termination through the API,
or its data used up. ``{"eventName", "eventTimestamp": epoch ms, "eventDetails": {"sim":
{"iccid"}, "package": {"id", "packageUsedBytes", "packageTotalBytes", "status":
{"previousValue", "currentValue"}}, "packageTemplate": {"id"}, "inventory": {...}}}``;
status values are the events' words ``ACTIVATED`` and ``TERMINATED``, not the REST
``ACTIVE``. Nothing names our reference: a subscriber knows a package by its id. SNS's
part (envelope, signatures, the subscription handshake, the certificate served at
``/_sim/sns/...pem``) is ``simulators.sns``.

A package's lifecycle is the record's (CARRIERS.md 2.6, 4.2): NOT_ACTIVE → ACTIVE →
TERMINATED, and a package ends TERMINATED when the SIM has used all of its data, as at
its window's end or when terminated through the API. A used-up package does not serve on
at a throttled speed: a package from an AUTO template waiting on the SIM starts at once
(on attach, as the SIM has no active package left), so a pass used up with the next one
bought ahead hands over with no gap; with nothing waiting the SIM has no service
(timeline ``none``) until a package is bought or started. A template's ``throttle_kbps``
is shown but never applied.

The simulator's choices where the record is silent [NOT PUBLIC]:
- A template's ``price_cents`` (a field of the simulator's: the record shows no price) is
  in USD; the ledger's ``order`` entry says what was billed, price and currency.
- The ledger records a package used up as ``exhaust`` and, at the same instant,
  ``expire``: the carrier itself ended it (as at its window's end), and its
  ``terminated_date`` is that moment; its ``PACKAGE_STATUS_CHANGE`` goes out then. A
  package from a template without a data allowance has no data to use up: it is not
  ended for it (it serves at the throttled speed, and the product refuses such a pass).
- ``eventDetails`` holds only the sub-fields named above; ``inventory`` is a constant
  ``{"id", "name"}``; a usage alert's ``package.status`` is ACTIVATED both ways, and a
  termination's ``previousValue`` is ``null`` for a package never activated.
- Wrapped delivery by default (the event JSON as the envelope's ``Message`` string,
  signed, ``SignatureVersion`` "2" unless told "1"); with ``raw_message_delivery`` the
  body is the event itself, unsigned as SNS sends it, and every request carries the
  credentials of the subscription URL: HTTP Basic, user ``telna``, password the webhook
  secret.
- Retries: a message is redelivered with backoff until a 2xx (``simulators.webhooks``),
  the same MessageId each time; on demand it comes twice or late (``/_sim/config``).
- The base URL in SubscribeURL and SigningCertURL is ``public_url`` (``--public-url``,
  ``TELNA_SIM_PUBLIC_URL``), else the address the first request reached it at.
"""

from __future__ import annotations

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

from simulators import cli, sns
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
from simulators.sns import BaseUrlMiddleware, SignatureVersion, Signer, Topic
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
    Product(
        "compressed-60s-manual", "Compressed 60 s, started through the API", 6 * MB, 60, 128, 1
    ),
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
MANUAL_TEMPLATES = frozenset(
    {"daily-1gb-manual", "compressed-10s-manual", "compressed-30s-manual", "compressed-60s-manual"}
)
USAGE_ALERTS = (50, 80)  # percent: the thresholds Telna documents a usage alert for
ACTIVATED, TERMINATED = "ACTIVATED", "TERMINATED"
INVENTORY = {"id": 1, "name": "Simulator inventory"}
RAW_DELIVERY_USER = "telna"


class SimulatorConfigError(ValueError):
    """The simulator cannot start with this configuration."""


def telna_event(alert: Alert) -> dict[str, Any] | None:
    """An engine alert as the Telna event it is published as, if Telna sends one."""
    status: dict[str, str | None]
    if alert.kind == "usage_threshold":
        if alert.threshold_percent not in USAGE_ALERTS:
            return None
        name = "PACKAGE_DATA_USAGE_ALERT"
        status = {"previousValue": ACTIVATED, "currentValue": ACTIVATED}
    else:
        # Only a package that was never activated is cancelled (CarrierEngine.terminate).
        was = None if alert.reason == "cancel" else ACTIVATED
        name = "PACKAGE_STATUS_CHANGE"
        status = {"previousValue": was, "currentValue": TERMINATED}
    return {
        "eventName": name,
        "eventTimestamp": ms(alert.at),
        "eventDetails": {
            "sim": {"iccid": alert.iccid},
            "package": {
                "id": alert.package_id,
                "packageUsedBytes": alert.used_bytes,
                "packageTotalBytes": alert.allowance_bytes,
                "status": status,
            },
            "packageTemplate": {"id": alert.product_id},
            "inventory": INVENTORY,
        },
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
    public_url: str | None = None,
    raw_message_delivery: bool = False,
    signature_version: SignatureVersion = "2",
) -> FastAPI:
    """A Telna-like carrier. State lives in ``state_file`` (loaded now, saved while running);
    ``control_token``, if given, guards ``/_sim``; ``auth_schemes`` and ``activate_route``
    make an account that differs from the client's choices (``create_telna_router``).
    Webhooks go to ``webhook_url`` through SNS as the module docstring says; ``public_url``
    is the simulator's base URL as the subscriber reaches it (None: learned from the first
    request)."""
    if not api_key:
        raise SimulatorConfigError("the Telna simulator needs an API key (TELNA__API_KEY)")
    if raw_message_delivery and not webhook_secret:
        raise SimulatorConfigError(
            "raw message delivery authenticates with the webhook secret (TELNA__WEBHOOK_SECRET)"
        )
    try:
        signer = Signer(signature_version)
    except ValueError as exc:
        raise SimulatorConfigError(str(exc)) from None
    target = WebhookTarget(url=webhook_url or None)
    dispatcher = WebhookDispatcher(target, seed=seed, backoff_seconds=webhook_retry_seconds)
    credentials = f"{RAW_DELIVERY_USER}:{webhook_secret}" if raw_message_delivery else None
    topic = Topic(
        dispatcher, signer, clock, public_url, raw=raw_message_delivery, credentials=credentials
    )

    def publish(alert: Alert) -> None:
        event = telna_event(alert)
        if event is not None:
            topic.publish(event)

    path = Path(state_file) if state_file is not None else None
    engine = _load_engine(path, products, clock, seed, publish)
    if activation_latency is not None:
        engine.set_activation_latency(*activation_latency)
    faults = Faults(seed=seed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dispatcher.start()
        topic.subscribe()
        try:
            async with engine_running(
                engine, path, tick_seconds=tick_seconds, save_every_seconds=save_every_seconds
            ):
                yield
        finally:
            await dispatcher.stop()

    app = FastAPI(title="Telna-like carrier simulator", version="2.1", lifespan=lifespan)
    app.state.engine, app.state.faults, app.state.webhooks = engine, faults, dispatcher
    app.state.sns = topic
    app.include_router(
        create_telna_router(
            engine,
            api_key,
            MANUAL_TEMPLATES,
            auth_schemes=auth_schemes,
            activate_route=activate_route,
        )
    )
    app.include_router(sns.create_sns_router(topic))
    app.include_router(create_control_router(engine, faults, dispatcher))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(FaultInjectionMiddleware, faults=faults)
    app.add_middleware(BaseUrlMiddleware, topic=topic)
    guard_control(app, control_token, open_prefix=sns.PREFIX)
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
        return CarrierEngine(products, clock=clock, seed=seed, sink=sink, used_up_ends=True)
    logger.info("Telna simulator state loaded from %s", path)
    return CarrierEngine.from_snapshot(
        snapshot, products, clock=clock, sink=sink, used_up_ends=True
    )


def create_app_from_settings(
    state_file: str | Path | None = None,
    seed: int | None = None,
    webhook_url: str | None = None,
    public_url: str | None = None,
    raw_message_delivery: bool | None = None,
) -> FastAPI:
    """The app as configured by the environment (``uvicorn ... --factory``): beside the
    variables above, ``TELNA_SIM_PUBLIC_URL``, ``TELNA_SIM_RAW_DELIVERY`` (true/false) and
    ``TELNA_SIM_SIGNATURE_VERSION`` (1 or 2)."""
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
    if public_url is None:
        public_url = os.environ.get("TELNA_SIM_PUBLIC_URL") or None
    if raw_message_delivery is None:
        raw = os.environ.get("TELNA_SIM_RAW_DELIVERY", "false").lower()
        if raw not in ("true", "false"):
            raise SimulatorConfigError("TELNA_SIM_RAW_DELIVERY must be true or false")
        raw_message_delivery = raw == "true"
    version = os.environ.get("TELNA_SIM_SIGNATURE_VERSION", "2")
    if version not in ("1", "2"):
        raise SimulatorConfigError("TELNA_SIM_SIGNATURE_VERSION must be 1 or 2")
    return create_app(
        api_key=settings.api_key,
        webhook_secret=settings.webhook_secret,
        webhook_url=webhook_url or None,
        state_file=state_file,
        seed=seed,
        control_token=control_token_from_env(),
        public_url=public_url,
        raw_message_delivery=raw_message_delivery,
        signature_version="1" if version == "1" else "2",
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = cli.parser("telna", "Telna-like carrier simulator", "TELNA_PORT")
    p.add_argument("--webhook-url", help="overrides TELNA_SIM_WEBHOOK_URL ('' for none)")
    p.add_argument(
        "--public-url", help="base URL subscribers reach this simulator at (SNS certificate)"
    )
    p.add_argument(
        "--raw-delivery",
        action="store_true",
        default=None,
        help="SNS raw message delivery with HTTP Basic credentials",
    )
    args = p.parse_args(argv)
    return cli.serve(
        p,
        args,
        lambda: create_app_from_settings(
            args.state_file, args.seed, args.webhook_url, args.public_url, args.raw_delivery
        ),
        telna_settings().port,
    )


if __name__ == "__main__":
    sys.exit(main())
