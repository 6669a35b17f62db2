"""The eSIM Go-like carrier simulator: a FastAPI app over the shared carrier engine.

Run it with ``python -m simulators.esimgo --port 8103 --state-file .data/esimgo.json`` or
``uvicorn simulators.esimgo:create_app_from_settings --factory --port 8103``. The API key
comes from ``ESIMGO__API_KEY`` (no default: the simulator refuses to start without one).
Callbacks go to ``ESIMGO_SIM_CALLBACK_URL`` if that variable is set (empty: none), else to
the product API's eSIM Go endpoint. ``ESIMGO_SIM_STATE_FILE``, ``ESIMGO_SIM_SEED`` and
``ESIMGO_SIM_RATE_LIMIT`` (tokens a second, ``off`` for none) serve the uvicorn factory.
``SIM_CONTROL_TOKEN`` guards ``/_sim`` as in the other simulators.

It speaks what CARRIERS.md section 3 records, under ``/v2.4`` (``/v2.5`` too): the key in
``X-API-Key`` (403 ``{"message": "Forbidden"}``); ``GET /catalogue``,
``GET /catalogue/{name}``, ``POST /orders``, ``GET /inventory``, ``POST /inventory/refund``,
``POST /esims/apply``, ``GET /esims/{iccid}/bundles``, ``GET /esims/{iccid}/bundles/{name}``,
the two revokes (``simulators.esimgo_api``); the rules of orders, applies and revokes
(``simulators.esimgo_account``); the shapes (``simulators.esimgo_views``); the rate limit
(``simulators.esimgo_ratelimit``); the V3 usage callback (``simulators.esimgo_callback``).
Every error is ``{"message"}``: 400 bad request, unknown bundle, a 31st queued bundle;
403 bad key, an ICCID not the organisation's ("not accessible"), no bundles left in the
inventory; 429 over the rate limit; 503 (with ``Retry-After``) during an injected outage
or error. Bundle states: processing, queued, active, depleted, expired, revoked.

Bundles queue on the eSIM (record 4.3): an applied or ordered bundle is ``processing`` for
the activation latency, then ``queued``; the simulated eSIM is always attached, so a
queued bundle starts by itself (state ``active``, ``FirstUse`` once data flows) as soon as
the eSIM has no active bundle with data left; at depletion the next starts at once, with
nothing queued the eSIM is throttled until the bundle's end, then has no service. Up to
30 bundles queue on one eSIM. Ledger (``/_sim/ledger``): ``order`` when a bundle goes
onto an ICCID (an order with ``assign`` and ``iccids``, or an apply; buying into the
inventory is not an entry), with reference null (the API has no place for ours) and
``package_id`` the assignment id; ``activate`` at its start, ``exhaust`` at depletion,
``expire`` at its end, ``cancel``/``deactivate`` when revoked unused/started. An
``order`` entry says what was billed: the bundle's ``price_cents`` and the account's
``currency`` (an applied bundle's, as bought into the inventory).

The simulator's choices where the record is silent [NOT PUBLIC]:
- A bundle's duration is rolling from its start (``endTime`` = start + duration), not a
  UTC day; ``assignmentDateTime``/``startTime``/``endTime`` in whole seconds, truncated,
  as the record's examples (Go's RFC 3339 layout) show them.
- Several queued: the one that would end soonest (shortest duration) first, identical
  ones in assignment order. ``lapsed`` (12 months unused) is never reached.
- Token costs (``esimgo_ratelimit.TOKEN_COSTS``): 1 for reads, 2 for orders, applies,
  revokes and inventory refunds; default limit 10 a second per client IP.
- The callback signature is hex (the webhooks guide) unless set to base64.
- Catalogue: ``{bundles, pageCount, rows, pageSize}``, ``page`` from 1, ``perPage``
  default 50; filters ``description`` (substring) and ``countries`` (ISO codes). Bundle
  ``duration`` is whole days (at least 1); the simulator's own ``durationSeconds`` is the
  exact validity and ``throttleKbps`` the speed after depletion. The compressed bundles
  (``esim_1MB_10S_SIM`` ...) last seconds to an hour, for tests and demos.
- Orders: ``assign`` defaults to false; ``assign: true`` without ``iccids`` is refused
  (400: the simulator holds no stock of new eSIM profiles), so are ``repeat`` and an apply
  without ``iccid``; ``allowReassign`` and ``profileID`` are accepted and change nothing
  (every bundle suits every eSIM); a transaction over the balance is refused (400).
  ``status`` is ``Completed`` (``Validated`` for validate, with ``orderReference`` null);
  ``esims[].matchingId``/``smdpAddress`` are placeholders. Assignment references are
  ``{order or apply reference}-{n}``. An apply answers ``applyReference`` in each item.
  ``startTime`` on apply is checked and ignored: every bundle here has ``autostart``.
  Orders and applies of more than 5 bundles are processed at once (no 503).
- ``GET /inventory`` → ``{bundles: [{name, description, available}]}``;
  ``POST /inventory/refund`` credits the balance → ``{status, runningBalance}``.
- Bundle lists: assignments newest first, ``limit`` of them, grouped under their bundle
  where it first appears; ``GET /esims/{iccid}/bundles/{name}`` answers that bundle
  with its latest assignment; a bundle never applied there is 400.
- Revoke: ``type`` defaults to transaction; refunds only with ``refunds_enabled``
  (default off), for an assignment never started, within 60 days: to the balance with
  ``refundToBalance=true``, else back to the inventory. An assignment can be revoked in
  any state but ended: an active or depleted one ends at once (``revoked``) and the next
  queued starts. Revoking what already ended is 400. The returns process is immediate:
  a revoke that leaves an eSIM with no bundle, if it was never installed (marked through
  ``/_sim/esimgo/installed``, or a bundle of it started or carried data: it attached to a
  network, as only an eSIM on a device does), removes it from the organisation (403 on
  it from then on, for good). An eSIM marked not installed is on no device: it never
  attaches, and its bundles stay queued until it is marked installed.

Control: the shared ``/_sim`` API (``webhook_url`` in ``/_sim/config`` is the callback
URL) plus ``/_sim/esimgo`` (``simulators.esimgo_control``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from simulators import cli
from simulators.control import (
    FaultInjectionMiddleware,
    Faults,
    control_token_from_env,
    create_control_router,
    guard_control,
)
from simulators.core import CarrierEngine, Clock
from simulators.esimgo_account import Account, AccountConfig
from simulators.esimgo_api import VERSIONS, create_esimgo_router
from simulators.esimgo_callback import FIRST_USE_BYTES, Callbacks
from simulators.esimgo_control import create_esimgo_control_router
from simulators.esimgo_ratelimit import RateLimitMiddleware
from simulators.esimgo_views import CURRENCY
from simulators.faults import Refused
from simulators.records import Product
from simulators.runtime import engine_running, load_snapshot
from simulators.settings import esimgo_settings
from simulators.webhooks import WebhookDispatcher, WebhookTarget

logger = logging.getLogger(__name__)

MB, GB, DAY = 1_000_000, 1_000_000_000, 86_400
CATALOGUE = (
    Product("esim_1GB_1D_GB_V2", "eSIM, 1GB, 1 Day, United Kingdom, V2", GB, DAY, 128, 150),
    Product("esim_3GB_1D_GB_V2", "eSIM, 3GB, 1 Day, United Kingdom, V2", 3 * GB, DAY, 128, 350),
    Product("esim_1GB_7D_GB_V2", "eSIM, 1GB, 7 Days, United Kingdom, V2", GB, 7 * DAY, 128, 450),
    Product("esim_1GB_7D_IM_U", "eSIM, 1GB, 7 Days, Isle of Man, U", GB, 7 * DAY, 128, 500),
    # Compressed time, as the other simulators' compressed products: 100 kB a second.
    *(
        Product(
            f"esim_{s // 10}MB_{s}S_SIM",
            f"eSIM, {s // 10}MB, {s} Seconds, SIM",
            s * MB // 10,
            s,
            128,
            1,
        )
        for s in (10, 30, 60, 120, 600, 1800, 3600)
    ),
)
PROCESSING_MESSAGE = "Processing - Please come back later or use the Retry-After (seconds) header"
DEFAULT_RATE_LIMIT = 10


class SimulatorConfigError(ValueError):
    """The simulator cannot start with this configuration."""


def refusal(refused: Refused) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """Injected faults as eSIM Go answers: ``{"message"}`` with ``Retry-After``."""
    message = "Rate limit exceeded" if refused.status == 429 else PROCESSING_MESSAGE
    headers = [(b"retry-after", str(refused.retry_after or 1).encode())]
    return json.dumps({"message": message}).encode(), b"application/json", headers


def create_app(
    api_key: str,
    callback_url: str | None = None,
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
    rate_limit_tokens: int | None = DEFAULT_RATE_LIMIT,
) -> FastAPI:
    """An eSIM Go-like carrier. State lives in ``state_file`` (loaded now, saved while
    running); ``control_token``, if given, guards ``/_sim``; callbacks go to
    ``callback_url`` (None: nowhere until ``/_sim/config`` names one)."""
    if not api_key:
        raise SimulatorConfigError("the eSIM Go simulator needs an API key (ESIMGO__API_KEY)")
    target = WebhookTarget(url=callback_url or None)
    dispatcher = WebhookDispatcher(target, seed=seed, backoff_seconds=webhook_retry_seconds)
    callbacks = Callbacks(dispatcher, api_key)
    path = Path(state_file) if state_file is not None else None
    engine = _load_engine(path, products, clock, seed, callbacks)
    engine.currency = CURRENCY  # the account's: orders answer it, and bill in it
    engine.first_use_bytes = FIRST_USE_BYTES
    if activation_latency is not None:
        engine.set_activation_latency(*activation_latency)
    account = Account(engine, AccountConfig(rate_limit_tokens=rate_limit_tokens))
    callbacks.account = account
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

    app = FastAPI(title="eSIM Go-like carrier simulator", version="2.4", lifespan=lifespan)
    app.state.engine, app.state.faults, app.state.webhooks = engine, faults, dispatcher
    app.state.account = account
    router = create_esimgo_router(account, api_key)
    for version in VERSIONS:
        app.include_router(router, prefix=version)
    app.include_router(create_control_router(engine, faults, dispatcher))
    app.include_router(create_esimgo_control_router(account))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(FaultInjectionMiddleware, faults=faults, refusal=refusal)
    app.add_middleware(RateLimitMiddleware, config=account.config)
    guard_control(app, control_token)
    return app


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    message = str(getattr(exc, "detail", "error"))
    if request.url.path.startswith("/_sim"):
        return JSONResponse({"error": {"code": "http_error", "message": message}}, status)
    return JSONResponse({"message": message}, status)


def _load_engine(
    path: Path | None, products: Sequence[Product], clock: Clock, seed: int | None, sink: Callbacks
) -> CarrierEngine:
    snapshot = load_snapshot(path) if path is not None else None
    if snapshot is None:
        return CarrierEngine(products, clock=clock, seed=seed, sink=sink, new_id=_assignment_id)
    logger.info("eSIM Go simulator state loaded from %s", path)
    return CarrierEngine.from_snapshot(
        snapshot, products, clock=clock, sink=sink, new_id=_assignment_id
    )


def _assignment_id() -> str:
    """Assignment ids are digits, as the record's (``"215009266"``)."""
    return str(100_000_000 + uuid.uuid4().int % 9_900_000_000)


def create_app_from_settings(
    state_file: str | Path | None = None,
    seed: int | None = None,
    callback_url: str | None = None,
) -> FastAPI:
    """The app as configured by the environment (``uvicorn ... --factory``)."""
    settings = esimgo_settings()
    if callback_url is None:
        env_url = os.environ.get("ESIMGO_SIM_CALLBACK_URL")
        callback_url = settings.callback_url if env_url is None else env_url
    if state_file is None:
        state_file = os.environ.get("ESIMGO_SIM_STATE_FILE") or None
    if seed is None and os.environ.get("ESIMGO_SIM_SEED"):
        try:
            seed = int(os.environ["ESIMGO_SIM_SEED"])
        except ValueError as exc:
            raise SimulatorConfigError("ESIMGO_SIM_SEED must be an integer") from exc
    limit_text = os.environ.get("ESIMGO_SIM_RATE_LIMIT", str(DEFAULT_RATE_LIMIT)).strip()
    if limit_text.lower() == "off":
        rate_limit: int | None = None
    elif limit_text.isdigit() and int(limit_text) > 0:
        rate_limit = int(limit_text)
    else:
        raise SimulatorConfigError("ESIMGO_SIM_RATE_LIMIT must be a positive integer or off")
    return create_app(
        api_key=settings.api_key,
        callback_url=callback_url or None,
        state_file=state_file,
        seed=seed,
        control_token=control_token_from_env(),
        rate_limit_tokens=rate_limit,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = cli.parser("esimgo", "eSIM Go-like carrier simulator", "ESIMGO_PORT")
    p.add_argument("--callback-url", help="overrides ESIMGO_SIM_CALLBACK_URL ('' for none)")
    args = p.parse_args(argv)
    return cli.serve(
        p,
        args,
        lambda: create_app_from_settings(args.state_file, args.seed, args.callback_url),
        esimgo_settings().port,
    )


if __name__ == "__main__":
    sys.exit(main())
