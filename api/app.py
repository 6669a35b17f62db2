"""The FastAPI application: ``uvicorn api.app:create_app --factory``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

from fastapi import FastAPI
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api import errors
from api.auth import ApiKeys
from api.dashboard import routes as dashboard
from api.dashboard.carrier_lines import CarrierLines
from api.limits import BodyLimitMiddleware
from api.routes import (
    balance_actions,
    balances,
    continuity,
    esimgo_events,
    esims,
    health,
    metrics,
    products,
    spend,
    webhooks,
)
from api.sns import SnsClient
from api.telemetry import Telemetry, TelemetryMiddleware
from config import Settings, get_settings
from models.db import init_db
from temporal_client import TemporalSettingsError, connect

log = logging.getLogger("api")

DESCRIPTION = """\
Operator and service API of eSIM Balance (DESIGN section 7).

Authenticate with `Authorization: Bearer <key>`: an `operator` key may do everything, a
`service` key may enrol (register eSIMs, start balances) and read. Carrier webhooks are
authenticated by the carrier's means instead (Telna's: AWS SNS signatures). Every error is
`{"error": {"code": ..., "message": ...}}`; request bodies are limited to 64 KiB.
"""


class Unconfigured:
    """Stands in for the client while the Temporal settings are unusable: every use is the
    RPCError of an unreachable Temporal, so each route answers as it does then (a 503)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __getattr__(self, name: str) -> NoReturn:
        raise RPCError(self.reason, RPCStatusCode.UNAVAILABLE, b"")


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    """The API app; ``client`` is connected at start-up unless given."""
    settings = settings or get_settings()
    api_keys = ApiKeys.parse(settings.api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        init_db(settings.database_url)
        # Lazily: the API starts (and answers /healthz, reads) while Temporal is down;
        # calls that need Temporal answer 503 until it is back.
        try:
            app.state.client = client or await connect(settings, lazy=True)
        except TemporalSettingsError as error:
            log.error("%s", error)
            app.state.client = Unconfigured(str(error))
        yield
        await app.state.sns.aclose()

    app = FastAPI(
        title="eSIM Balance",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    telemetry = Telemetry()
    app.state.settings = settings
    app.state.api_keys = api_keys
    app.state.telemetry = telemetry
    app.state.sns = SnsClient()
    app.state.carrier_lines = CarrierLines(
        settings.task_queue, settings.dashboard_carrier_cache_seconds
    )
    errors.install(app)
    routers = (
        health,
        metrics,
        esims,
        products,
        balances,
        balance_actions,
        continuity,
        spend,
        webhooks,
        esimgo_events,
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(dashboard.router)
    # The last added runs first: count every request, including those refused as too large.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)
    return app
