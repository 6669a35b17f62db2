"""The Telna-like simulator over real HTTP: API shapes, time, webhooks, faults, state."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from fastapi import FastAPI, Request, Response

from api import sns
from config import get_settings
from models.identifiers import make_iccid
from simulators.telna import SimulatorConfigError, create_app, main
from tests.servers import serve

API_KEY = "sim-test-key"
SECRET = "sim-test-secret"
_serial = itertools.count(1)


def new_iccid() -> str:
    return make_iccid(f"8944{next(_serial) + 5_000_000:014d}")


class Receiver:
    """An SNS subscriber: checks every signature with the certificate at its
    SigningCertURL, confirms its subscription (unless told to wait), keeps the events."""

    def __init__(self, confirm: bool = True) -> None:
        self.events: list[dict[str, Any]] = []
        self.deliveries: list[tuple[dict[str, str], bytes]] = []  # every POST, headers lower
        self.confirmations: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.confirm = confirm
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/events")(self.receive)

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self.lock:
            self.deliveries.append((headers, body))
        if headers.get("x-amz-sns-rawdelivery") == "true":
            with self.lock:
                self.events.append(json.loads(body))
            return Response(status_code=200)
        envelope = sns.parse(body)
        async with httpx.AsyncClient() as http:
            pem = (await http.get(envelope.signing_cert_url)).content
            try:
                sns.verify(envelope, x509.load_pem_x509_certificate(pem))
            except sns.SignatureError:
                self.bad_signatures += 1
                return Response(status_code=401)
            if envelope.type == "SubscriptionConfirmation":
                with self.lock:
                    self.confirmations.append(json.loads(body))
                if not self.confirm:
                    return Response(status_code=503)  # SNS tries again later
                assert envelope.subscribe_url is not None
                assert (await http.get(envelope.subscribe_url)).status_code == 200
                return Response(status_code=200)
        with self.lock:
            self.events.append(json.loads(envelope.message))
        return Response(status_code=200)

    def of(self, package_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["eventDetails"]["package"]["id"] == package_id]

    def order(self) -> list[str]:
        """Package ids in the order their events arrived."""
        with self.lock:
            return [e["eventDetails"]["package"]["id"] for e in self.events]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver()
    with serve(hook.app) as url:
        yield hook, url


@pytest.fixture(scope="module")
def sim_url(receiver: tuple[Receiver, str]) -> Iterator[str]:
    app = create_app(API_KEY, SECRET, webhook_url=f"{receiver[1]}/events", seed=11)
    with serve(app) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url, headers={"Authorization": API_KEY}) as client:
        yield client
        await client.post("/_sim/faults", json={})


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def enrolled(sim: httpx.AsyncClient) -> str:
    iccid = new_iccid()
    assert (await sim.post("/_sim/esims", json={"iccids": [iccid]})).json() == {"added": 1}
    return iccid


async def order(sim: httpx.AsyncClient, iccid: str, template: str) -> str:
    body = {"sim": iccid, "package_template": template}
    response = await sim.post("/v2.1/pcr/packages", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def activated(sim: httpx.AsyncClient, package_id: str) -> dict[str, Any]:
    answer = await sim.post(f"/v2.1/pcr/packages/{package_id}/activate")
    assert answer.status_code == 200 and answer.json() is True
    package: dict[str, Any] = {}

    async def active() -> bool:
        package.update((await sim.get(f"/v2.1/pcr/packages/{package_id}")).json())
        return package["status"] == "ACTIVE"

    await wait_for(active)
    return package


async def test_order_activate_terminate_round_trip_and_ledger(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    response = await sim.post(
        "/v2.1/pcr/packages",
        json={"sim": iccid, "package_template": "compressed-30s-manual"},
        headers={"Request-ID": "req-123"},
    )
    assert response.status_code == 201
    assert response.headers["Request-ID"] == "req-123"
    assert response.headers["Reference-ID"]
    ordered = response.json()
    assert set(ordered) == {
        "id",
        "sim",
        "package_template",
        "status",
        "window_activation_start",
        "window_activation_end",
        "created_date",
        "activated_date",
        "expiry_date",
        "terminated_date",
        "data_usage_remaining",
        "time_allowance",
    }
    assert ordered["status"] == "NOT_ACTIVE" and ordered["sim"] == iccid
    assert ordered["data_usage_remaining"] == 3_000_000 and ordered["time_allowance"] == 30
    assert ordered["activated_date"] == ordered["expiry_date"] == 0  # not yet
    package_id = ordered["id"]

    requested_ms = time.time() * 1000
    pending = await sim.post(f"/v2.1/pcr/packages/{package_id}/activate")
    assert pending.status_code == 200 and pending.json() is True
    package = await activated(sim, package_id)
    # compressed-30s activates 0.3-1.5 s after the request
    assert 300 <= package["activated_date"] - requested_ms <= 1500 + 500  # + slow machines
    assert package["expiry_date"] - package["activated_date"] == 30_000

    terminated = await sim.post(f"/v2.1/pcr/packages/{package_id}/terminate")
    assert terminated.status_code == 200 and terminated.json() is True
    ended = (await sim.get(f"/v2.1/pcr/packages/{package_id}")).json()
    assert ended["status"] == "TERMINATED" and ended["terminated_date"] > 0
    await sim.post(f"/v2.1/pcr/packages/{package_id}/terminate")
    again = (await sim.get(f"/v2.1/pcr/packages/{package_id}")).json()
    assert again["terminated_date"] == ended["terminated_date"]
    refused = await sim.post(f"/v2.1/pcr/packages/{package_id}/activate")
    assert refused.status_code == 409 and "terminated" in refused.json()["error"]

    entries = (await sim.get("/_sim/ledger", params={"iccid": iccid})).json()["entries"]
    assert [e["action"] for e in entries] == ["order", "activate", "deactivate"]
    assert {(e["package_id"], e["reference"], e["product_id"]) for e in entries} == {
        (package_id, None, "compressed-30s-manual")
    }
    assert entries[1]["at"].endswith("Z")
    # The order says what Telna bills for it; the other entries bill nothing.
    assert [(e["price_cents"], e["currency"]) for e in entries] == [
        (1, "USD"),
        (None, None),
        (None, None),
    ]
    # Usage is the package's data_usage_remaining: no usage route of its own.
    assert (await sim.get(f"/v2.1/usage/packages/{package_id}")).status_code == 404


async def test_an_auto_package_starts_on_attach_when_the_sim_has_no_active_one(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    first = await sim.get(f"/v2.1/pcr/packages/{await order(sim, iccid, 'compressed-30s')}")
    assert first.json()["status"] == "ACTIVE"
    second_id = await order(sim, iccid, "compressed-30s")
    queued = (await sim.get(f"/v2.1/pcr/packages/{second_id}")).json()
    assert queued["status"] == "NOT_ACTIVE"
    await sim.post(f"/v2.1/pcr/packages/{first.json()['id']}/terminate")
    started = (await sim.get(f"/v2.1/pcr/packages/{second_id}")).json()
    assert started["status"] == "ACTIVE"
    filtered = await sim.get(
        "/v2.1/pcr/packages",
        params={"sim": iccid, "package_template": "compressed-30s", "status": "ACTIVE"},
    )
    assert [p["id"] for p in filtered.json()["packages"]] == [second_id]
    unknown = await sim.post(
        "/v2.1/pcr/packages",
        json={"sim": iccid, "package_template": "compressed-30s", "activation_type": "AUTO"},
    )
    assert unknown.status_code == 400  # no such field on a package


async def test_a_used_up_package_is_terminated_and_the_waiting_auto_one_starts_with_no_gap(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    first_id = await order(sim, iccid, "compressed-30s")  # AUTO: starts on attach
    second_id = await order(sim, iccid, "compressed-30s")
    # 3 MB at 10 MB/s: the first is used up 0.3 s after the traffic starts
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 10_000_000})

    async def handed_over() -> bool:
        second = (await sim.get(f"/v2.1/pcr/packages/{second_id}")).json()
        return bool(second["status"] == "ACTIVE")

    await wait_for(handed_over)
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 0})
    first = (await sim.get(f"/v2.1/pcr/packages/{first_id}")).json()
    second = (await sim.get(f"/v2.1/pcr/packages/{second_id}")).json()
    assert (first["status"], first["data_usage_remaining"]) == ("TERMINATED", 0)
    assert first["terminated_date"] == second["activated_date"]
    ledger = (await sim.get("/_sim/ledger", params={"iccid": iccid})).json()["entries"]
    actions = [(e["action"], e["package_id"]) for e in ledger]
    assert actions[-3:] == [("exhaust", first_id), ("expire", first_id), ("activate", second_id)]
    assert len({e["at"] for e in ledger[-3:]}) == 1
    timeline = (await sim.get(f"/_sim/timeline/{iccid}")).json()["intervals"]
    assert [(i["state"], i["end"]) for i in timeline] == [("high_speed", None)]


async def test_a_used_up_package_with_nothing_waiting_leaves_no_service(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    package_id = await order(sim, iccid, "compressed-30s")
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 10_000_000})

    async def ended() -> bool:
        package = (await sim.get(f"/v2.1/pcr/packages/{package_id}")).json()
        return bool(package["status"] == "TERMINATED")

    await wait_for(ended)
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 0})
    timeline = (await sim.get(f"/_sim/timeline/{iccid}")).json()["intervals"]
    assert [i["state"] for i in timeline] == ["high_speed", "none"]
    assert timeline[-1]["end"] is None
    registry = (await sim.get(f"/v2.1/inventory/sim-registries/{iccid}")).json()
    assert registry["status"] == "READY"


async def test_a_repeated_order_buys_a_second_package(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    first = await order(sim, iccid, "daily-1gb")
    second = await order(sim, iccid, "daily-1gb")
    refused = await sim.post(
        "/v2.1/pcr/packages",
        json={"sim": iccid, "package_template": "daily-1gb", "customer_ref": "bal-2:1"},
    )
    assert refused.status_code == 400  # a package has no field for a caller's reference
    assert first != second
    page = (await sim.get("/v2.1/pcr/packages", params={"sim": iccid, "count": 1})).json()
    assert (page["total"], page["count"], page["offset"]) == (2, 1, 0)
    assert page["packages"][0]["id"] == first


async def test_unknown_things_bad_bodies_and_bad_keys_are_refused(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    cases = [
        ({"sim": new_iccid(), "package_template": "daily-1gb"}, 404),
        ({"sim": iccid, "package_template": "no-such"}, 404),
        ({"package_template": "daily-1gb"}, 400),
    ]
    for body, status in cases:
        response = await sim.post("/v2.1/pcr/packages", json=body)
        assert response.status_code == status
        assert isinstance(response.json()["error"], str)
    assert (await sim.get("/v2.1/pcr/packages/nope")).status_code == 404
    assert (await sim.get(f"/v2.1/inventory/sim-registries/{new_iccid()}")).status_code == 404
    registry = (await sim.get(f"/v2.1/inventory/sim-registries/{iccid}")).json()
    assert registry == {"iccid": iccid, "status": "READY"}

    for headers in ({}, {"Authorization": "wrong"}, {"Authorization": "Bearer wrong"}):
        anonymous = httpx.AsyncClient(base_url=str(sim.base_url), headers=headers)
        async with anonymous:
            response = await anonymous.get("/v2.1/pcr/package-templates")
        assert response.status_code == 401 and "error" in response.json()
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert (await sim.get("/v2.1/pcr/package-templates", headers=bearer)).status_code == 200


async def test_templates_and_control_catalogue(sim: httpx.AsyncClient) -> None:
    templates = (await sim.get("/v2.1/pcr/package-templates", params={"count": 100})).json()
    by_id = {t["id"]: t for t in templates["package_templates"]}
    assert by_id["daily-1gb"]["data_usage_allowance"] == 1_000_000_000
    assert by_id["daily-1gb"]["time_allowance"] == {"duration": 1, "unit": "DAY"}
    assert by_id["compressed-30s"]["time_allowance"] == {"duration": 30, "unit": "SECOND"}
    assert by_id["daily-1gb"]["activation_type"] == "AUTO"
    assert by_id["daily-1gb-manual"]["activation_type"] == "MANUAL"
    assert by_id["daily-3gb"]["throttle_kbps"] == 1000
    one = (await sim.get("/v2.1/pcr/package-templates/daily-1gb-manual")).json()
    assert one == by_id["daily-1gb-manual"]
    products = (await sim.get("/_sim/products")).json()["products"]
    assert {p["id"] for p in products} == set(by_id)
    short = next(p for p in products if p["id"] == "compressed-30s")
    assert short == {
        "id": "compressed-30s",
        "name": short["name"],
        "allowance_bytes": 3_000_000,
        "validity_seconds": 30,
        "reset": "rolling",
        "reset_utc_offset_minutes": 0,
        "throttle_kbps": 128,
        "price_cents": 1,
    }


async def test_control_api_rejects_bad_input(sim: httpx.AsyncClient) -> None:
    bad_luhn = new_iccid()[:-1] + str((int(new_iccid()[-1]) + 1) % 10)
    for path, body in [
        ("/_sim/esims", {"iccids": [bad_luhn]}),
        ("/_sim/faults", {"error_rate": 2}),
        ("/_sim/traffic", {"bytes_per_second": -1}),
    ]:
        response = await sim.post(path, json=body)
        assert response.status_code == 422
        assert set(response.json()["error"]) == {"code", "message"}
    unknown = await sim.post("/_sim/traffic", json={"iccid": new_iccid(), "bytes_per_second": 1})
    assert unknown.status_code == 404


async def test_config_sets_the_activation_latency_of_real_products(
    sim: httpx.AsyncClient,
) -> None:
    before = (await sim.get("/_sim/config")).json()
    assert before["activation_latency_min_seconds"] == 2.0
    fast = {"activation_latency_min_seconds": 0.2, "activation_latency_max_seconds": 0.2}
    assert (await sim.post("/_sim/config", json=fast)).json()[
        "activation_latency_max_seconds"
    ] == 0.2
    try:
        iccid = await enrolled(sim)
        package_id = await order(sim, iccid, "daily-1gb-manual")
        requested_ms = time.time() * 1000
        package = await activated(sim, package_id)
        assert 200 <= package["activated_date"] - requested_ms <= 700
    finally:
        await sim.post("/_sim/config", json={k: before[k] for k in fast})
    inverted = {"activation_latency_min_seconds": 5, "activation_latency_max_seconds": 1}
    assert (await sim.post("/_sim/config", json=inverted)).status_code == 400


async def test_timeline_has_no_gap_with_overlap_and_none_between_packages(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    first = await activated(sim, await order(sim, iccid, "compressed-10s"))
    second = await activated(sim, await order(sim, iccid, "compressed-10s"))
    await sim.post(f"/v2.1/pcr/packages/{first['id']}/terminate")
    overlap = (await sim.get(f"/_sim/timeline/{iccid}")).json()["intervals"]
    assert [(i["state"], i["end"]) for i in overlap] == [("high_speed", None)]

    await sim.post(f"/v2.1/pcr/packages/{second['id']}/terminate")
    await activated(sim, await order(sim, iccid, "compressed-10s"))
    intervals = (await sim.get(f"/_sim/timeline/{iccid}")).json()["intervals"]
    assert [i["state"] for i in intervals] == ["high_speed", "none", "high_speed"]
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(intervals))
    assert intervals[-1]["end"] is None


async def test_usage_alerts_at_50_and_80_percent_then_a_termination_through_sns(
    sim: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    hook, _ = receiver
    iccid = await enrolled(sim)
    package = await activated(sim, await order(sim, iccid, "compressed-10s"))
    # 1 MB allowance at 2 MB/s: 50 % after 0.25 s, 80 % after 0.4 s, used up after 0.5 s,
    # when the carrier ends the package (nothing waits on the SIM: no service after it)
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 2_000_000})

    async def terminated() -> bool:
        return len(hook.of(package["id"])) >= 3

    await wait_for(terminated)
    await asyncio.sleep(0.3)
    events = hook.of(package["id"])
    assert hook.bad_signatures == 0 and hook.confirmations
    assert [e["eventName"] for e in events] == ["PACKAGE_DATA_USAGE_ALERT"] * 2 + [
        "PACKAGE_STATUS_CHANGE"
    ]
    details = [e["eventDetails"] for e in events]
    assert [d["package"]["packageUsedBytes"] for d in details] == [500_000, 800_000, 1_000_000]
    assert {d["package"]["packageTotalBytes"] for d in details} == {1_000_000}
    assert details[0]["sim"] == {"iccid": iccid}
    assert details[0]["packageTemplate"] == {"id": "compressed-10s"}
    # stamped at the exact crossing, not when the 100 ms tick noticed it
    stamps = [e["eventTimestamp"] for e in events]
    assert stamps[1] - stamps[0] == pytest.approx(150, abs=2)
    assert stamps[2] - stamps[1] == pytest.approx(100, abs=2)
    status = details[2]["package"]["status"]
    assert status == {"previousValue": "ACTIVATED", "currentValue": "TERMINATED"}
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 0})


async def test_notifications_are_signed_sns_envelopes_with_sns_headers(
    sim: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    hook, _ = receiver
    package_id = await order(sim, await enrolled(sim), "compressed-10s")
    await sim.post(f"/v2.1/pcr/packages/{package_id}/terminate")

    async def arrived() -> bool:
        return bool(hook.of(package_id))

    await wait_for(arrived)
    with hook.lock:
        headers, body = next(d for d in hook.deliveries if package_id.encode() in d[1])
    envelope = json.loads(body)
    assert set(envelope) == {
        "Type", "MessageId", "TopicArn", "Message", "Timestamp", "SignatureVersion",
        "Signature", "SigningCertURL", "UnsubscribeURL",
    }  # fmt: skip
    assert (envelope["Type"], envelope["SignatureVersion"]) == ("Notification", "2")
    assert headers["content-type"] == "text/plain; charset=UTF-8"
    assert headers["user-agent"] == "Amazon Simple Notification Service Agent"
    assert headers["x-amz-sns-message-type"] == "Notification"
    assert headers["x-amz-sns-message-id"] == envelope["MessageId"]
    assert headers["x-amz-sns-topic-arn"] == envelope["TopicArn"]
    assert headers["x-amz-sns-subscription-arn"].startswith(envelope["TopicArn"] + ":")
    assert envelope["SigningCertURL"].startswith(str(sim.base_url) + "/_sim/sns/")
    assert len(envelope["Timestamp"]) == 24 and envelope["Timestamp"].endswith("Z")
    assert "authorization" not in headers


async def test_duplicate_rate_delivers_the_same_message_twice(
    sim: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    hook, _ = receiver
    iccid = await enrolled(sim)
    package_id = await order(sim, iccid, "compressed-10s-manual")
    await sim.post("/_sim/config", json={"webhook_duplicate_rate": 1.0})
    try:
        await sim.post(f"/v2.1/pcr/packages/{package_id}/terminate")

        async def twice() -> bool:
            return len(hook.of(package_id)) >= 2

        await wait_for(twice)
    finally:
        await sim.post("/_sim/config", json={"webhook_duplicate_rate": 0})
    first, second = hook.of(package_id)
    assert first == second
    assert first["eventDetails"]["package"]["status"]["previousValue"] is None  # never active
    with hook.lock:
        ids = {h["x-amz-sns-message-id"] for h, b in hook.deliveries if package_id.encode() in b}
    assert len(ids) == 1  # one message, delivered twice


async def test_nothing_is_delivered_before_the_subscription_is_confirmed() -> None:
    hook = Receiver(confirm=False)
    with serve(hook.app) as hook_url:
        app = create_app(API_KEY, SECRET, webhook_url=f"{hook_url}/events", seed=3)
        with serve(app) as url:
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": API_KEY}) as s:
                packages = [await order(s, await enrolled(s), "compressed-10s") for _ in "ab"]
                for package_id in packages:
                    await s.post(f"/v2.1/pcr/packages/{package_id}/terminate")

                async def asked() -> bool:
                    return bool(hook.confirmations)

                await wait_for(asked)
                await asyncio.sleep(0.3)
                assert hook.events == []
                [confirmation] = hook.confirmations[:1]
                assert confirmation["SubscribeURL"].startswith(f"{url}/_sim/sns/confirm?Token=")
                confirmed = await s.get(confirmation["SubscribeURL"])
                assert confirmed.status_code == 200 and "SubscriptionArn" in confirmed.text

                async def delivered() -> bool:  # SNS promises no order between messages
                    return sorted(hook.order()) == sorted(packages)

                await wait_for(delivered)
                assert (await s.get(f"{url}/_sim/sns/confirm?Token=nope")).status_code == 404


async def test_raw_message_delivery_posts_the_event_with_basic_credentials() -> None:
    hook = Receiver()
    with serve(hook.app) as hook_url:
        app = create_app(
            API_KEY, SECRET, webhook_url=f"{hook_url}/events", raw_message_delivery=True
        )
        with serve(app) as url:
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": API_KEY}) as s:
                package_id = await order(s, await enrolled(s), "compressed-10s")
                await s.post(f"/v2.1/pcr/packages/{package_id}/terminate")

                async def arrived() -> bool:
                    return bool(hook.of(package_id))

                await wait_for(arrived)
    basic = "Basic " + base64.b64encode(f"telna:{SECRET}".encode()).decode()
    with hook.lock:
        [(confirmation, _), (headers, body)] = hook.deliveries
    assert confirmation["x-amz-sns-message-type"] == "SubscriptionConfirmation"
    assert headers["x-amz-sns-rawdelivery"] == "true" and headers["authorization"] == basic
    assert json.loads(body)["eventName"] == "PACKAGE_STATUS_CHANGE"
    assert headers["x-amz-sns-message-id"]
    with pytest.raises(SimulatorConfigError, match="secret"):
        create_app(API_KEY, "", raw_message_delivery=True)


async def test_signature_version_1_is_sha1_and_verifies() -> None:
    hook = Receiver()
    with serve(hook.app) as hook_url:
        app = create_app(API_KEY, "", webhook_url=f"{hook_url}/events", signature_version="1")
        with serve(app) as url:
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": API_KEY}) as s:
                package_id = await order(s, await enrolled(s), "compressed-10s")
                await s.post(f"/v2.1/pcr/packages/{package_id}/terminate")

                async def arrived() -> bool:
                    return bool(hook.of(package_id))

                await wait_for(arrived)
    with hook.lock:
        assert {json.loads(b)["SignatureVersion"] for _, b in hook.deliveries} == {"1"}
    assert hook.bad_signatures == 0


async def test_error_rate_answers_503_and_does_not_apply(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    await sim.post("/_sim/faults", json={"error_rate": 1.0})
    body = {"sim": iccid, "package_template": "daily-1gb"}
    assert (await sim.post("/v2.1/pcr/packages", json=body)).status_code == 503
    assert (await sim.get("/_sim/faults")).json()["injected"]["error"] >= 1
    await sim.post("/_sim/faults", json={})
    assert (await sim.get("/_sim/ledger", params={"iccid": iccid})).json()["entries"] == []


async def test_lost_response_answers_504_but_the_order_exists(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    await sim.post("/_sim/faults", json={"lose_responses": 1.0})
    body = {"sim": iccid, "package_template": "daily-1gb"}
    lost = await sim.post("/v2.1/pcr/packages", json=body)
    assert lost.status_code == 504 and lost.content == b""
    await sim.post("/_sim/faults", json={})
    packages = (await sim.get("/v2.1/pcr/packages", params={"sim": iccid})).json()["packages"]
    assert [p["package_template"] for p in packages] == ["daily-1gb"]


async def test_rate_limit_answers_429_with_retry_after(sim: httpx.AsyncClient) -> None:
    await sim.post("/_sim/faults", json={"rate_limit_per_second": 2})
    statuses = []
    for _ in range(3):
        response = await sim.get("/v2.1/pcr/package-templates")
        statuses.append(response.status_code)
    assert statuses == [200, 200, 429]
    assert response.headers["Retry-After"] == "1"
    assert (await sim.get("/_sim/products")).status_code == 200  # control API is exempt
    assert (await sim.get("/_sim/faults")).json()["injected"]["rate_limit"] >= 1


async def test_outage_and_latency(sim: httpx.AsyncClient) -> None:
    await sim.post("/_sim/faults", json={"outage_seconds": 0.5})
    assert (await sim.get("/v2.1/pcr/package-templates")).status_code == 503
    assert (await sim.get("/_sim/faults")).json()["outage_seconds"] > 0
    await asyncio.sleep(0.6)
    assert (await sim.get("/v2.1/pcr/package-templates")).status_code == 200

    await sim.post("/_sim/faults", json={"latency_ms": 300})
    started = time.monotonic()
    assert (await sim.get("/v2.1/pcr/package-templates")).status_code == 200
    assert time.monotonic() - started >= 0.3
    injected = (await sim.get("/_sim/faults")).json()["injected"]
    assert injected["outage"] >= 1 and injected["latency"] >= 1


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "telna.json"
    iccid = new_iccid()
    headers = {"Authorization": API_KEY}
    with serve(create_app(API_KEY, SECRET, state_file=state)) as url:
        httpx.post(f"{url}/_sim/esims", json={"iccids": [iccid]})
        body = {"sim": iccid, "package_template": "compressed-600s"}
        package_id = httpx.post(f"{url}/v2.1/pcr/packages", json=body, headers=headers).json()["id"]
        httpx.post(f"{url}/v2.1/pcr/packages/{package_id}/activate", headers=headers)
    assert state.exists()
    time.sleep(0.1)
    with serve(create_app(API_KEY, SECRET, state_file=state)) as url:
        page = httpx.get(f"{url}/v2.1/pcr/packages", params={"sim": iccid}, headers=headers)
        [package] = page.json()["packages"]
        ledger = httpx.get(f"{url}/_sim/ledger", params={"iccid": iccid}).json()["entries"]
    assert (package["id"], package["status"]) == (package_id, "ACTIVE")
    assert [e["action"] for e in ledger][:1] == ["order"]


def test_refuses_to_start_without_an_api_key() -> None:
    with pytest.raises(SimulatorConfigError, match="API key"):
        create_app("", SECRET)


def test_command_line_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as bad_port:
        main(["--port", "http"])
    assert bad_port.value.code != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    monkeypatch.setenv("TELNA__API_KEY", "")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as no_key:
            main(["--port", "18102"])
    finally:
        get_settings.cache_clear()
    assert no_key.value.code != 0
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "API key" in line


async def test_delayed_webhooks_can_overtake_each_other(
    sim: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    """With a delay each delivery waits up to it at random: events arrive out of order."""
    hook, _ = receiver
    iccids = [await enrolled(sim) for _ in range(12)]
    packages = [await order(sim, iccid, "compressed-10s") for iccid in iccids]
    await sim.post("/_sim/config", json={"webhook_delay_seconds": 1.0})
    try:
        for package_id in packages:
            await sim.post(f"/v2.1/pcr/packages/{package_id}/terminate")

        async def all_arrived() -> bool:
            return all(hook.of(p) for p in packages)

        await wait_for(all_arrived)
        counts = (await sim.get("/_sim/config")).json()["webhooks"]
    finally:
        await sim.post("/_sim/config", json={"webhook_delay_seconds": 0})
    arrived = [p for p in hook.order() if p in packages]
    assert sorted(arrived, key=packages.index) == packages
    assert arrived != packages  # 12 deliveries up to 1 s apart: in order by chance 1 in 12!
    assert counts["delayed"] >= 12
