"""EsimGoCarrier's error mapping: each answer and each transport failure onto the error
tree, reads and state changes apart; and the client pacing itself by the headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from carriers.errors import (
    CarrierError,
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
)
from carriers.esimgo import EsimGoCarrier
from carriers.esimgo_pacing import WindowPacer
from tests.carriers.esimgo_fake import BASE, KEY, FakeEsimGo, Reply

ICCID = "8944538532008160222"
DAY = "esim_1GB_1D_GB_V2"


@pytest.fixture
def fake() -> FakeEsimGo:
    fake = FakeEsimGo()
    fake.add_esim(ICCID)
    return fake


@pytest.fixture
async def esimgo(fake: FakeEsimGo) -> AsyncIterator[EsimGoCarrier]:
    # Each answer on its own: no request sent again by the client itself.
    carrier = EsimGoCarrier(BASE, KEY, transport=fake.transport, retries=0)
    yield carrier
    await carrier.aclose()


async def call(carrier: EsimGoCarrier, fake: FakeEsimGo, kind: str) -> Any:
    """A read (get_line), an order (POST) or a revoke (DELETE)."""
    if kind == "GET":
        a = fake.assign(ICCID, DAY)
        return await carrier.get_line(f"{ICCID}:{DAY}:{a.id}")
    if kind == "POST":
        return await carrier.order(ICCID, DAY, "bal-1:1")
    fake.start(fake.assign(ICCID, DAY, "active"))
    a = fake.assign(ICCID, DAY)
    return await carrier.deactivate(f"{ICCID}:{DAY}:{a.id}")


@pytest.mark.parametrize(
    ("method", "status", "body", "expected"),
    [
        ("GET", 400, {"message": "Bad Request"}, CarrierRejected),
        (
            "POST",
            400,
            {"message": "Deactivated eSIMs cannot have bundles applied"},
            CarrierRejected,
        ),
        (
            "POST",
            403,
            {"message": "the user does not have any available Bundles left"},
            CarrierRejected,
        ),
        ("GET", 403, {"message": "ICCID not accessible"}, CarrierRejected),
        ("DELETE", 404, {"message": "Assignment not found"}, CarrierRejected),
        ("GET", 429, {"message": "Rate limit exceeded"}, CarrierUnavailable),
        ("POST", 429, {"message": "Rate limit exceeded"}, CarrierUnavailable),
        ("GET", 503, {"message": "Processing"}, CarrierUnavailable),
        ("POST", 503, {"message": "Processing"}, CarrierUnavailable),
        ("DELETE", 503, {"message": "Processing"}, CarrierOutcomeUnknown),
        ("GET", 500, {"message": "Internal Server Error"}, CarrierUnavailable),
        ("POST", 500, {"message": "Internal Server Error"}, CarrierOutcomeUnknown),
        ("GET", 502, b"<html>bad gateway</html>", CarrierUnavailable),
        ("POST", 502, b"<html>bad gateway</html>", CarrierOutcomeUnknown),
        ("DELETE", 504, b"", CarrierOutcomeUnknown),
        ("GET", 200, b"<html>", CarrierUnavailable),
        ("POST", 200, b"[]", CarrierOutcomeUnknown),
        (
            "GET",
            200,
            {"bundles": [{"assignments": []}]},
            CarrierUnavailable,
        ),
    ],
)
async def test_answers_map_to_the_error_tree(
    esimgo: EsimGoCarrier,
    fake: FakeEsimGo,
    method: str,
    status: int,
    body: Any,
    expected: type[CarrierError],
) -> None:
    fake.replies.append(Reply(status, body, {"Retry-After": "1"}, method=method))
    with pytest.raises(CarrierError) as caught:
        await call(esimgo, fake, method)
    error: Any = caught.value
    assert type(error) is expected, error
    if expected is CarrierRejected:
        assert (error.code, error.message) == (str(status), body["message"])
    if expected is CarrierUnavailable and status in (429, 503):
        assert error.retry_after == 1.0


@pytest.mark.parametrize(
    ("method", "error", "expected"),
    [
        ("GET", httpx.ConnectError("refused"), CarrierUnavailable),
        ("POST", httpx.ConnectError("refused"), CarrierUnavailable),
        ("POST", httpx.ConnectTimeout("slow"), CarrierUnavailable),
        ("POST", httpx.PoolTimeout("busy"), CarrierUnavailable),
        ("GET", httpx.ReadTimeout("slow"), CarrierUnavailable),
        ("POST", httpx.ReadTimeout("slow"), CarrierOutcomeUnknown),
        ("DELETE", httpx.ReadTimeout("slow"), CarrierOutcomeUnknown),
        ("GET", httpx.RemoteProtocolError("dropped"), CarrierUnavailable),
        ("POST", httpx.RemoteProtocolError("dropped"), CarrierOutcomeUnknown),
        ("DELETE", httpx.ReadError("reset"), CarrierOutcomeUnknown),
    ],
)
async def test_transport_failures_map_to_the_error_tree(
    esimgo: EsimGoCarrier,
    fake: FakeEsimGo,
    method: str,
    error: Exception,
    expected: type[CarrierError],
) -> None:
    fake.replies.append(Reply(method=method, error=error))
    with pytest.raises(CarrierError) as caught:
        await call(esimgo, fake, method)
    assert type(caught.value) is expected


async def test_an_order_whose_answer_is_lost_took_effect_and_is_in_doubt(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    fake.replies.append(Reply(method="POST", error=httpx.ReadTimeout("lost"), after=True))
    with pytest.raises(CarrierOutcomeUnknown):
        await esimgo.order(ICCID, DAY, "bal-1:1")
    assert [a.state for a in fake.esims[ICCID]] == ["queued"]  # bought, as looking shows
    assert len(await esimgo.open_lines(ICCID, DAY)) == 1


async def test_an_order_whose_assignment_cannot_be_read_is_in_doubt(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    fake.replies.append(Reply(503, {"message": "Processing"}, {"Retry-After": "1"}, "GET"))
    with pytest.raises(CarrierOutcomeUnknown, match="ordered"):
        await esimgo.order(ICCID, DAY, "bal-1:1")


async def test_the_client_waits_out_a_spent_window_before_its_next_request(
    fake: FakeEsimGo,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    now = fake.now
    pacer = WindowPacer(clock=lambda: now, sleep=sleep)
    carrier = EsimGoCarrier(BASE, KEY, transport=fake.transport, pacer=pacer)
    reset = {
        "X-Ratelimit-Remaining": "0",
        "X-Ratelimit-Reset": (now + timedelta(milliseconds=300)).isoformat(),
    }
    fake.replies.append(Reply(200, {"bundles": [], "pageCount": 1}, reset))
    try:
        await carrier.list_products()
        assert slept == []
        await carrier.list_products()
    finally:
        await carrier.aclose()
    assert slept == [pytest.approx(0.3)]


async def test_a_429_holds_the_clients_next_request_for_its_retry_after(
    fake: FakeEsimGo,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    now = fake.now
    carrier = EsimGoCarrier(
        BASE, KEY, transport=fake.transport, pacer=WindowPacer(lambda: now, sleep), retries=0
    )
    fake.replies.append(Reply(429, {"message": "Rate limit exceeded"}, {"Retry-After": "1"}))
    try:
        with pytest.raises(CarrierUnavailable):
            await carrier.list_products()
        await carrier.list_products()
    finally:
        await carrier.aclose()
    assert slept == [pytest.approx(1.0)]


@pytest.mark.parametrize(
    ("method", "status", "sent"),
    [
        ("GET", 429, 2),
        ("POST", 429, 2),
        ("GET", 503, 2),
        ("POST", 503, 2),
        ("DELETE", 503, 1),
    ],
)
async def test_the_client_sends_a_429_and_a_503_it_may_again_after_retry_after(
    fake: FakeEsimGo, method: str, status: int, sent: int
) -> None:
    """As the record asks (retry 429 and 503 by Retry-After): a 429 took nothing, a read
    is safe to repeat, an order of one bundle answered 503 was not taken (eSIM Go answers
    503 while it processes only orders of more than 5 bundles); a revoke answered 503 may
    have been taken, and is not sent again."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    now = fake.now
    pacer = WindowPacer(lambda: now, sleep)
    carrier = EsimGoCarrier(BASE, KEY, transport=fake.transport, pacer=pacer)
    fake.replies.append(Reply(status, {"message": "busy"}, {"Retry-After": "1"}, method))
    try:
        if sent == 1:
            with pytest.raises(CarrierOutcomeUnknown):
                await call(carrier, fake, method)
        else:
            await call(carrier, fake, method)
    finally:
        await carrier.aclose()
    times = sum(r.method == method for r in fake.requests)
    # A read of a line may be two (the open bundles, then the used); a write is exact.
    assert times >= sent if method == "GET" else times == sent
    if status == 429:
        # Held for the Retry-After (the test's clock stands still: every later one too).
        assert slept and slept[0] == pytest.approx(1.0)


async def test_a_retry_after_longer_than_the_client_waits_is_the_callers(
    fake: FakeEsimGo,
) -> None:
    carrier = EsimGoCarrier(BASE, KEY, transport=fake.transport)
    fake.replies.append(Reply(503, {"message": "Processing"}, {"Retry-After": "30"}, "GET"))
    try:
        with pytest.raises(CarrierUnavailable) as caught:
            await carrier.list_products()
    finally:
        await carrier.aclose()
    assert caught.value.retry_after == 30.0
