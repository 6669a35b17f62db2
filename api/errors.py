"""One error shape everywhere: ``{"error": {"code": ..., "message": ...}}``.

Routes raise :class:`ApiError`; validation errors, unknown paths and methods, Temporal
being unreachable and unexpected exceptions are all turned into the same shape here.
Nothing from a stack trace reaches a client; unexpected errors are logged server-side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

log = logging.getLogger("api")

MAX_MESSAGE = 300
# How a lazily connected Temporal client reports a server it cannot reach.
TEMPORAL_CONNECT_FAILED = "Failed client connect"
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}
DESCRIPTIONS = {
    400: "Malformed request (e.g. a body that is not JSON)",
    401: "Missing or wrong credentials (API key or webhook signature)",
    403: "The API key's role may not do this",
    404: "No such resource",
    409: "Conflicts with the resource's state or an earlier request",
    413: "Request body larger than 64 KiB",
    422: "Invalid input",
    429: "Too many resumes or rotations (per balance, per key), or messages; see Retry-After",
    502: "A URL the request named (a carrier's SubscribeURL) did not answer; try again",
    503: "Temporal (for a webhook: SNS) is unreachable; nothing was changed, try again",
    504: "Temporal did not answer in time; the change may still happen",
}


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    """Every error response."""

    error: ErrorBody


class ApiError(Exception):
    """An error a route raises on purpose; becomes a JSON error response."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {s: {"model": ErrorResponse, "description": DESCRIPTIONS[s]} for s in statuses}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message[:MAX_MESSAGE]}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    """(status, code, message) for the first problem of a validation error."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return 400, "invalid_json", "body is not valid JSON"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return 422, "invalid_request", f"{where}: {message}"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RPCError)
    async def _temporal(request: Request, exc: RPCError) -> JSONResponse:
        log.warning("Temporal call failed on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "temporal_unavailable", "Temporal is unreachable")

    @app.exception_handler(RuntimeError)
    async def _runtime(request: Request, exc: RuntimeError) -> JSONResponse:
        if not str(exc).startswith(TEMPORAL_CONNECT_FAILED):
            raise exc  # on to the handler of unexpected errors
        log.warning("Temporal unreachable on %s %s", request.method, request.url.path)
        return error_response(503, "temporal_unavailable", "Temporal is unreachable")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error")
