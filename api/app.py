"""The FastAPI application: ``uvicorn api.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from temporalio.client import Client
from temporalio.service import RPCError

from api import errors, telna_events
from api.errors import ApiError
from config import Settings, get_settings
from models.db import init_db
from models.payloads import UsageReport


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    """The API app; ``client`` is connected at start-up unless given."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        init_db(settings.database_url)
        if client is None:
            from worker import connect

            app.state.client = await connect(settings)
        else:
            app.state.client = client
        yield

    app = FastAPI(title="eSIM Balance", version="0.1.0", lifespan=lifespan)
    errors.install(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.post("/v1/carriers/telna/events", status_code=202)
    async def telna_event(request: Request) -> Response:
        """Telna usage/status webhook: signature checked, usage becomes a signal."""
        body = await request.body()
        try:
            telna_events.verify(
                settings.telna.webhook_secret.get_secret_value(),
                request.headers.get("Telna-Signature"),
                body,
            )
        except telna_events.SignatureError as error:
            raise ApiError(401, "bad_signature", str(error)) from None
        try:
            event = telna_events.parse(body)
        except ValueError as error:
            raise ApiError(400, "invalid_event", str(error)) from None
        target = telna_events.balance_line(event)
        if target is not None and event.event == "usage.threshold":
            _, seq = target
            handle = request.app.state.client.get_workflow_handle(
                f"balance-{event.eventDetails.iccid}"
            )
            report = UsageReport(
                seq=seq,
                used_bytes=event.eventDetails.data_usage,
                observed_at=event.observed_at,
                reference=event.eventDetails.customer_ref,
            )
            try:
                await handle.signal("usage_reported", report)
            except RPCError:
                pass  # the balance is closed: usage of its lines no longer matters
        return Response(status_code=202)

    return app
