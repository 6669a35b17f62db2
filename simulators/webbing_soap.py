"""SOAP envelopes of the Webbing-like carrier: incoming calls parsed, answers built.

A call is ASMX-style: ``<soap:Body><{Method} xmlns="http://wws.iamwebbing.com/">`` holding
one parameter element, ``<{Method}Request>``, whose children are the fields (nested ones,
``PaginationRequest`` or ``ServiceDeviceIdentifier``, as nested elements); credentials in
``<soap:Header><Credentials><Username/><Password/><WSKey/></Credentials>``. SOAP 1.1 names
the method in ``SOAPAction: http://wws.iamwebbing.com/{Method}`` (quoted or not, required);
SOAP 1.2 (``application/soap+xml``) in the Content-Type's ``action`` parameter, or else by
the body's element. The answer is ``<{Method}Response><{Method}Result>...`` in the same
namespace and the same SOAP version as the call.

Incoming XML is untrusted: it is parsed with defusedxml, DTDs, entity declarations and
external references are refused, and bodies over 64 KiB are not read. A call whose method
is named but that cannot be read (not XML, a DTD, no envelope, another method in the body,
a missing or misnamed ``{Method}Request``) is a :class:`SoapCall` with a ``problem``, which
the service answers as Webbing answers a malformed request: ``Success=false``,
``ResponseCode`` 1000. A request that names no method at all raises :class:`SoapFault`,
answered as ASMX answers an unknown SOAPAction: HTTP 500 with a ``soap:Fault``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
WWS_NS = "http://wws.iamwebbing.com/"
MAX_REQUEST_BYTES = 64 * 1024
CONTENT_TYPES = {
    SOAP11_NS: "text/xml; charset=utf-8",
    SOAP12_NS: "application/soap+xml; charset=utf-8",
}

Params = dict[str, Any]  # leaf element → str (stripped text), nested element → Params


class SoapFault(Exception):
    """The request names no method this endpoint can answer for; nothing was done."""

    def __init__(self, message: str, soap_ns: str = SOAP11_NS) -> None:
        super().__init__(message)
        self.message, self.soap_ns = message, soap_ns


@dataclass(frozen=True)
class SoapCall:
    """One call: the fields of its ``{Method}Request``, or the ``problem`` that kept them
    from being read."""

    method: str
    soap_ns: str
    credentials: dict[str, str] = field(default_factory=dict)
    params: Params = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class Many:
    """A list field: a container element holding one ``item`` element per row."""

    item: str
    rows: Sequence[Mapping[str, Any]]


class _Unreadable(Exception):
    pass


def soap_version(content_type: str | None) -> str:
    """The envelope namespace a request's Content-Type announces (SOAP 1.1 unless 1.2)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return SOAP12_NS if media == "application/soap+xml" else SOAP11_NS


def named_method(content_type: str | None, soap_action: str | None) -> str | None:
    """The method a request's headers name, if any; raises SoapFault for an action that
    is not one of this service's."""
    soap_ns = soap_version(content_type)
    action = soap_action
    if soap_ns == SOAP12_NS:
        action = None
        for param in (content_type or "").split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "action":
                action = value
    action = (action or "").strip().strip('"')
    if not action:
        return None
    method = action.removeprefix(WWS_NS)
    if method == action or not method or "/" in method:
        raise SoapFault(f"Server did not recognize the value of SOAPAction: {action}", soap_ns)
    return method


def parse_call(body: bytes, content_type: str | None, soap_action: str | None) -> SoapCall:
    """The call in a request; raises SoapFault if it names no method."""
    soap_ns = soap_version(content_type)
    method = named_method(content_type, soap_action)
    if method is None and soap_ns == SOAP11_NS:
        raise SoapFault("Server did not recognize the value of HTTP Header SOAPAction: ", soap_ns)
    try:
        root = _root(body, soap_ns)
        call = _call_element(root, soap_ns)
        in_body = _split(call.tag)[1]
        method = method or in_body
        if in_body != method:
            raise _Unreadable(f"the body holds {in_body}, not {method}")
        wrapper = _wrapper(call, method)
    except _Unreadable as exc:
        if method is None:
            raise SoapFault(f"no method named: {exc}", soap_ns) from exc
        return SoapCall(method, soap_ns, problem=str(exc))
    header = root.find(f"{{{soap_ns}}}Header")
    found = header.find(f"{{{WWS_NS}}}Credentials") if header is not None else None
    given = _fields(found) if found is not None else {}
    credentials = {k: v for k, v in given.items() if isinstance(v, str)}
    return SoapCall(method, soap_ns, credentials, _fields(wrapper))


def answer(call: SoapCall, result: Mapping[str, Any]) -> bytes:
    """The response envelope of one call: ``{Method}Response/{Method}Result``."""
    method = call.method
    inner = f"<{method}Result>{_content(result)}</{method}Result>"
    return _envelope(f'<{method}Response xmlns="{WWS_NS}">{inner}</{method}Response>', call.soap_ns)


def fault(error: SoapFault) -> bytes:
    message = escape(error.message)
    if error.soap_ns == SOAP12_NS:
        detail = (
            "<soap:Code><soap:Value>soap:Sender</soap:Value></soap:Code>"
            f'<soap:Reason><soap:Text xml:lang="en">{message}</soap:Text></soap:Reason>'
        )
    else:
        detail = f"<faultcode>soap:Client</faultcode><faultstring>{message}</faultstring>"
    return _envelope(f"<soap:Fault>{detail}</soap:Fault>", error.soap_ns)


def _root(body: bytes, soap_ns: str) -> Element:
    if len(body) > MAX_REQUEST_BYTES:
        raise _Unreadable(f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        root: Element = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise _Unreadable(f"unsafe XML refused ({type(exc).__name__})") from exc
    except ParseError as exc:
        raise _Unreadable(f"malformed XML: {exc}") from exc
    if root.tag != f"{{{soap_ns}}}Envelope":
        raise _Unreadable("not a SOAP envelope of the version the Content-Type names")
    return root


def _call_element(root: Element, soap_ns: str) -> Element:
    body = root.find(f"{{{soap_ns}}}Body")
    if body is None or len(body) != 1:
        raise _Unreadable("the SOAP Body must hold exactly one call")
    namespace, method = _split(body[0].tag)
    if namespace != WWS_NS:
        raise _Unreadable(f"{method} is not in the namespace {WWS_NS}")
    return body[0]


def _wrapper(call: Element, method: str) -> Element:
    name = f"{method}Request"
    found = [child for child in call if _split(child.tag)[1] == name]
    if len(found) != 1:
        raise _Unreadable(f"{method} takes one {name} element")
    return found[0]


def _envelope(content: str, soap_ns: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{soap_ns}"><soap:Body>{content}</soap:Body></soap:Envelope>'
    ).encode()


def _content(fields: Mapping[str, Any]) -> str:
    """Child elements of a record; None fields are left out, as ASMX omits nulls."""
    parts: list[str] = []
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, Many):
            rows = "".join(f"<{value.item}>{_content(row)}</{value.item}>" for row in value.rows)
            parts.append(f"<{name}>{rows}</{name}>")
        elif isinstance(value, Mapping):
            parts.append(f"<{name}>{_content(value)}</{name}>")
        elif isinstance(value, bool):
            parts.append(f"<{name}>{'true' if value else 'false'}</{name}>")
        else:
            parts.append(f"<{name}>{escape(str(value))}</{name}>")
    return "".join(parts)


def _fields(element: Element) -> Params:
    """Child elements by local name: text for leaves, nested fields otherwise."""
    fields: Params = {}
    for child in element:
        name = _split(child.tag)[1]
        fields[name] = _fields(child) if len(child) else (child.text or "").strip()
    return fields


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag
