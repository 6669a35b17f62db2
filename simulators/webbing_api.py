"""The Webbing-like carrier's ASMX endpoints: SOAP 1.1 calls routed to the service.

``POST`` an envelope to the endpoint of the method (``GET`` lists its methods):

- ``/accounts/Accounts.asmx``: GetProductsList
- ``/service/Service.asmx``: AddServiceDeviceProduct, ActivateServiceDeviceProduct,
  DeactivateServiceDeviceProduct, GetServiceDeviceProduct, GetServiceDeviceProducts
- ``/usage/Usage.asmx``: GetOnlineDeviceUsage, GetDeviceUsage
- ``/devices/Devices.asmx``: GetServiceDevice

A call the endpoint cannot read (see :mod:`simulators.webbing_soap`), or a method of
another endpoint, is answered with a SOAP Fault (HTTP 500, ``soap:Client``) and nothing
is done; everything else is HTTP 200 with the method's result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from simulators.webbing_service import WebbingService
from simulators.webbing_soap import (
    CONTENT_TYPE,
    MAX_REQUEST_BYTES,
    SoapFault,
    answer,
    fault,
    parse_call,
)

ENDPOINTS = {
    "/accounts/Accounts.asmx": ("GetProductsList",),
    "/service/Service.asmx": (
        "AddServiceDeviceProduct",
        "ActivateServiceDeviceProduct",
        "DeactivateServiceDeviceProduct",
        "GetServiceDeviceProduct",
        "GetServiceDeviceProducts",
    ),
    "/usage/Usage.asmx": ("GetOnlineDeviceUsage", "GetDeviceUsage"),
    "/devices/Devices.asmx": ("GetServiceDevice",),
}


def create_webbing_router(service: WebbingService) -> APIRouter:
    """The four ASMX endpoints; a call's SOAPAction must name a method of its endpoint."""
    router = APIRouter(include_in_schema=False)
    for path, methods in ENDPOINTS.items():
        router.add_api_route(path, _endpoint(service, path, methods), methods=["POST"])
        router.add_api_route(path, _listing(path, methods), methods=["GET"])
    return router


def _endpoint(
    service: WebbingService, path: str, methods: tuple[str, ...]
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            call = parse_call(await _body(request), request.headers.get("SOAPAction"))
            if call.method not in methods:
                raise SoapFault(f"{path} has no method {call.method}")
        except SoapFault as exc:
            return Response(fault(exc), 500, media_type=CONTENT_TYPE)
        return Response(answer(call.method, service.handle(call)), media_type=CONTENT_TYPE)

    return endpoint


def _listing(path: str, methods: tuple[str, ...]) -> Callable[[], Any]:
    async def listing() -> PlainTextResponse:
        return PlainTextResponse(f"{path}: SOAP 1.1 methods " + ", ".join(methods) + "\n")

    return listing


async def _body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise SoapFault(f"request larger than {MAX_REQUEST_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
