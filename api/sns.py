"""AWS SNS messages to an HTTP endpoint: the envelope, its signature, its certificate.

SNS signs every message it wraps (CARRIERS.md 2.5): ``SignatureVersion`` "1" is
SHA1withRSA, "2" SHA256withRSA, over ``key\\nvalue\\n`` pairs in a fixed order, with the
key of the X.509 certificate at ``SigningCertURL``. Anyone can sign a message with a
certificate of their own, so what makes a message SNS's is where its certificate comes
from: it is fetched only from a URL on an allowed origin (``TELNA__SNS_HOSTS``: SNS's
``https://sns.<region>.amazonaws.com``), over TLS, without following redirects, and
kept by its URL (SNS names a new key by a new URL). A SubscribeURL is visited only on
an allowed origin too, so a forged confirmation cannot make us request anything else.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MessageType = Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_KEYS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERTIFICATE_BYTES = 16 * 1024
TIMEOUT_SECONDS = 5.0
CACHED_CERTIFICATES = 32
DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = "[A-Za-z0-9-]+"


class SignatureError(ValueError):
    """The message is not shown to be SNS's: bad signature, certificate or its URL."""


class Unreachable(Exception):
    """An allowed SNS URL did not answer (a network error): worth trying again later."""


class Envelope(BaseModel):
    """The JSON body SNS posts (every field a string, as SNS sends them)."""

    model_config = ConfigDict(populate_by_name=True)

    type: MessageType = Field(alias="Type")
    message_id: str = Field(alias="MessageId", min_length=1, max_length=128)
    topic_arn: str = Field(alias="TopicArn", max_length=256)
    message: str = Field(alias="Message")
    timestamp: str = Field(alias="Timestamp", max_length=64)
    signature_version: str = Field(alias="SignatureVersion", max_length=8)
    signature: str = Field(alias="Signature", max_length=4096)
    signing_cert_url: str = Field(alias="SigningCertURL", max_length=2048)
    subject: str | None = Field(default=None, alias="Subject")
    subscribe_url: str | None = Field(default=None, alias="SubscribeURL", max_length=2048)
    token: str | None = Field(default=None, alias="Token", max_length=2048)
    unsubscribe_url: str | None = Field(default=None, alias="UnsubscribeURL", max_length=2048)


def parse(body: bytes) -> Envelope:
    """The envelope in ``body``; ``ValueError`` with one line if it is not one."""
    try:
        envelope = Envelope.model_validate_json(body)
    except ValidationError as error:
        first: dict[str, Any] = dict(error.errors()[0])
        where = ".".join(map(str, first["loc"])) or "body"
        raise ValueError(f"{where}: {first['msg']}") from None
    if envelope.type != "Notification" and (envelope.subscribe_url is None or not envelope.token):
        raise ValueError(f"a {envelope.type} needs SubscribeURL and Token")
    return envelope


def string_to_sign(envelope: Envelope) -> bytes:
    """What SNS signed: the type's keys in order, ``key\\nvalue\\n``; Subject if present."""
    values = envelope.model_dump(by_alias=True)
    keys = NOTIFICATION_KEYS if envelope.type == "Notification" else CONFIRMATION_KEYS
    return "".join(f"{k}\n{values[k]}\n" for k in keys if values.get(k) is not None).encode()


def verify(envelope: Envelope, certificate: x509.Certificate, now: datetime | None = None) -> None:
    """Raise ``SignatureError`` unless ``certificate``, valid now, signed ``envelope``."""
    algorithm = HASHES.get(envelope.signature_version)
    if algorithm is None:
        raise SignatureError(f"unsupported SignatureVersion {envelope.signature_version!r}")
    try:
        signature = base64.b64decode(envelope.signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("Signature is not base64") from None
    moment = now or datetime.now(UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise SignatureError("signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("signing certificate has no RSA key")
    try:
        key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SignatureError("signature does not match") from None


def allowed(url: str, origins: str) -> bool:
    """Whether ``url`` is on one of ``origins``: comma-separated ``scheme://host[:port]``,
    where ``*`` stands for one DNS label (``https://sns.*.amazonaws.com``). A URL with
    credentials, or on another scheme, host or port, is not."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if parts.username is not None or parts.password is not None or not parts.hostname:
        return False
    return any(
        scheme == parts.scheme and host.fullmatch(parts.hostname) and wanted == port
        for scheme, host, wanted in _origins(origins)
    )


@lru_cache(maxsize=8)
def _origins(origins: str) -> tuple[tuple[str, re.Pattern[str], int | None], ...]:
    found = []
    for origin in filter(None, (o.strip() for o in origins.split(","))):
        parts = urlsplit(origin.replace("*", "wildcard-label"))
        if not parts.hostname:
            continue
        host = re.escape(parts.hostname).replace("wildcard\\-label", _LABEL)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        found.append((parts.scheme, re.compile(host, re.IGNORECASE), port))
    return tuple(found)


class SnsClient:
    """Reaches SNS for the receiver: signing certificates (a few kept by URL) and
    SubscribeURLs, each only on an allowed origin, never following a redirect."""

    def __init__(
        self, client: httpx.AsyncClient | None = None, cached: int = CACHED_CERTIFICATES
    ) -> None:
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)
        self._cached = cached
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()

    async def certificate(self, url: str, origins: str) -> x509.Certificate:
        """The certificate at ``url``; ``SignatureError`` if the URL is not allowed or
        serves none, ``Unreachable`` if it cannot be reached now."""
        if not allowed(url, origins):
            raise SignatureError("SigningCertURL is not on an allowed SNS host")
        if url in self._certificates:
            self._certificates.move_to_end(url)
            return self._certificates[url]
        response = await self._get(url)
        if response.status_code != 200:
            raise SignatureError(f"SigningCertURL answered HTTP {response.status_code}")
        if len(response.content) > MAX_CERTIFICATE_BYTES:
            raise SignatureError("SigningCertURL served more than a certificate")
        try:
            certificate = x509.load_pem_x509_certificate(response.content)
        except ValueError:
            raise SignatureError("SigningCertURL served no X.509 certificate") from None
        self._certificates[url] = certificate
        while len(self._certificates) > self._cached:
            self._certificates.popitem(last=False)
        return certificate

    async def confirm(self, url: str, origins: str) -> None:
        """Visit a SubscribeURL: ``SignatureError`` if it is not allowed, ``Unreachable``
        if it does not answer 2xx."""
        if not allowed(url, origins):
            raise SignatureError("SubscribeURL is not on an allowed SNS host")
        response = await self._get(url)
        if not response.is_success:
            raise Unreachable(f"SubscribeURL answered HTTP {response.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, url: str) -> httpx.Response:
        try:
            return await self._client.get(url, follow_redirects=False)
        except httpx.HTTPError as error:
            host = urlsplit(url).hostname
            raise Unreachable(f"{host} did not answer ({type(error).__name__})") from None
