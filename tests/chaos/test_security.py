"""The soak's security checks on their own: the probe finds every route refusing, and
finds a hole when there is one; the secret scan finds planted secrets, encoded too."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote

import pytest
from fastapi import FastAPI, params
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from api import deps, telna_events
from api.app import create_app
from api.auth import Caller, Role
from api.dashboard import session as dashboard_session
from config import Settings
from models import search
from tests.api.conftest import OPERATOR_KEY, SERVICE_KEY, WEBHOOK_SECRET
from tests.api.helpers import NoTemporal, offline_api, offline_settings
from tests.chaos.security import (
    PROBE_ICCID,
    Probe,
    app_routes,
    find_secrets,
    probe_refusals,
    search_attribute_texts,
)

pytestmark = pytest.mark.timeout(60)

WEBBING_USER = "webbing-user-0123456789"
WEBBING_PASSWORD = "p@ss word/with+odd&chars"
SECRETS = {
    "API_KEYS": f"operator:{OPERATOR_KEY},service:{SERVICE_KEY}",
    "TELNA__WEBHOOK_SECRET": WEBHOOK_SECRET,
    "WEBBING__USERNAME": WEBBING_USER,
    "WEBBING__PASSWORD": WEBBING_PASSWORD,
    "WEBBING__WSKEY": "short",  # under 8 characters: ignored
}


async def probe(settings: Settings, app: FastAPI | None = None) -> Probe:
    with offline_api(settings, app) as url:
        return await probe_refusals(
            url,
            valid_key=OPERATOR_KEY,
            telna_webhook_secret=WEBHOOK_SECRET,
            api_keys=settings.api_keys.get_secret_value(),
        )


def dependency(annotated: Any) -> Callable[..., Any]:
    """The function behind an ``Annotated[..., Depends(f)]`` dependency type."""
    found = next(a for a in get_args(annotated) if isinstance(a, params.Depends)).dependency
    assert found is not None
    return found


async def test_every_protected_route_refuses_a_caller_without_valid_credentials(
    tmp_path: Path,
) -> None:
    result = await probe(offline_settings(tmp_path))
    assert result.problems == []
    assert result.skipped == []
    shown, hidden = app_routes()
    covered = {line.split(" (")[0] for line in result.routes}
    assert covered == {str(r) for r in shown + hidden}
    assert "POST /v1/carriers/telna/events (signed)" in result.routes
    assert "POST /dashboard/balances/{balance_id}/{action} (dashboard action)" in result.routes
    assert "PATCH /v1/balances/{balance_id} (bearer, operator only)" in result.routes
    # 12 bearer routes x 9 cases + 5 read-only cases, 6 webhook cases, 2 pages x 6 cases,
    # 4 actions x 9 cases, 1 sign-in: the count moves only with the routes or the cases.
    assert result.refusals >= 150
    assert result.requests == len(result.bodies) > result.refusals
    assert find_secrets(SECRETS, result.texts()) == []


async def test_a_route_whose_key_check_is_bypassed_is_reported(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    app = create_app(settings, client=NoTemporal())  # type: ignore[arg-type]
    app.dependency_overrides[dependency(deps.ReaderDep)] = lambda: Caller(Role.service, "test")
    result = await probe(settings, app)
    failing = {line.split(" [")[0].split(" (")[0] for line in result.problems}
    assert failing == {
        "GET /v1/esims/{iccid}",
        "GET /v1/products",
        "GET /v1/balances",
        "GET /v1/balances/{balance_id}",
        "GET /v1/continuity",
        "GET /v1/spend",
    }
    refused_not = "GET /v1/products [no credentials]: answered 200"
    assert any(line.startswith(refused_not) for line in result.problems)


async def test_a_webhook_taken_without_its_signature_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telna_events, "basic_password_matches", lambda *args: True)
    result = await probe(offline_settings(tmp_path))
    failing = {line.split(" [")[1].split("]")[0] for line in result.problems}
    assert all(line.startswith("POST /v1/carriers/telna/events ") for line in result.problems)
    assert {
        "raw delivery without credentials",
        "raw delivery under another secret",
        "bearer key instead of credentials",
    } <= failing
    assert not any(line.startswith("control:") for line in result.problems)


async def test_a_dashboard_action_without_its_csrf_check_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_session, "csrf_ok", lambda *args: True)
    result = await probe(offline_settings(tmp_path))
    assert result.problems
    action = "POST /dashboard/balances/{balance_id}/{action} "
    assert all(line.startswith(action) for line in result.problems)
    cases = {line.split(" [")[1].split("]")[0] for line in result.problems}
    assert "operator session, no CSRF token" in cases
    assert "read-only session" not in cases  # the role check still holds


async def test_a_wrong_key_or_webhook_secret_given_to_the_probe_is_reported(
    tmp_path: Path,
) -> None:
    with offline_api(offline_settings(tmp_path)) as url:
        result = await probe_refusals(
            url, valid_key="not-a-key-at-all", telna_webhook_secret="not-the-secret"
        )
    controls = [line for line in result.problems if line.startswith("control:")]
    assert len(controls) == 3, result.problems
    assert result.skipped


def test_secrets_are_found_by_name_as_is_and_encoded() -> None:
    basic = base64.b64encode(f"{WEBBING_USER}:{WEBBING_PASSWORD}".encode()).decode()
    payload = base64.b64encode(json.dumps({"token": WEBHOOK_SECRET}).encode()).decode()
    texts = {
        "api.log": f"GET /v1/products Authorization: Bearer {SERVICE_KEY}\n",
        "worker.log": f"POST /soap Authorization: Basic {basic}\n",
        "error body": f'{{"error": {{"message": "bad {quote(WEBBING_PASSWORD, safe="")}"}}}}',
        "search attributes": f"Iccid={PROBE_ICCID}\nNote={payload}",
        "short": "short short short",
        "clean": "nothing to see: operator:changeme, Bearer wrong-key-value",
    }
    found = find_secrets(SECRETS, texts)
    assert found == [
        "api.log: API_KEYS (service key) (as is)",
        # Basic credentials: the pair, and each part inside it at its own offset.
        "worker.log: WEBBING__PASSWORD (base64)",
        "worker.log: WEBBING__USERNAME (base64)",
        "worker.log: WEBBING__USERNAME:WEBBING__PASSWORD (base64)",
        "error body: WEBBING__PASSWORD (URL-encoded)",
        "search attributes: TELNA__WEBHOOK_SECRET (base64)",
    ]
    for line in found:
        for value in (SERVICE_KEY, WEBBING_PASSWORD, WEBHOOK_SECRET, basic):
            assert value not in line
    assert find_secrets(SECRETS, {"clean": texts["clean"], "short": texts["short"]}) == []


async def test_search_attributes_are_rendered_per_workflow(dev_env: WorkflowEnvironment) -> None:
    client = dev_env.client
    queue = f"security-{uuid.uuid4().hex[:8]}"
    workflow_id = f"probe-{uuid.uuid4().hex[:8]}"
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(search.ICCID, PROBE_ICCID),
            SearchAttributePair(search.CARRIER, "telna"),
            SearchAttributePair(search.LINE_SEQ, 3),
        ]
    )
    handle = await client.start_workflow(
        "SecurityProbeWorkflow", id=workflow_id, task_queue=queue, search_attributes=attributes
    )
    try:
        texts: dict[str, str] = {}
        for _ in range(100):  # visibility follows the start shortly
            texts = await search_attribute_texts(client, f'TaskQueue = "{queue}"')
            if texts:
                break
            await asyncio.sleep(0.1)
        assert list(texts) == [workflow_id]
        lines = texts[workflow_id].splitlines()
        assert f"Iccid={PROBE_ICCID}" in lines and "Carrier=telna" in lines and "LineSeq=3" in lines
        assert find_secrets({"ICCID-as-secret": PROBE_ICCID}, texts) == [
            f"{workflow_id}: ICCID-as-secret (as is)"
        ]
    finally:
        await handle.terminate("test over")
