"""SNS signatures and the hosts they are trusted from, without a server: the simulator's
signer on one side, the API's verifier on the other."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509

from api import sns
from simulators import sns as sim_sns

BASE = "https://sns.eu-west-1.amazonaws.com"
ORIGINS = "https://sns.*.amazonaws.com"
SIGNERS = {version: sim_sns.Signer(version) for version in ("1", "2")}
CERTIFICATE = {v: x509.load_pem_x509_certificate(s.pem) for v, s in SIGNERS.items()}


def _notification(version: sim_sns.SignatureVersion = "2", **extra: str) -> sns.Envelope:
    subscription = sim_sns.Subscription("https://example.test/events")
    body, _ = sim_sns.notification({"eventName": "X"}, subscription, SIGNERS[version], BASE, 0.0)
    return sns.parse(json.dumps(json.loads(body) | extra).encode())


def test_version_1_and_2_signatures_verify() -> None:
    for version in ("1", "2"):
        envelope = _notification(version)  # type: ignore[arg-type]
        assert envelope.signature_version == version
        sns.verify(envelope, CERTIFICATE[version])


def test_a_subscription_confirmation_verifies_over_its_own_keys() -> None:
    subscription = sim_sns.Subscription("https://example.test/events")
    body, headers = sim_sns.confirmation(subscription, SIGNERS["2"], BASE, 1.5)
    envelope = sns.parse(body)
    assert headers["x-amz-sns-message-type"] == envelope.type == "SubscriptionConfirmation"
    assert envelope.timestamp == "1970-01-01T00:00:01.500Z"
    assert envelope.subscribe_url == f"{BASE}/_sim/sns/confirm?Token={subscription.token}"
    sns.verify(envelope, CERTIFICATE["2"])
    with pytest.raises(sns.SignatureError, match="does not match"):
        sns.verify(envelope.model_copy(update={"token": "other"}), CERTIFICATE["2"])


def test_the_string_to_sign_is_the_documented_one() -> None:
    envelope = _notification(Subject="hello")
    assert sns.string_to_sign(envelope).decode() == (
        f"Message\n{envelope.message}\nMessageId\n{envelope.message_id}\nSubject\nhello\n"
        f"Timestamp\n{envelope.timestamp}\nTopicArn\n{envelope.topic_arn}\nType\nNotification\n"
    )
    without = _notification()
    assert b"Subject" not in sns.string_to_sign(without)


@pytest.mark.parametrize(
    "change",
    [
        {"Message": '{"eventName": "Y"}'},
        {"MessageId": "another"},
        {"Timestamp": "2030-01-01T00:00:00.000Z"},
        {"Subject": "added"},
        {"Type": "SubscriptionConfirmation", "SubscribeURL": BASE, "Token": "t"},
    ],
    ids=lambda change: ",".join(change),
)
def test_a_tampered_message_fails(change: dict[str, str]) -> None:
    with pytest.raises(sns.SignatureError, match="does not match"):
        sns.verify(_notification(**change), CERTIFICATE["2"])


def test_another_key_an_unknown_version_or_garbage_fails() -> None:
    envelope = _notification("2")
    with pytest.raises(sns.SignatureError, match="does not match"):
        sns.verify(envelope, CERTIFICATE["1"])
    with pytest.raises(sns.SignatureError, match="SignatureVersion"):
        sns.verify(envelope.model_copy(update={"signature_version": "3"}), CERTIFICATE["2"])
    with pytest.raises(sns.SignatureError, match="base64"):
        sns.verify(envelope.model_copy(update={"signature": "not base64!"}), CERTIFICATE["2"])
    later = datetime.now(UTC) + timedelta(days=400)
    with pytest.raises(sns.SignatureError, match="not valid now"):
        sns.verify(envelope, CERTIFICATE["2"], now=later)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem", True),
        ("https://SNS.us-east-1.amazonaws.com:443/x.pem", True),
        ("http://sns.eu-west-1.amazonaws.com/x.pem", False),  # not TLS
        ("https://sns.eu-west-1.amazonaws.com:8443/x.pem", False),
        ("https://sns.amazonaws.com/x.pem", False),  # no region label
        ("https://sns.a.b.amazonaws.com/x.pem", False),  # one label only
        ("https://sns.eu-west-1.amazonaws.com.evil.test/x.pem", False),
        ("https://evil.test/sns.eu-west-1.amazonaws.com/x.pem", False),
        ("https://user:pw@sns.eu-west-1.amazonaws.com/x.pem", False),
        ("https://sns.eu-west-1.amazonaws.com@evil.test/x.pem", False),
        ("https://[::1", False),
        ("not a url", False),
        ("http://127.0.0.1:8102/_sim/sns/x.pem", False),
    ],
)
def test_only_allowed_origins_are_trusted(url: str, ok: bool) -> None:
    assert sns.allowed(url, ORIGINS) is ok


def test_development_adds_the_simulator_origin() -> None:
    origins = f"{ORIGINS}, http://127.0.0.1:8102"
    assert sns.allowed("http://127.0.0.1:8102/_sim/sns/x.pem", origins)
    assert not sns.allowed("http://127.0.0.1:8103/_sim/sns/x.pem", origins)
    assert not sns.allowed("http://localhost:8102/_sim/sns/x.pem", origins)


class Served:
    """A fake SNS host: what it serves and every URL it was asked for."""

    def __init__(self, pem: bytes = SIGNERS["2"].pem, status: int = 200) -> None:
        self.pem, self.status, self.asked = pem, status, list[str]()

    def client(self) -> sns.SnsClient:
        def answer(request: httpx.Request) -> httpx.Response:
            self.asked.append(str(request.url))
            if self.status in (301, 302):
                return httpx.Response(self.status, headers={"Location": f"{BASE}/other.pem"})
            return httpx.Response(self.status, content=self.pem)

        return sns.SnsClient(httpx.AsyncClient(transport=httpx.MockTransport(answer)), cached=2)


async def test_a_certificate_off_the_allow_list_is_never_fetched() -> None:
    served = Served()
    client = served.client()
    for url in ("https://evil.test/c.pem", "http://sns.eu-west-1.amazonaws.com/c.pem"):
        with pytest.raises(sns.SignatureError, match="not on an allowed"):
            await client.certificate(url, ORIGINS)
    assert served.asked == []


async def test_certificates_are_fetched_once_per_url_and_a_few_kept() -> None:
    served = Served()
    client = served.client()
    urls = [f"{BASE}/c{n}.pem" for n in range(3)]
    for url in urls + urls[-1:]:
        await client.certificate(url, ORIGINS)
    assert served.asked == urls  # the last one from the cache
    await client.certificate(urls[0], ORIGINS)  # pushed out by the bound of 2: again
    assert served.asked == [*urls, urls[0]]
    # Taken off the allow-list, a cached certificate is no longer trusted either.
    with pytest.raises(sns.SignatureError):
        await client.certificate(urls[0], "https://sns.*.amazonaws.com.cn")


@pytest.mark.parametrize(
    ("pem", "status", "why"),
    [
        (b"not a certificate", 200, "no X.509"),
        (SIGNERS["2"].pem, 404, "HTTP 404"),
        (SIGNERS["2"].pem, 302, "HTTP 302"),  # a redirect is not followed
        (b"x" * (sns.MAX_CERTIFICATE_BYTES + 1), 200, "more than"),
    ],
)
async def test_what_is_not_a_certificate_is_refused(pem: bytes, status: int, why: str) -> None:
    served = Served(pem, status)
    with pytest.raises(sns.SignatureError, match=why):
        await served.client().certificate(f"{BASE}/c.pem", ORIGINS)
    assert served.asked == [f"{BASE}/c.pem"]


async def test_a_subscribe_url_off_the_allow_list_is_never_visited() -> None:
    served = Served()
    client = served.client()
    with pytest.raises(sns.SignatureError, match="SubscribeURL"):
        await client.confirm("http://169.254.169.254/latest/meta-data", ORIGINS)
    assert served.asked == []
    await client.confirm(f"{BASE}/?Action=ConfirmSubscription&Token=t", ORIGINS)
    assert served.asked == [f"{BASE}/?Action=ConfirmSubscription&Token=t"]


async def test_an_unreachable_host_is_worth_another_try() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = sns.SnsClient(httpx.AsyncClient(transport=httpx.MockTransport(refuse)))
    with pytest.raises(sns.Unreachable):
        await client.certificate(f"{BASE}/c.pem", ORIGINS)


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"Type": "Notification"}', b"\xff", b'{"Type": "Other"}'],
)
def test_broken_envelopes_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        sns.parse(body)


def test_a_confirmation_without_its_url_is_refused() -> None:
    envelope = json.loads(
        sim_sns.confirmation(sim_sns.Subscription("https://x.test"), SIGNERS["2"], BASE, 0)[0]
    )
    del envelope["SubscribeURL"]
    with pytest.raises(ValueError, match="SubscribeURL"):
        sns.parse(json.dumps(envelope).encode())
    assert base64.b64decode(envelope["Signature"])  # the rest was well-formed
