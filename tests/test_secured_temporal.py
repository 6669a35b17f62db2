"""A secured Temporal: the worker, the API and the starter over mTLS; an API key; refusals.

The dev server speaks only plaintext, so a TLS proxy (tests/tls.py) stands in front of
a dev server of this module's own, in a Temporal Cloud-like namespace: with mTLS and a
server certificate that names only ``temporal.test`` (so ``TEMPORAL_TLS__SERVER_NAME``
is needed), or with server TLS and an API key. The product only ever knows the proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config import Settings, TemporalTLSSettings
from models import search
from ports import free_port
from simulators.telna import create_app as create_telna
from temporal_client import TemporalConnectError, connect
from tests.api.conftest import OPERATOR_KEY, SERVICE_KEY, Api, hold_line
from tests.api.helpers import offline_settings
from tests.e2e.harness import API_KEY as TELNA_KEY
from tests.e2e.harness import WEBHOOK_SECRET as TELNA_SECRET
from tests.e2e.harness import iccids
from tests.servers import serve
from tests.temporal_envs import binary
from tests.tls import Authority, Issued, Sniffer, TLSProxy

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "balances.acct-test"  # shaped like a Temporal Cloud namespace: <ns>.<account>
SERVER_NAME = "temporal.test"
TEMPORAL_API_KEY = "tmprl-test-api-key"
TLS_HANDSHAKE = b"\x16\x03"  # a TLS record of type handshake: the ClientHello
H2_PREFACE = b"PRI * HTTP/2.0"  # what a plaintext gRPC client sends first


class Cluster:
    """The dev server and the two secured ways in, with the certificates to use them."""

    def __init__(self, env: WorkflowEnvironment, pki: Path) -> None:
        self.env = env
        self.ca = Authority(pki, "cluster")
        self.worker = self.ca.client("worker")
        self.rogue = Authority(pki, "rogue").client("worker")
        upstream = env.client.service_client.config.target_host
        self.mtls = TLSProxy(upstream, self.ca.server(SERVER_NAME, local=False), self.ca)
        self.keyed = TLSProxy(upstream, self.ca.server("localhost"), api_key=TEMPORAL_API_KEY)

    def mtls_tls(self, client: Issued | None = None, **overrides: Any) -> TemporalTLSSettings:
        client = client or self.worker
        values: dict[str, Any] = {
            "ca_cert": self.ca.path,
            "client_cert": client.cert,
            "client_key": client.key,
            "server_name": SERVER_NAME,
        }
        return TemporalTLSSettings(**(values | overrides))

    def mtls_env(self) -> dict[str, str]:
        """The environment of a worker or starter that reaches Temporal through mTLS."""
        return {
            "TEMPORAL_ADDRESS": self.mtls.address,
            "TEMPORAL_NAMESPACE": NAMESPACE,
            "TEMPORAL_TLS__CA_CERT": str(self.ca.path),
            "TEMPORAL_TLS__CLIENT_CERT": str(self.worker.cert),
            "TEMPORAL_TLS__CLIENT_KEY": str(self.worker.key),
            "TEMPORAL_TLS__SERVER_NAME": SERVER_NAME,
        }


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    env = await WorkflowEnvironment.start_local(
        namespace=NAMESPACE,
        data_converter=pydantic_data_converter,
        dev_server_existing_path=binary("temporal"),
        search_attributes=search.ALL_KEYS,
        dev_server_log_level="error",
        port=free_port(),
    )
    async with env:
        secured = Cluster(env, tmp_path_factory.mktemp("pki"))
        async with secured.mtls, secured.keyed:
            yield secured


async def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the script to its end, the proxies (in this event loop) serving it meanwhile."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, script, *args],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_error_line(output: str, *expected: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output, output
    for part in expected:
        assert part in lines[0], output
    return lines[0]


@contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=ROOT,
            env=os.environ | env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)
    return found


async def test_worker_api_and_starter_rotate_a_balance_over_mtls(
    cluster: Cluster, tmp_path: Path
) -> None:
    """``worker.py`` polls and runs the balance, the API starts and cancels it and
    ``starter.py`` queries it, each knowing Temporal only as the mTLS proxy."""
    database_url = f"sqlite:///{tmp_path / 'balance.db'}"
    task_queue = f"secured-{uuid.uuid4().hex[:8]}"
    settings = offline_settings(
        tmp_path,
        database_url=database_url,
        task_queue=task_queue,
        temporal_address=cluster.mtls.address,
        temporal_namespace=NAMESPACE,
        temporal_tls=cluster.mtls_tls(),
    )
    (iccid,) = iccids(1)
    with serve(create_telna(TELNA_KEY, TELNA_SECRET, seed=3)) as sim:
        env = cluster.mtls_env() | {
            "DATABASE_URL": database_url,
            "TASK_QUEUE": task_queue,
            "TELNA__BASE_URL": sim,
            "TELNA__API_KEY": TELNA_KEY,
            "TELNA__WEBHOOK_SECRET": TELNA_SECRET,
            "WEBBING__BASE_URL": "http://127.0.0.1:9",  # not used here; its sync just fails
            "ESIMGO__BASE_URL": "http://127.0.0.1:9/v2.4",  # nor this one
            "USAGE_POLL_CARRIERS": "",  # nor polled (a failed poll's activity logs a trace)
            "WORKER_METRICS_PORT": "0",
        }
        log = tmp_path / "worker.log"
        with _worker(env, log) as worker, serve(create_app(settings)) as api:

            async def polling() -> bool:
                assert worker.poll() is None, log.read_text()
                return b"worker polling task queue" in log.read_bytes()

            await _until(polling, 30, "the worker to poll")
            async with httpx.AsyncClient(base_url=api, timeout=30) as http:
                (await http.post(f"{sim}/_sim/esims", json={"iccids": [iccid]})).raise_for_status()
                service = {"Authorization": f"Bearer {SERVICE_KEY}"}
                esim = {"iccid": iccid, "carrier": "telna"}
                assert (await http.post("/v1/esims", json=esim, headers=service)).is_success
                policy = {"lead_seconds": 5, "margin_seconds": 3}
                body = {"iccid": iccid, "product_id": "telna-compressed-10s", "policy": policy}
                started = await http.post("/v1/balances", json=body, headers=service)
                assert started.status_code == 201, started.text
                balance_id = started.json()["id"]

                async def rotated() -> bool:
                    got = await http.get(f"/v1/balances/{balance_id}", headers=service)
                    return bool(got.json()["rotations"] >= 1)

                await _until(rotated, 45, "a rotation")
                status = await _run("starter.py", env, "status", iccid)
                assert status.returncode == 0, status.stderr
                assert json.loads(status.stdout)["rotations"] >= 1

                operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
                cancel = await http.post(f"/v1/balances/{balance_id}/cancel", headers=operator)
                assert cancel.status_code == 202, cancel.text
            handle = cluster.env.client.get_workflow_handle(started.json()["workflow_id"])
            await asyncio.wait_for(handle.result(), 30)
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 30) == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    assert cluster.mtls.calls > 0


async def test_a_client_without_the_right_certificate_is_refused(cluster: Cluster) -> None:
    address = cluster.mtls.address

    async def refusal(tls: TemporalTLSSettings) -> str:
        s = Settings(temporal_address=address, temporal_namespace=NAMESPACE, temporal_tls=tls)
        with pytest.raises(TemporalConnectError) as refused:
            await connect(s)
        assert "\n" not in str(refused.value)
        return str(refused.value)

    no_cert = cluster.mtls_tls(client_cert=None, client_key=None)
    assert (await refusal(no_cert)).startswith(f"cannot connect to Temporal at {address} (TLS): ")
    rogue = await refusal(cluster.mtls_tls(cluster.rogue))
    assert rogue.startswith(f"cannot connect to Temporal at {address} (mTLS): ")
    assert "NotValidForName" in await refusal(cluster.mtls_tls(server_name=""))
    assert "UnknownIssuer" in await refusal(TemporalTLSSettings(enabled=True))

    env = cluster.mtls_env()
    del env["TEMPORAL_TLS__CLIENT_CERT"], env["TEMPORAL_TLS__CLIENT_KEY"]
    starter = await _run("starter.py", env, "status", iccids(1)[0])
    assert starter.returncode == 1
    _one_error_line(starter.stderr, f"error: cannot connect to Temporal at {address} (TLS): ")


async def test_the_api_key_is_checked(cluster: Cluster) -> None:
    def keyed(api_key: str) -> Settings:
        return Settings(
            temporal_address=cluster.keyed.address,
            temporal_namespace=NAMESPACE,
            temporal_tls=TemporalTLSSettings(ca_cert=cluster.ca.path),
            temporal_api_key=SecretStr(api_key),
        )

    client = await connect(keyed(TEMPORAL_API_KEY))
    assert (await client.count_workflows()).count >= 0
    assert cluster.keyed.namespaces == {NAMESPACE}  # no rpc_metadata of ours needed
    with pytest.raises(TemporalConnectError) as refused:
        await connect(keyed("tmprl-wrong-key"))
    message = str(refused.value)
    assert message.startswith(
        f"cannot connect to Temporal at {cluster.keyed.address} (TLS, API key)"
    )
    assert "API key not accepted" in message and "tmprl-wrong-key" not in message
    assert cluster.keyed.refused >= 1


async def test_no_plaintext_is_attempted_once_tls_is_configured(
    cluster: Cluster, tmp_path: Path
) -> None:
    ca = cluster.ca.path
    configured = [
        Settings(temporal_tls=TemporalTLSSettings(enabled=True)),
        Settings(temporal_tls=TemporalTLSSettings(ca_cert=ca)),
        Settings(temporal_tls=cluster.mtls_tls()),
        Settings(temporal_api_key=SecretStr(TEMPORAL_API_KEY)),
    ]
    async with Sniffer() as sniffer:
        for s in configured:
            s.temporal_address = sniffer.address
            with pytest.raises(TemporalConnectError):
                await connect(s)
        # The API too, on its first call to Temporal (a usage webhook's signal).
        s = offline_settings(
            tmp_path, temporal_address=sniffer.address, temporal_tls=cluster.mtls_tls()
        )
        iccid = iccids(1)[0]
        hold_line(s.database_url, iccid, "pkg-1")  # its usage alert is a signal
        body = Api.telna_event_for(iccid, "pkg-1")
        with serve(create_app(s)) as api:
            async with httpx.AsyncClient(base_url=api, timeout=30) as http:
                answer = await http.post(
                    "/v1/carriers/telna/events", content=body, headers=Api.raw(body)
                )
        assert answer.status_code == 503
        assert len(sniffer.openings) >= len(configured) + 1
        assert all(opening.startswith(TLS_HANDSHAKE) for opening in sniffer.openings), (
            sniffer.openings
        )

        sniffer.openings.clear()
        with pytest.raises(TemporalConnectError):
            await connect(Settings(temporal_address=sniffer.address))
        assert sniffer.openings[0].startswith(H2_PREFACE)  # the sniffer tells the two apart


async def test_an_unusable_tls_setting_is_one_line_for_worker_and_starter_and_503_in_the_api(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "missing-ca.pem"
    expected = f"TEMPORAL_TLS__CA_CERT: cannot read {missing}: No such file or directory"
    env = cluster.mtls_env() | {
        "TEMPORAL_TLS__CA_CERT": str(missing),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'balance.db'}",
        "WORKER_METRICS_PORT": "0",
        "WORKER_LOG_LEVEL": "WARNING",  # as `make run` has it: no migration chatter
    }
    starter = await _run("starter.py", env, "status", iccids(1)[0])
    assert starter.returncode == 1
    assert _one_error_line(starter.stderr) == f"error: {expected}"
    worker = await _run("worker.py", env)
    assert worker.returncode == 1
    assert _one_error_line(worker.stderr + worker.stdout).endswith(f"worker {expected}")

    s = offline_settings(tmp_path, temporal_tls=TemporalTLSSettings(ca_cert=missing))
    iccid = iccids(1)[0]
    hold_line(s.database_url, iccid, "pkg-1")  # its usage alert is a signal
    body = Api.telna_event_for(iccid, "pkg-1")
    with serve(create_app(s)) as api:
        assert httpx.get(f"{api}/healthz").json() == {"status": "ok"}
        answer = httpx.post(f"{api}/v1/carriers/telna/events", content=body, headers=Api.raw(body))
    assert answer.status_code == 503
    assert answer.json()["error"] == {
        "code": "temporal_unavailable",
        "message": "Temporal is unreachable",
    }
    assert [r.getMessage() for r in caplog.records if r.name == "api"][0] == expected
