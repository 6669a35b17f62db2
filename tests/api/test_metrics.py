"""/metrics: requests by route template and status, balances by state."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from models.db import init_db, session_scope
from models.tables import Balance, Esim
from tests.api.conftest import Api, new_iccid
from tests.api.helpers import offline_api, offline_settings


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_and_balances_by_state(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    init_db(settings.database_url)
    with session_scope(settings.database_url) as session:
        for n, state in enumerate(["Active", "Active", "Paused"]):
            iccid = new_iccid()
            session.add(Esim(iccid=iccid, carrier="telna"))
            session.flush()
            session.add(
                Balance(id=f"bal_{n}", iccid=iccid, carrier="telna", product_id="p",
                        state=state, workflow_id=f"balance-{iccid}")
            )  # fmt: skip
    with offline_api(settings) as url:
        for balance_id in ("bal_0", "bal_1", "bal_nope"):
            httpx.get(f"{url}/v1/balances/{balance_id}", headers=Api.auth())
        httpx.get(f"{url}/v1/balances")
        httpx.post(f"{url}/v1/esims", content=b"x" * 70_000)
        response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def requests(route: str, status: str, method: str = "GET") -> float:
        key = (("method", method), ("route", route), ("status", status))
        return samples.get(("esim_api_requests_total", key), 0)

    assert requests("/v1/balances/{balance_id}", "200") == 2
    assert requests("/v1/balances/{balance_id}", "404") == 1
    assert requests("/v1/balances", "401") == 1
    assert requests("unmatched", "413", "POST") == 1
    assert samples[("esim_balances", (("state", "Active"),))] == 2
    assert samples[("esim_balances", (("state", "Paused"),))] == 1
    assert ("esim_balances", (("state", "Cancelled"),)) not in samples  # history, not counted
