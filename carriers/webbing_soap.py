"""SOAP 1.1 envelopes for the Webbing client: calls built, answers read as untrusted input.

Answers are parsed with defusedxml with DTDs forbidden, so entity expansion ("billion
laughs"), external entities and any DTD are refused before anything is expanded or
fetched; a truncated or foreign document is refused too. Each refusal is an
:class:`UnreadableAnswer` saying what was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WWS_NS = "http://wws.iamwebbing.com/"
CONTENT_TYPE = "text/xml; charset=utf-8"


class UnreadableAnswer(Exception):
    """The answer is not a SOAP 1.1 envelope this client can safely read."""


@dataclass(frozen=True)
class SoapFault:
    """A ``soap:Fault``: ``code`` is the faultcode as sent (e.g. ``soap:Client``)."""

    code: str
    message: str

    @property
    def client_error(self) -> bool:
        """The service refused the call as malformed: it was not carried out."""
        return self.code.rpartition(":")[2] == "Client"


def call_envelope(method: str, credentials: Mapping[str, str], params: Mapping[str, Any]) -> bytes:
    """``<soap:Envelope>`` with the credentials header and one ASMX-style call, its
    parameters wrapped in the ``<Method>Request`` element the service's WSDL names."""
    header = f'<Credentials xmlns="{WWS_NS}">{_content(credentials)}</Credentials>'
    wrapped = _content({f"{method}Request": params})
    call = f'<{method} xmlns="{WWS_NS}">{wrapped}</{method}>'
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Header>{header}</soap:Header>'
        f"<soap:Body>{call}</soap:Body></soap:Envelope>"
    ).encode()


def read_answer(body: bytes, method: str) -> Element | SoapFault:
    """The ``{method}Result`` element of an answer, or the Fault it carries."""
    try:
        root: Element = fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise UnreadableAnswer(f"unsafe XML refused ({type(exc).__name__})") from exc
    except ParseError as exc:
        raise UnreadableAnswer(f"malformed XML ({exc})") from exc
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise UnreadableAnswer("not a SOAP 1.1 envelope")
    soap_body = root.find(f"{{{SOAP_NS}}}Body")
    if soap_body is None:
        raise UnreadableAnswer("no SOAP Body")
    found = soap_body.find(f"{{{SOAP_NS}}}Fault")
    if found is not None:
        detail = fields(found)
        return SoapFault(detail.get("faultcode", ""), detail.get("faultstring", ""))
    result = soap_body.find(f"{{{WWS_NS}}}{method}Response/{{{WWS_NS}}}{method}Result")
    if result is None:
        raise UnreadableAnswer(f"no {method}Result in the answer")
    return result


def fields(element: Element) -> dict[str, str]:
    """The leaf children of a record by local name, text stripped."""
    return {local_name(c.tag): (c.text or "").strip() for c in element if not len(c)}


def child(element: Element, name: str) -> Element:
    """The child record ``name``; raises KeyError if absent."""
    for c in element:
        if local_name(c.tag) == name:
            return c
    raise KeyError(name)


def rows(element: Element, container: str, item: str) -> list[dict[str, str]]:
    """The records of a list field; a missing container is an empty list."""
    try:
        found = child(element, container)
    except KeyError:
        return []
    return [fields(c) for c in found if local_name(c.tag) == item]


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def _content(values: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for name, value in values.items():
        if value is None:
            continue
        inner = _content(value) if isinstance(value, Mapping) else escape(str(value))
        parts.append(f"<{name}>{inner}</{name}>")
    return "".join(parts)
