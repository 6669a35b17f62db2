"""AWS SNS as an HTTP(S) subscriber sees it: signed envelopes and the subscription handshake.

The envelope, its headers and the string to sign are AWS's documented ones (CARRIERS.md
2.5): ``key\\nvalue\\n`` pairs, a Notification's ``Message, MessageId, Subject`` (if
present) ``, Timestamp, TopicArn, Type``, a SubscriptionConfirmation's ``Message,
MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type``; ``SignatureVersion`` "1"
signs with SHA1withRSA, "2" with SHA256withRSA, base64. The signing certificate is the
simulator's own, self-signed, made when it starts (a new key, so a new file name: a
receiver may keep a certificate by its URL) and served under its own base URL.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from fastapi import APIRouter, Query, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from simulators.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)

SignatureVersion = Literal["1", "2"]
MessageType = Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]

TOPIC_ARN = "arn:aws:sns:eu-west-1:000000000000:telna-webhooks"
USER_AGENT = "Amazon Simple Notification Service Agent"
CONTENT_TYPE = "text/plain; charset=UTF-8"
# Under the control prefix, so no fault hits them, but open like SNS's own endpoints.
PREFIX = "/_sim/sns/"
CERT_PATH = PREFIX + "SimpleNotificationService-{fingerprint}.pem"
CONFIRM_PATH = PREFIX + "confirm"
UNSUBSCRIBE_PATH = PREFIX + "unsubscribe"
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
MAX_HELD = 10_000  # events held for one unconfirmed subscription
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


def timestamp(at: float) -> str:
    """Epoch seconds as SNS writes them: ISO 8601 UTC with milliseconds and a ``Z``."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def string_to_sign(envelope: dict[str, str]) -> bytes:
    """The bytes SNS signs: the type's keys in order, each ``key\\nvalue\\n``; a
    Notification's ``Subject`` only when it has one."""
    keys = NOTIFICATION_KEYS if envelope["Type"] == "Notification" else CONFIRMATION_KEYS
    return "".join(f"{k}\n{envelope[k]}\n" for k in keys if k in envelope).encode()


class Signer:
    """An RSA key and its self-signed certificate, and envelopes signed with them."""

    def __init__(self, version: SignatureVersion = "2") -> None:
        if version not in _HASHES:
            raise ValueError(f"SNS SignatureVersion must be 1 or 2, not {version!r}")
        self.version = version
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.eu-west-1.amazonaws.com")])
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .sign(self._key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        fingerprint = self.certificate.fingerprint(hashes.SHA256()).hex()[:32]
        self.cert_path = CERT_PATH.format(fingerprint=fingerprint)

    def sign(self, envelope: dict[str, str], base_url: str) -> dict[str, str]:
        """``envelope`` with its SignatureVersion, Signature and SigningCertURL."""
        signature = self._key.sign(
            string_to_sign(envelope), padding.PKCS1v15(), _HASHES[self.version]()
        )
        return envelope | {
            "SignatureVersion": self.version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": base_url + self.cert_path,
        }


@dataclass
class Subscription:
    """One endpoint subscribed to the topic; it gets Notifications once ``confirmed``."""

    endpoint: str
    arn: str = field(default_factory=lambda: f"{TOPIC_ARN}:{uuid.uuid4()}")
    token: str = field(default_factory=lambda: uuid.uuid4().hex * 2)
    confirmed: bool = False
    confirmation_sent_at: float | None = None
    held: list[dict[str, Any]] = field(default_factory=list)


def headers(kind: MessageType, message_id: str, subscription: Subscription) -> dict[str, str]:
    """The headers SNS sends with every message; a subscription ARN once there is one."""
    sent = {
        "Content-Type": CONTENT_TYPE,
        "User-Agent": USER_AGENT,
        "x-amz-sns-message-type": kind,
        "x-amz-sns-message-id": message_id,
        "x-amz-sns-topic-arn": TOPIC_ARN,
    }
    if kind == "Notification":
        sent["x-amz-sns-subscription-arn"] = subscription.arn
    return sent


def confirmation(
    subscription: Subscription, signer: Signer, base_url: str, at: float
) -> tuple[bytes, dict[str, str]]:
    """The SubscriptionConfirmation of ``subscription``: body and headers."""
    message_id = str(uuid.uuid4())
    envelope = {
        "Type": "SubscriptionConfirmation",
        "MessageId": message_id,
        "Token": subscription.token,
        "TopicArn": TOPIC_ARN,
        "Message": (
            f"You have chosen to subscribe to the topic {TOPIC_ARN}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": f"{base_url}{CONFIRM_PATH}?Token={subscription.token}",
        "Timestamp": timestamp(at),
    }
    body = json.dumps(signer.sign(envelope, base_url)).encode()
    return body, headers("SubscriptionConfirmation", message_id, subscription)


def notification(
    event: dict[str, Any],
    subscription: Subscription,
    signer: Signer,
    base_url: str,
    at: float,
    *,
    raw: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """One published event for ``subscription``: the signed envelope with the event as its
    ``Message`` string, or with raw delivery the event itself, unsigned."""
    message_id = str(uuid.uuid4())
    message = json.dumps(event, separators=(",", ":"))
    sent = headers("Notification", message_id, subscription)
    if raw:
        return message.encode(), sent | {"x-amz-sns-rawdelivery": "true"}
    envelope = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC_ARN,
        "Message": message,
        "Timestamp": timestamp(at),
    }
    signed = signer.sign(envelope, base_url)
    signed["UnsubscribeURL"] = f"{base_url}{UNSUBSCRIBE_PATH}?SubscriptionArn={subscription.arn}"
    return json.dumps(signed).encode(), sent


class Topic:
    """The carrier's topic with one HTTP subscription per endpoint, delivered as SNS does.

    An endpoint first gets a SubscriptionConfirmation and nothing else until its
    SubscribeURL is visited; what is published meanwhile is held, then delivered. A
    confirmation left unvisited is sent again with the next publication after
    ``resend_seconds``. Until the simulator knows the base URL it is reached at (the one
    SubscribeURL and SigningCertURL name), it asks nothing and holds everything.
    """

    def __init__(
        self,
        dispatcher: WebhookDispatcher,
        signer: Signer,
        clock: Callable[[], float],
        base_url: str | None = None,
        *,
        raw: bool = False,
        credentials: str | None = None,
        resend_seconds: float = 60.0,
    ) -> None:
        self.dispatcher = dispatcher
        self.signer = signer
        self.clock = clock
        self.base_url = base_url.rstrip("/") if base_url else None
        self.raw = raw
        self.resend_seconds = resend_seconds
        self._authorization = (
            {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}
            if credentials
            else {}
        )
        self._subscriptions: dict[str, Subscription] = {}

    def subscribe(self) -> None:
        """Subscribe the current target, if there is one (the handshake starts at once)."""
        url = self.dispatcher.target.url
        if url:
            self._ask(self._subscription(url))

    def publish(self, event: dict[str, Any]) -> None:
        """Deliver ``event`` to the current target, or hold it until it has confirmed."""
        url = self.dispatcher.target.url
        if not url:
            return
        subscription = self._subscription(url)
        if subscription.confirmed:
            self._deliver(subscription, event)
            return
        if len(subscription.held) >= MAX_HELD:
            logger.warning("SNS subscription %s unconfirmed, dropping an event", url)
            subscription.held.pop(0)
        subscription.held.append(event)
        self._ask(subscription)

    def learn(self, base_url: str) -> None:
        """The base URL the simulator is reached at, if it was not given: ask away."""
        if self.base_url is None:
            self.base_url = base_url.rstrip("/")
            for subscription in self._subscriptions.values():
                self._ask(subscription)

    def confirm(self, token: str) -> Subscription | None:
        """The subscription whose token this is, now confirmed, its held events sent."""
        found = next((s for s in self._subscriptions.values() if s.token == token), None)
        if found is not None and not found.confirmed:
            found.confirmed = True
            held, found.held = found.held, []
            for event in held:
                self._deliver(found, event)
        return found

    def unsubscribe(self, arn: str) -> bool:
        """Drop the subscription ``arn``; its endpoint must confirm anew to get more."""
        for url, subscription in list(self._subscriptions.items()):
            if subscription.arn == arn:
                del self._subscriptions[url]
                return True
        return False

    def _subscription(self, url: str) -> Subscription:
        if url not in self._subscriptions:
            self._subscriptions[url] = Subscription(url)
        return self._subscriptions[url]

    def _ask(self, subscription: Subscription) -> None:
        now, sent = self.clock(), subscription.confirmation_sent_at
        if self.base_url is None or subscription.confirmed:
            return
        if sent is not None and now - sent < self.resend_seconds:
            return
        subscription.confirmation_sent_at = now
        body, sent_headers = confirmation(subscription, self.signer, self.base_url, now)
        self.dispatcher.submit(subscription.endpoint, body, sent_headers | self._authorization)

    def _deliver(self, subscription: Subscription, event: dict[str, Any]) -> None:
        assert self.base_url is not None  # known before anything could confirm
        body, sent_headers = notification(
            event, subscription, self.signer, self.base_url, self.clock(), raw=self.raw
        )
        auth = self._authorization if self.raw else {}
        self.dispatcher.submit(subscription.endpoint, body, sent_headers | auth)


def create_sns_router(topic: Topic) -> APIRouter:
    """What SNS serves itself: the signing certificate, SubscribeURL, UnsubscribeURL."""
    router = APIRouter(tags=["sns"])

    @router.get(topic.signer.cert_path)
    async def certificate() -> Response:
        """The certificate that signs this simulator's SNS messages."""
        return Response(topic.signer.pem, media_type="application/x-x509-ca-cert")

    @router.get(CONFIRM_PATH)
    async def confirm(token: Annotated[str, Query(alias="Token", max_length=256)]) -> Response:
        """The SubscribeURL: confirms the subscription the token was sent to."""
        subscription = topic.confirm(token)
        if subscription is None:
            return _xml_error(404, "NotFound", "no pending subscription has this token")
        arn = subscription.arn
        return Response(
            "<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>"
            f"{arn}</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>",
            media_type="text/xml",
        )

    @router.get(UNSUBSCRIBE_PATH)
    async def unsubscribe(
        arn: Annotated[str, Query(alias="SubscriptionArn", max_length=256)],
    ) -> Response:
        """The UnsubscribeURL: ends the subscription."""
        if not topic.unsubscribe(arn):
            return _xml_error(404, "NotFound", "no such subscription")
        return Response("<UnsubscribeResponse/>", media_type="text/xml")

    return router


def _xml_error(status: int, code: str, message: str) -> Response:
    return Response(
        f"<ErrorResponse><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        "</ErrorResponse>",
        status_code=status,
        media_type="text/xml",
    )


class BaseUrlMiddleware:
    """Tells the topic the base URL of the first request served, when none was given:
    the address the server is bound to (``scope["server"]``), never a client's Host."""

    def __init__(self, app: ASGIApp, topic: Topic) -> None:
        self.app = app
        self.topic = topic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.topic.base_url is None and scope.get("server"):
            host, port = scope["server"]
            self.topic.learn(f"{scope['scheme']}://{host}:{port}")
        await self.app(scope, receive, send)
