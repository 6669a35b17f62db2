"""The Webbing-like carrier simulator: WWS SOAP (ASMX) over the shared carrier engine.

Run it with ``python -m simulators.webbing --port 8101 --state-file .data/webbing.json`` or
``uvicorn simulators.webbing:create_app_from_settings --factory --port 8101``. Credentials
come from ``WEBBING__USERNAME`` / ``WEBBING__PASSWORD`` / ``WEBBING__WSKEY``;
``WEBBING_SIM_STATE_FILE``, ``WEBBING_SIM_SEED`` and ``WEBBING_SIM_USAGE_LAG_SECONDS``
(lag of compressed products) serve the uvicorn factory, which takes no arguments.

It speaks what the public record shows (CARRIERS.md section 1): the envelope in
:mod:`simulators.webbing_soap` (SOAP 1.1, 1.2 accepted; ``<{Method}Request>`` wrapper), the
methods in :mod:`simulators.webbing_service`, the endpoints in :mod:`simulators.webbing_api`,
wire formats in :mod:`simulators.webbing_views`, devices in
:mod:`simulators.webbing_devices`, usage lag in :mod:`simulators.webbing_usage`. Polling
only: no webhooks.

Where the record is silent, this simulator chose (the product's client makes the same
choices, named in one place):

- GetProductsList answers ``Products/ProductRecord[]`` with the fields of
  :func:`simulators.webbing_views.product_record`; a ``ProductID`` is a catalogue id.
- GetServiceDevices records carry ``ProductID`` beside ``ProductName`` (``0`` and an empty
  name without a product); ``DataUsage`` is MB (10^6 bytes) of high-speed data used on the
  current product since it took effect, as last read (usage lag); ``UpdatedAtUtc`` is when
  the product or the status last changed (never with usage), ``StatusDateChange`` when
  StatusID did; times ``MM/dd/yyyy HH:mm:ss.fff`` UTC. Paging defaults to 50 a page, at most
  1000. ResponseCodes other than 0 and 1000 are invented (simulators.webbing_service).
- A device carries one product. ChangeServiceDeviceProduct is a purchase: the new product
  takes effect after the activation latency, the old one serving until that moment (no
  gap: make before break in one instant); a pending change is not visible on the record.
  A change to the product already on the device renews it (a new pass: allowance and
  validity start again). Changes asked for while one is pending take effect in the order
  they were asked for, each after its own latency but never before the one asked for
  before it, so the last asked for is the one that stays. The device's first product moves
  StatusID 2 → 3.
- A product does not end by itself (the record: one product per device, replaced by a
  change; a daily pass is the adapter's to enforce). A pass's high-speed allowance lasts
  until its validity end (or its reset boundary by its ResetRule), or until it is used
  up: then the device stays on the product at its ThrottleKbps (ledger ``exhaust``)
  until a change renews it. So a device with a product always has service.
- SuspendServiceDevice ends the current pass (and withdraws pending changes, which were
  never bought): a suspended device shows no product and has no service, and a change of
  product for it is refused (1005). ActivateServiceDevice gives it StatusID 3 back, with
  no product: a resumed device needs a new product change. A pass's clock is never
  paused, so nothing of it comes back.
- Unreadable calls whose method is named (the SOAPAction, or SOAP 1.2's ``action``)
  answer ``Success=false`` 1000 under that method; calls naming no method of their endpoint
  answer a SOAP Fault (HTTP 500), as ASMX does for an unknown SOAPAction.
- ``/_sim/ledger``: a change is recorded as ``order`` then ``activate`` at the moment it takes
  effect, with reference null (the API has no place for one), and the pass it replaced ends
  there with ``deactivate``; a pass used up or past its window ``exhaust``s, a suspension
  ``deactivate``s. An ``order`` says what was billed: the product's ``Price`` (in USD; no
  record names a currency) as ``price_cents`` and ``currency``.
  ``package_id`` is the simulator's own id for a pass, never on the wire.

The ``/_sim`` control API is the shared one (behind a bearer token with
``SIM_CONTROL_TOKEN`` set: ``simulators.control``), plus ``GET/POST /_sim/usage-lag``
``{compressed_seconds?, real_seconds?}``. Fault injection applies to the SOAP endpoints:
outages and random errors answer 503, lost responses 504, rate limits 429 with
``Retry-After`` (a gateway in front of the service, not a SOAP Fault); a slow commit
(``commit_delay_ms``) delays ChangeServiceDeviceProduct, ActivateServiceDevice and
SuspendServiceDevice (every method not named Get...), never the reads. ``list_limit`` of
``/_sim/config`` changes nothing here: the record lists devices, not passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from simulators import cli
from simulators.control import (
    CONTROL_PREFIX,
    ControlRoute,
    FaultInjectionMiddleware,
    Faults,
    control_token_from_env,
    create_control_router,
    guard_control,
)
from simulators.core import CarrierEngine, Clock
from simulators.records import Product
from simulators.runtime import engine_running, load_snapshot
from simulators.settings import webbing_settings
from simulators.webbing_api import create_webbing_router
from simulators.webbing_service import Credentials, WebbingService
from simulators.webbing_soap import SoapFault, named_method
from simulators.webbing_usage import UsageLag, UsageMeter

logger = logging.getLogger(__name__)

MB, GB, DAY = 1_000_000, 1_000_000_000, 86_400
UTC_MIDNIGHT, LOCAL_MIDNIGHT = "utc_midnight", "local_midnight"
CATALOGUE = (
    Product("1042", "Daily 1 GB", GB, DAY, 128, 150),
    Product("1043", "Daily 3 GB", 3 * GB, DAY, 512, 350),
    Product("1044", "Daily 1 GB, UTC day", GB, DAY, 128, 150, UTC_MIDNIGHT),
    Product("1045", "Daily 1 GB, UTC+8 day", GB, DAY, 128, 150, LOCAL_MIDNIGHT, 480),
    Product("1070", "Weekly 10 GB", 10 * GB, 7 * DAY, 256, 900),
    Product("9010", "Compressed 10 s", MB, 10, 128, 1),
    Product("9030", "Compressed 30 s", 3 * MB, 30, 128, 1),
    Product("9060", "Compressed 60 s", 6 * MB, 60, 128, 1),
    Product("9600", "Compressed 600 s", 60 * MB, 600, 128, 1),
    # A compressed "day" is the validity: these end on multiples of 30 s (UTC+8: shifted
    # by a third of it), so every line of them ends in the same second.
    Product("9110", "Compressed 10 s, UTC day", MB, 10, 128, 1, UTC_MIDNIGHT),
    Product("9130", "Compressed 30 s, UTC day", 3 * MB, 30, 128, 1, UTC_MIDNIGHT),
    Product("9230", "Compressed 30 s, UTC+8 day", 3 * MB, 30, 128, 1, LOCAL_MIDNIGHT, 480),
    # Longer compressed UTC days for the midnight-herd benchmark (bench/herd.py): room to
    # enrol thousands of balances before their lines all end at the same boundary.
    Product("9120", "Compressed 120 s, UTC day", 12 * MB, 120, 128, 1, UTC_MIDNIGHT),
    Product("9160", "Compressed 600 s, UTC day", 60 * MB, 600, 128, 1, UTC_MIDNIGHT),
    Product("9180", "Compressed 1800 s, UTC day", 180 * MB, 1800, 128, 1, UTC_MIDNIGHT),
    Product("9190", "Compressed 3600 s, UTC day", 360 * MB, 3600, 128, 1, UTC_MIDNIGHT),
    # The same days at UTC+8, whose boundary comes a third of a day before UTC's: the
    # benchmark's naive baseline meets its midnight there, not at the product's.
    Product("9220", "Compressed 120 s, UTC+8 day", 12 * MB, 120, 128, 1, LOCAL_MIDNIGHT, 480),
    Product("9260", "Compressed 600 s, UTC+8 day", 60 * MB, 600, 128, 1, LOCAL_MIDNIGHT, 480),
    Product("9280", "Compressed 1800 s, UTC+8 day", 180 * MB, 1800, 128, 1, LOCAL_MIDNIGHT, 480),
    Product("9290", "Compressed 3600 s, UTC+8 day", 360 * MB, 3600, 128, 1, LOCAL_MIDNIGHT, 480),
)

N = TypeVar("N", int, float)


class SimulatorConfigError(ValueError):
    """The simulator cannot start with this configuration."""


def create_app(
    username: str,
    password: str,
    wskey: str,
    state_file: str | Path | None = None,
    seed: int | None = None,
    *,
    clock: Clock = time.time,
    activation_latency: tuple[float, float] | None = None,
    usage_lag: UsageLag | None = None,
    products: Sequence[Product] = CATALOGUE,
    tick_seconds: float = 0.1,
    save_every_seconds: float = 2.0,
    control_token: str | None = None,
) -> FastAPI:
    """A Webbing-like carrier. State lives in ``state_file`` (loaded now, saved while
    running); ``control_token``, if given, guards ``/_sim``."""
    if not (username and password and wskey):
        raise SimulatorConfigError(
            "the Webbing simulator needs credentials "
            "(WEBBING__USERNAME, WEBBING__PASSWORD and WEBBING__WSKEY)"
        )
    path = Path(state_file) if state_file is not None else None
    snapshot = load_snapshot(path) if path is not None else None
    if snapshot is None:
        engine = CarrierEngine(products, clock=clock, seed=seed)
    else:
        logger.info("Webbing simulator state loaded from %s", path)
        engine = CarrierEngine.from_snapshot(snapshot, products, clock=clock)
    if activation_latency is not None:
        engine.set_activation_latency(*activation_latency)
    meter = UsageMeter(engine, usage_lag)
    faults = Faults(seed=seed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with engine_running(
            engine, path, tick_seconds=tick_seconds, save_every_seconds=save_every_seconds
        ):
            task = asyncio.create_task(_read_usage(meter))
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="Webbing-like carrier simulator", version="WWS", lifespan=lifespan)
    app.state.engine, app.state.faults, app.state.meter = engine, faults, meter
    service = WebbingService(engine, meter, Credentials(username, password, wskey))
    app.include_router(create_webbing_router(service))
    app.include_router(create_control_router(engine, faults))
    app.include_router(_usage_lag_router(meter))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(FaultInjectionMiddleware, faults=faults, changes_state=_changes_state)
    guard_control(app, control_token)
    return app


def _changes_state(scope: Scope) -> bool:
    """Every SOAP call is a POST; those that change state are the methods not named Get…
    (a call whose headers name no method counts as one that may)."""
    headers = {name: value.decode("latin-1") for name, value in scope["headers"]}
    try:
        method = named_method(headers.get(b"content-type"), headers.get(b"soapaction"))
    except SoapFault:
        return False  # answered with a fault, nothing done
    return method is None or not method.startswith("Get")


async def _read_usage(meter: UsageMeter) -> None:
    while True:
        await asyncio.sleep(meter.tick_seconds())
        try:
            meter.take_readings()
        except Exception:
            logger.exception("usage readings failed")


def _usage_lag_router(meter: UsageMeter) -> APIRouter:
    router = APIRouter(prefix=CONTROL_PREFIX, tags=["simulator control"], route_class=ControlRoute)

    @router.get("/usage-lag")
    async def get_usage_lag() -> UsageLag:
        """How far reported usage trails traffic, per kind of product."""
        return meter.lag

    @router.post("/usage-lag")
    async def set_usage_lag(body: UsageLag) -> UsageLag:
        """Change the fields given; the others keep their values."""
        meter.lag = meter.lag.model_copy(update=body.model_dump(exclude_unset=True))
        return meter.lag

    return router


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    message = str(getattr(exc, "detail", "error"))
    if request.url.path.startswith("/_sim"):
        return JSONResponse({"error": {"code": "http_error", "message": message}}, status)
    return PlainTextResponse(message, status)


def create_app_from_settings(
    state_file: str | Path | None = None,
    seed: int | None = None,
    usage_lag_seconds: float | None = None,
) -> FastAPI:
    """The app as configured by the environment (``uvicorn ... --factory``)."""
    settings = webbing_settings()
    if state_file is None:
        state_file = os.environ.get("WEBBING_SIM_STATE_FILE") or None
    seed = seed if seed is not None else _env_number("WEBBING_SIM_SEED", int)
    if usage_lag_seconds is None:
        usage_lag_seconds = _env_number("WEBBING_SIM_USAGE_LAG_SECONDS", float)
    lag = (
        UsageLag() if usage_lag_seconds is None else UsageLag(compressed_seconds=usage_lag_seconds)
    )
    return create_app(
        settings.username,
        settings.password,
        settings.wskey,
        state_file=state_file,
        seed=seed,
        usage_lag=lag,
        control_token=control_token_from_env(),
    )


def _env_number(name: str, kind: Callable[[str], N]) -> N | None:
    text = os.environ.get(name)
    if not text:
        return None
    try:
        return kind(text)
    except ValueError as exc:
        raise SimulatorConfigError(f"{name} must be a number, not {text!r}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    p = cli.parser("webbing", "Webbing-like carrier simulator", "WEBBING_PORT")
    p.add_argument("--usage-lag", type=float, help="usage lag of compressed products (s)")
    args = p.parse_args(argv)
    return cli.serve(
        p,
        args,
        lambda: create_app_from_settings(args.state_file, args.seed, args.usage_lag),
        webbing_settings().port,
    )


if __name__ == "__main__":
    sys.exit(main())
