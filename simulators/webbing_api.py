"""The Webbing-like carrier's ASMX endpoints: SOAP calls routed to the service.

``POST`` an envelope to the endpoint of the method (``GET`` lists its methods):

- ``/service/Service.asmx``: GetProductsList
- ``/devices/Devices.asmx``: GetServiceDevices, ChangeServiceDeviceProduct,
  ActivateServiceDevice, SuspendServiceDevice
- ``/usage/Usage.asmx``: GetDeviceUsage
- ``/accounts/Accounts.asmx``: none of the methods served here

A request naming no method of its endpoint (see :mod:`simulators.webbing_soap`) is
answered with a SOAP Fault (HTTP 500) and nothing is done; everything else is HTTP 200
with the method's result, ``Success=false`` included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from simulators.webbing_service import WebbingService
from simulators.webbing_soap import (
    CONTENT_TYPES,
    MAX_REQUEST_BYTES,
    SoapFault,
    answer,
    fault,
    parse_call,
)

ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/service/Service.asmx": ("GetProductsList",),
    "/devices/Devices.asmx": (
        "GetServiceDevices",
        "ChangeServiceDeviceProduct",
        "ActivateServiceDevice",
        "SuspendServiceDevice",
    ),
    "/usage/Usage.asmx": ("GetDeviceUsage",),
    "/accounts/Accounts.asmx": (),
}


def create_webbing_router(service: WebbingService) -> APIRouter:
    """The four ASMX endpoints; a call must name a method of its endpoint."""
    router = APIRouter(include_in_schema=False)
    for path, methods in ENDPOINTS.items():
        router.add_api_route(path, _endpoint(service, path, methods), methods=["POST"])
        router.add_api_route(path, _listing(path, methods), methods=["GET"])
    return router


def _endpoint(
    service: WebbingService, path: str, methods: tuple[str, ...]
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        headers = request.headers
        try:
            call = parse_call(
                await _body(request), headers.get("Content-Type"), headers.get("SOAPAction")
            )
            if call.method not in methods:
                raise SoapFault(f"{path} has no method {call.method}", call.soap_ns)
        except SoapFault as exc:
            return Response(fault(exc), 500, media_type=CONTENT_TYPES[exc.soap_ns])
        body = answer(call, service.handle(call))
        return Response(body, media_type=CONTENT_TYPES[call.soap_ns])

    return endpoint


def _listing(path: str, methods: tuple[str, ...]) -> Callable[[], Any]:
    async def listing() -> PlainTextResponse:
        served = ", ".join(methods) or "none served by this simulator"
        return PlainTextResponse(f"{path}: SOAP methods {served}\n")

    return listing


async def _body(request: Request) -> bytes:
    """The body, cut short once it passes the limit (parse_call refuses it then)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        chunks.append(chunk)
        if size > MAX_REQUEST_BYTES:
            break
    return b"".join(chunks)
