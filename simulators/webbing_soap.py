"""SOAP 1.1 envelopes of the Webbing-like carrier: incoming calls parsed, answers built.

A call is ASMX-style: ``<soap:Body><{Method} xmlns="http://wws.iamwebbing.com/">`` with
the parameters as child elements (``PaginationRequest`` nests ``PageSize``/``PageNumber``),
credentials in ``<soap:Header><Credentials><Username/><Password/><WSKey/></Credentials>``,
and the header ``SOAPAction: http://wws.iamwebbing.com/{Method}`` (quoted or not). The
answer is ``<{Method}Response><{Method}Result>...`` in the same namespace.

Incoming XML is untrusted: it is parsed with defusedxml, DTDs, entity declarations and
external references are refused, and bodies over 64 KiB are not read. Anything that is
not such a call raises :class:`SoapFault`, answered as SOAP 1.1 prescribes: HTTP 500 with
a ``soap:Fault`` whose ``faultcode`` is ``soap:Client``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WWS_NS = "http://wws.iamwebbing.com/"
MAX_REQUEST_BYTES = 64 * 1024
CONTENT_TYPE = "text/xml; charset=utf-8"

Params = dict[str, Any]  # leaf element → str (stripped text), nested element → Params


class SoapFault(Exception):
    """The request is not a call the service can read; nothing was done."""

    def __init__(self, message: str, code: str = "soap:Client") -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class SoapCall:
    method: str
    credentials: dict[str, str]
    params: Params


@dataclass(frozen=True)
class Many:
    """A list field: a container element holding one ``item`` element per row."""

    item: str
    rows: Sequence[Mapping[str, Any]]


def parse_call(body: bytes, soap_action: str | None) -> SoapCall:
    """The call in a request body; raises SoapFault for anything else."""
    if len(body) > MAX_REQUEST_BYTES:
        raise SoapFault(f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        root: Element = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise SoapFault(f"unsafe XML refused ({type(exc).__name__})") from exc
    except ParseError as exc:
        raise SoapFault(f"malformed XML: {exc}") from exc
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise SoapFault("not a SOAP 1.1 envelope")
    body_element = root.find(f"{{{SOAP_NS}}}Body")
    if body_element is None or len(body_element) != 1:
        raise SoapFault("the SOAP Body must hold exactly one call")
    call = body_element[0]
    namespace, method = _split(call.tag)
    if namespace != WWS_NS:
        raise SoapFault(f"{method} is not in the namespace {WWS_NS}")
    action = (soap_action or "").strip().strip('"')
    if action != WWS_NS + method:
        raise SoapFault(f"SOAPAction {action!r} does not match the call {method}")
    header = root.find(f"{{{SOAP_NS}}}Header")
    found = header.find(f"{{{WWS_NS}}}Credentials") if header is not None else None
    given = _fields(found) if found is not None else {}
    credentials = {k: v for k, v in given.items() if isinstance(v, str)}
    return SoapCall(method, credentials, _fields(call))


def answer(method: str, result: Mapping[str, Any]) -> bytes:
    """The response envelope of one call: ``{Method}Response/{Method}Result``."""
    inner = f"<{method}Result>{_content(result)}</{method}Result>"
    return _envelope(f'<{method}Response xmlns="{WWS_NS}">{inner}</{method}Response>')


def fault(error: SoapFault) -> bytes:
    detail = f"<faultcode>{escape(error.code)}</faultcode><faultstring>{escape(error.message)}"
    return _envelope(f"<soap:Fault>{detail}</faultstring></soap:Fault>")


def _envelope(content: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>{content}</soap:Body></soap:Envelope>'
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
