"""EsimGoCarrier against a fake eSIM Go answering the record's shapes: each method,
the state mapping, line ids and the last-bundle rule."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from carriers import build_carriers
from carriers.errors import LAST_BUNDLE, CarrierOutcomeUnknown, CarrierRejected
from carriers.esimgo import EsimGoCarrier, strands_esim
from carriers.esimgo_records import LineName, line, parse_time, product
from config import EsimGoSettings, Settings
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
    carrier = EsimGoCarrier(BASE, KEY, transport=fake.transport, page_size=2)
    yield carrier
    await carrier.aclose()


async def test_the_catalogue_pages_through_and_reads_mb_as_decimal_and_days(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    products = {p.carrier_product_id: p for p in await esimgo.list_products()}
    assert list(products) == [DAY, "esim_3GB_1D_GB_V2", "esim_UL_1D_GB_V2", "esim_1MB_10S_SIM"]
    day = products[DAY]
    assert (day.allowance_bytes, day.validity_seconds, day.price_cents) == (10**9, 86_400, 125)
    assert (day.rotation, day.reset, day.name) == ("queued", "rolling", CATALOGUE_DESCRIPTION)
    # Unlimited: no allowance to steer by, read as 0 bytes for the sync to leave out.
    assert products["esim_UL_1D_GB_V2"].allowance_bytes == 0
    # The simulator's compressed bundle says its validity in seconds.
    assert products["esim_1MB_10S_SIM"].validity_seconds == 10
    pages = [r.url.params["page"] for r in fake.requests]
    assert pages == ["1", "2"]
    assert {r.headers["X-API-Key"] for r in fake.requests} == {KEY}


CATALOGUE_DESCRIPTION = "eSIM, 1GB, 1 Day, United Kingdom, V2"


async def test_a_catalogue_that_ignores_the_page_is_read_once(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    fake.catalogue = fake.catalogue[:2]
    for _ in range(3):
        fake.replies.append(Reply(200, {"bundles": fake.catalogue}))
    assert len(await esimgo.list_products()) == 2
    assert [r.url.params["page"] for r in fake.requests] == ["1", "2"]


async def test_an_order_buys_one_bundle_onto_the_esim_and_names_its_assignment(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    earlier = fake.assign(ICCID, DAY, "expired", at=datetime.now(UTC) - timedelta(days=2))
    line = await esimgo.order(ICCID, DAY, "bal-1:1")

    post = next(r for r in fake.requests if r.method == "POST")
    assert post.url.path == "/v2.4/orders"
    assert json.loads(post.content) == {
        "type": "transaction",
        "assign": True,
        "order": [
            {
                "type": "bundle",
                "quantity": 1,
                "item": DAY,
                "iccids": [ICCID],
                "allowReassign": False,
            }
        ],
    }
    made = fake.esims[ICCID][-1]
    assert made.id != earlier.id
    assert line.line_id == f"{ICCID}:{DAY}:{made.id}"
    assert (line.status, line.reference, line.allowance_bytes) == ("scheduled", None, 10**9)
    assert line.ordered_at == made.assigned_at.replace(microsecond=0)
    # One read finds it, whatever the eSIM's age: the latest assignment of the name.
    assert [r.url.path for r in fake.requests] == [
        "/v2.4/orders",
        f"/v2.4/esims/{ICCID}/bundles/{DAY}",
    ]
    # What it cost is the order's own answer: its total, in its currency.
    assert (line.price_cents, line.currency) == (125, "USD")


async def test_an_order_answer_without_a_readable_total_leaves_the_price_to_the_catalogue(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    for total, currency in ((None, "USD"), (1.25, None), ("1.25", "USD"), (-1, "USD")):
        fake.order_answer = {"total": total, "currency": currency}
        line = await esimgo.order(ICCID, DAY, "bal-1:1")
        assert (line.price_cents, line.currency) == (None, None), (total, currency)


async def test_the_catalogue_is_read_in_the_configured_currency(fake: FakeEsimGo) -> None:
    carrier = EsimGoCarrier(BASE, KEY, transport=fake.transport, currency="EUR")
    try:
        assert {p.currency for p in await carrier.list_products()} == {"EUR"}
    finally:
        await carrier.aclose()


async def test_an_order_still_processing_is_a_scheduled_line(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    fake.new_state = "processing"
    fake.latest_shape = "assignment"
    line = await esimgo.order(ICCID, DAY, "bal-1:2")
    assert line.status == "scheduled"


async def test_an_order_whose_assignment_does_not_show_yet_is_in_doubt(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    fake.assign(ICCID, DAY, "active", at=datetime.now(UTC) - timedelta(hours=3))
    fake.show_orders = False
    with pytest.raises(CarrierOutcomeUnknown, match="not yet shown"):
        await esimgo.order(ICCID, DAY, "bal-1:3")
    # Once it shows, the look an order makes first (open_lines) finds it by its time.
    assert fake.hidden is not None
    fake.esims[ICCID].append(fake.hidden)
    found = await esimgo.open_lines(ICCID, DAY)
    assert [f.line_id.rsplit(":", 1)[1] for f in found] == [
        fake.esims[ICCID][0].id,
        fake.hidden.id,
    ]


async def test_business_refusals_of_an_order_are_rejections(esimgo: EsimGoCarrier) -> None:
    with pytest.raises(CarrierRejected) as foreign:
        await esimgo.order("8944000000000000018", DAY, "bal-2:1")
    assert (foreign.value.code, foreign.value.message) == ("403", "ICCID not accessible")
    with pytest.raises(CarrierRejected) as unknown:
        await esimgo.order(ICCID, "esim_9GB_1D_XX", "bal-2:2")
    assert unknown.value.code == "400"


async def test_a_refused_key_is_a_rejection_that_says_so(fake: FakeEsimGo) -> None:
    carrier = EsimGoCarrier(BASE, "not-the-key", transport=fake.transport)
    try:
        with pytest.raises(CarrierRejected) as refused:
            await carrier.list_products()
    finally:
        await carrier.aclose()
    assert refused.value.code == "403" and "ESIMGO__API_KEY" in refused.value.message


@pytest.mark.parametrize(
    ("state", "status", "used"),
    [
        ("processing", "scheduled", 0),
        ("queued", "scheduled", 0),
        ("active", "active", 250_000_000),
        ("depleted", "active", 1_000_000_000),
        ("expired", "ended", 250_000_000),
        ("revoked", "ended", 250_000_000),
        ("lapsed", "ended", 0),
    ],
)
async def test_bundle_states_map_to_line_states(
    esimgo: EsimGoCarrier, fake: FakeEsimGo, state: str, status: str, used: int
) -> None:
    a = fake.assign(ICCID, DAY, state)
    if state not in ("processing", "queued", "lapsed"):
        fake.start(a, used=250_000_000)
        a.state = state
    line = await esimgo.get_line(f"{ICCID}:{DAY}:{a.id}")
    assert (line.status, line.used_bytes, line.allowance_bytes) == (status, used, 10**9)
    if a.start is not None:
        assert line.activated_at == a.start.replace(microsecond=0)
        assert line.ends_at == (a.start + timedelta(days=1)).replace(microsecond=0)
    assert (line.ended_at is not None) == (state == "expired")


async def test_get_line_reads_the_open_bundles_first_and_the_used_ones_only_if_needed(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    queued = fake.assign(ICCID, DAY)
    expired = fake.assign(ICCID, DAY, "active")
    fake.start(expired)
    expired.state = "expired"
    await esimgo.get_line(f"{ICCID}:{DAY}:{queued.id}")
    assert [dict(r.url.params) for r in fake.requests] == [{"limit": "200"}]
    fake.requests.clear()
    assert (await esimgo.get_line(f"{ICCID}:{DAY}:{expired.id}")).status == "ended"
    assert [r.url.params.get("includeUsed") for r in fake.requests] == [None, "true"]

    with pytest.raises(CarrierRejected) as missing:
        await esimgo.get_line(f"{ICCID}:{DAY}:999")
    assert missing.value.code == "404"


@pytest.mark.parametrize(
    "line_id",
    ["", "8944", f"{ICCID}:{DAY}", f"{ICCID}::1", f"x{ICCID}:{DAY}:1", f"{ICCID}:{DAY}: "],
)
async def test_a_malformed_line_id_is_rejected_without_a_call(
    esimgo: EsimGoCarrier, fake: FakeEsimGo, line_id: str
) -> None:
    with pytest.raises(CarrierRejected) as refused:
        await esimgo.get_line(line_id)
    assert refused.value.code == "400"
    assert fake.requests == []


def test_line_ids_name_the_esim_the_bundle_and_the_assignment() -> None:
    name = LineName.parse(f"{ICCID}:odd:name:215009266")
    assert name == LineName(ICCID, "odd:name", "215009266")
    assert str(name) == f"{ICCID}:odd:name:215009266"


async def test_find_lines_lists_every_assignment_with_the_used_ones(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    old = fake.assign(ICCID, DAY, "active")
    fake.start(old)
    old.state = "expired"
    fake.assign(ICCID, "esim_3GB_1D_GB_V2")
    found = await esimgo.find_lines(ICCID)
    assert [(f.carrier_product_id, f.status) for f in found] == [
        (DAY, "ended"),
        ("esim_3GB_1D_GB_V2", "scheduled"),
    ]
    assert dict(fake.requests[0].url.params) == {"limit": "200", "includeUsed": "true"}


async def test_open_lines_are_the_products_assignments_not_ended(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    active = fake.assign(ICCID, DAY, "active")
    fake.start(active)
    queued = fake.assign(ICCID, DAY)
    fake.assign(ICCID, DAY, "revoked")
    fake.assign(ICCID, "esim_3GB_1D_GB_V2")
    found = await esimgo.open_lines(ICCID, DAY)
    assert [f.line_id for f in found] == [f"{ICCID}:{DAY}:{a.id}" for a in (active, queued)]
    assert [r.url.params.get("includeUsed") for r in fake.requests] == [None]


async def test_open_lines_fail_on_a_state_the_client_does_not_know(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    fake.assign(ICCID, DAY, "suspended")
    with pytest.raises(Exception) as caught:
        await esimgo.open_lines(ICCID, DAY)
    assert type(caught.value).__name__ == "CarrierUnavailable"


async def test_activate_confirms_a_queued_start_by_reading(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    a = fake.assign(ICCID, DAY)
    assert (await esimgo.activate(f"{ICCID}:{DAY}:{a.id}")).status == "scheduled"
    fake.start(a)
    assert (await esimgo.activate(f"{ICCID}:{DAY}:{a.id}")).status == "active"
    assert {r.method for r in fake.requests} == {"GET"}


async def test_deactivate_revokes_the_one_assignment_and_reads_it_back(
    fake: FakeEsimGo,
) -> None:
    carrier = EsimGoCarrier(BASE, KEY, transport=fake.transport, refund_to_balance=True)
    old = fake.assign(ICCID, DAY, "active")
    fake.start(old, used=10)
    fake.assign(ICCID, DAY)
    try:
        ended = await carrier.deactivate(f"{ICCID}:{DAY}:{old.id}")
    finally:
        await carrier.aclose()
    assert ended.status == "ended" and old.state == "revoked"
    # The open bundles hold the line and show the eSIM installed: one read before.
    assert [r.method for r in fake.requests] == ["GET", "DELETE", "GET"]
    delete = next(r for r in fake.requests if r.method == "DELETE")
    assert delete.url.path == f"/v2.4/esims/{ICCID}/bundles/{DAY}/assignments/{old.id}"
    assert dict(delete.url.params) == {"type": "transaction", "refundToBalance": "true"}


async def test_deactivating_an_ended_line_changes_nothing(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    a = fake.assign(ICCID, DAY, "active")
    fake.start(a)
    a.state = "expired"
    assert (await esimgo.deactivate(f"{ICCID}:{DAY}:{a.id}")).status == "ended"
    assert {r.method for r in fake.requests} == {"GET"}


async def test_a_revoke_the_list_does_not_show_yet_is_still_an_ended_line(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    fake.start(fake.assign(ICCID, "esim_3GB_1D_GB_V2", "active"))
    a = fake.assign(ICCID, DAY)
    fake.replies.append(Reply(200, {"status": "Revoked"}, method="DELETE"))
    ended = await esimgo.deactivate(f"{ICCID}:{DAY}:{a.id}")
    assert ended.status == "ended" and ended.ended_at is not None
    assert a.state == "queued"  # the fake took nothing: only the answer said revoked
    assert ended.refund == "none"


@pytest.mark.parametrize(
    ("status", "refund"),
    [
        ("Revoked and refunded to balance", "balance"),
        ("Revoked and returned to inventory", "inventory"),
        ("Revoked", "none"),
        (None, "none"),
    ],
)
async def test_a_revoke_says_what_it_refunded(
    esimgo: EsimGoCarrier, fake: FakeEsimGo, status: str | None, refund: str
) -> None:
    fake.start(fake.assign(ICCID, "esim_3GB_1D_GB_V2", "active"))
    a = fake.assign(ICCID, DAY)
    fake.replies.append(Reply(200, {"status": status}, method="DELETE"))
    ended = await esimgo.deactivate(f"{ICCID}:{DAY}:{a.id}")
    assert ended.refund == refund


async def test_the_last_bundle_of_an_esim_never_installed_is_not_revoked(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    only = fake.assign(ICCID, DAY)
    with pytest.raises(CarrierRejected) as refused:
        await esimgo.deactivate(f"{ICCID}:{DAY}:{only.id}")
    assert refused.value.code == LAST_BUNDLE
    assert only.state == "queued" and all(r.method == "GET" for r in fake.requests)
    # The open bundles showed no sign of an install: the used ones were read too.
    assert [r.url.params.get("includeUsed") for r in fake.requests] == [None, "true"]


async def test_the_last_bundle_of_an_installed_esim_is_revoked(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    used = fake.assign(ICCID, DAY, "active")
    fake.start(used)
    used.state = "expired"
    only = fake.assign(ICCID, DAY)
    assert (await esimgo.deactivate(f"{ICCID}:{DAY}:{only.id}")).status == "ended"
    assert only.state == "revoked"


def test_the_last_bundle_rule() -> None:
    queued = {"id": "1", "bundleState": "queued"}
    other = {"id": "2", "bundleState": "queued"}
    started = {"id": "3", "bundleState": "expired", "startTime": "2026-12-01T00:00:00Z"}
    assert strands_esim([queued], "1")
    assert strands_esim([queued, {"id": "9", "bundleState": "revoked"}], "1")
    assert not strands_esim([queued, other], "1")
    assert not strands_esim([queued, started], "1")
    assert not strands_esim([{"id": "1", "bundleState": "active"}], "1")


async def test_usage_is_read_off_the_assignments_quantities(
    esimgo: EsimGoCarrier, fake: FakeEsimGo
) -> None:
    a = fake.assign(ICCID, DAY, "active")
    fake.start(a, used=750_000_000)
    usage = await esimgo.usage(f"{ICCID}:{DAY}:{a.id}")
    assert (usage.used_bytes, usage.allowance_bytes, usage.iccid) == (750_000_000, 10**9, ICCID)


def test_times_are_rfc_3339_with_an_offset() -> None:
    assert parse_time("2024-12-11T10:47:00Z") == datetime(2024, 12, 11, 10, 47, tzinfo=UTC)
    assert parse_time("2024-12-11T11:47:00+01:00") == datetime(2024, 12, 11, 10, 47, tzinfo=UTC)
    assert parse_time(None) is None
    with pytest.raises(ValueError):
        parse_time("2024-12-11T10:47:00")
    with pytest.raises(TypeError):
        parse_time(1733914020)


async def test_from_settings_and_build_carriers_reach_esimgo() -> None:
    settings = Settings(esimgo=EsimGoSettings(api_key=SecretStr("k"), in_doubt_seconds=90))
    carrier = EsimGoCarrier.from_settings(settings)
    try:
        assert (carrier.name, carrier.in_doubt_seconds) == ("esimgo", 90)
        assert str(carrier._client.base_url) == "http://127.0.0.1:8103/v2.4/"
    finally:
        await carrier.aclose()
    carriers = build_carriers(settings)
    try:
        assert carriers["esimgo"].name == "esimgo"
    finally:
        for client in carriers.values():
            await client.aclose()


def test_a_revoked_line_ended_at_its_end_once_that_has_passed() -> None:
    revoked = {
        "id": "7",
        "initialQuantity": 10**9,
        "remainingQuantity": 10**9,
        "assignmentDateTime": "2026-12-01T00:00:00Z",
        "startTime": "2026-12-01T00:00:00Z",
        "endTime": "2026-12-01T06:00:00Z",
        "bundleState": "revoked",
    }
    before = datetime(2026, 12, 1, 3, tzinfo=UTC)
    after = datetime(2026, 12, 1, 7, tzinfo=UTC)
    assert line(ICCID, DAY, revoked, before).ended_at is None
    assert line(ICCID, DAY, revoked, after).ended_at == datetime(2026, 12, 1, 6, tzinfo=UTC)


def test_a_simulators_speed_after_depletion_is_read_where_given() -> None:
    offer = {"name": DAY, "dataAmount": 1000, "duration": 1, "price": 1.5, "throttleKbps": 128}
    assert product(offer, "USD").throttle_kbps == 128
    assert product({**offer, "throttleKbps": None}, "USD").throttle_kbps == 0
