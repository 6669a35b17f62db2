"""/metrics from the ledger: audit findings by kind and the notification backlog."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from activities.outbox import Cursor
from models.db import init_db, session_scope
from models.tables import LineEvent
from tests.api.helpers import offline_api, offline_settings


def _event(n: int, kind: str, seq: int | None = 1) -> LineEvent:
    return LineEvent(
        key=f"bal_m:{n}", balance_id="bal_m", seq=seq, kind=kind, actor="audit",
        at=datetime.now(UTC), detail={},
    )  # fmt: skip


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_audit_findings_by_kind_and_undelivered_notifications(
    tmp_path: Path,
) -> None:
    settings = offline_settings(tmp_path)
    init_db(settings.database_url)
    kinds = ["audit_ghost_line", "audit_ghost_line", "audit_missing_workflow", "activated"]
    with session_scope(settings.database_url) as session:
        session.add_all(_event(n, kind) for n, kind in enumerate(kinds))
    with offline_api(settings) as url:
        samples = _scrape(url)
        assert samples[("esim_audit_findings_recorded", (("kind", "ghost_line"),))] == 2
        assert samples[("esim_audit_findings_recorded", (("kind", "missing_workflow"),))] == 1
        assert ("esim_audit_findings_recorded", (("kind", "activated"),)) not in samples
        assert samples[("esim_notifications_pending", ())] == 0  # never turned on
        cursor = Cursor(settings.database_url, "test", 30)
        start = cursor.claim()
        assert start == 4
        with session_scope(settings.database_url) as session:
            session.add_all(
                [_event(4, "activated"), _event(5, "ordered"), _event(6, "cancelled", None),
                 _event(7, "failing", None), _event(8, "audit_ghost_line")]
            )  # fmt: skip
        samples = _scrape(url)
        assert samples[("esim_notifications_pending", ())] == 2
        assert samples[("esim_audit_findings_recorded", (("kind", "ghost_line"),))] == 3
