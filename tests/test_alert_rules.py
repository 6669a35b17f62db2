"""The alerting rules (deploy/prometheus/alerts.yml): promtool finds them well formed and
their unit tests pass (each alert fires on a series that should page and stays quiet on
one that should not), Prometheus's own config loads them, every metric they name is one
the worker or the API exports (with the labels they select on), and every alert carries
a duration, a severity and its runbook in the README.

promtool comes from Debian's `prometheus` package (`.ci/run` installs it). Where it is
missing these tests are skipped, except with ``CI`` set, where they fail, as the
PostgreSQL tests do (tests/postgres.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from api.telemetry import Telemetry
from carriers import metered
from services import metrics

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
UNIT_TESTS = sorted(PROMETHEUS.glob("*_test.yml"))
SEVERITIES = {"critical", "warning"}
# Series the rules may name before the product exports them, with their labels.
PENDING: dict[str, frozenset[str]] = {
    # The spend ledger's counter (DESIGN section 11), added on its own branch: value in
    # major units of the currency, incremented once per line bought.
    "esim_spend_total": frozenset({"carrier", "currency"}),
}
# The series of one metric family, as prometheus_client writes them.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
NAME = re.compile(r"(?<![\w:])esim_[a-z0-9_]+(?![\w:])")
SELECTOR = re.compile(r"(?<![\w:])(esim_[a-z0-9_]+)\s*\{([^}]*)\}")
LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not found (Debian's `prometheus` package; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


def _run(*args: str) -> str:
    done = subprocess.run(
        [_promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=240
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported() -> dict[str, frozenset[str]]:
    """Every series name the worker (its registry, the carrier clients' included) and the
    API export, with the label names each carries."""
    collectors = [
        *(v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)),
        *(v for v in vars(metered).values() if isinstance(v, MetricWrapperBase)),
    ]
    telemetry = Telemetry()
    collectors += [v for v in vars(telemetry).values() if isinstance(v, MetricWrapperBase)]
    series: dict[str, frozenset[str]] = {}
    families: set[str] = set()
    for collector in collectors:
        for family in collector.describe():
            families.add(family.name)
            labels = frozenset(collector._labelnames)
            for suffix in SUFFIXES[family.type]:
                if suffix == "_sum" and min(getattr(collector, "_upper_bounds", [0])) < 0:
                    continue  # prometheus_client: no _sum for a histogram with negative buckets
                extra = {"le"} if suffix == "_bucket" else set()
                series[family.name + suffix] = labels | extra
    registered = {
        family.name
        for registry in (metrics.REGISTRY, telemetry.registry)
        for family in registry.collect()
    }
    assert registered == families, "a registered metric this test does not see"
    return series


def unknown_names(texts: list[str], known: dict[str, frozenset[str]]) -> set[str]:
    """``esim_*`` names in ``texts`` that are not series in ``known``, and selectors on a
    label the series does not carry (as ``name{label}``)."""
    found = {name for text in texts for name in NAME.findall(text)} - set(known)
    for text in texts:
        for name, matchers in SELECTOR.findall(text):
            for label in LABEL.findall(matchers):
                if name in known and label not in known[name]:
                    found.add(f"{name}{{{label}}}")
    return found


def test_the_rules_are_well_formed() -> None:
    output = _run("check", "rules", RULES.name)
    assert f"SUCCESS: {len(_rules())} rules found" in output


@pytest.mark.parametrize("unit_tests", UNIT_TESTS, ids=lambda path: path.name)
def test_each_alert_fires_when_it_should_and_stays_quiet_otherwise(unit_tests: Path) -> None:
    tested = yaml.safe_load(unit_tests.read_text())
    assert tested["rule_files"] == [RULES.name]
    assert "SUCCESS" in _run("test", "rules", unit_tests.name)


def test_every_alert_is_unit_tested() -> None:
    tested = {
        case["alertname"]
        for path in UNIT_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in _rules()} == tested


def test_prometheus_loads_the_rules_from_its_config() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert RULES.name in [Path(path).name for path in config["rule_files"]]
    _run("check", "config", "prometheus.yml")


def test_every_metric_the_rules_name_is_one_the_product_exports() -> None:
    texts = [rule["expr"] for rule in _rules()]
    texts += [text for rule in _rules() for text in rule.get("annotations", {}).values()]
    # Once the product exports a pending series, its own labels are the ones checked.
    assert unknown_names(texts, PENDING | exported()) == set()


def test_a_metric_the_product_does_not_export_is_caught() -> None:
    known = exported()
    assert known["esim_rotation_gap_seconds_bucket"] == {"carrier", "le"}
    assert unknown_names(
        [
            "increase(esim_audit_findings[1h])",  # a counter's family name, not its series
            "esim_rotation_gap_seconds > 0",  # a histogram's family name
            'esim_balances{status="Failing"}',  # a label it does not carry
            "rate(esim_carrier_call_errors_total[5m])",
            "esim:spend:forecast",  # a recorded series, not the product's
        ],
        known,
    ) == {"esim_audit_findings", "esim_rotation_gap_seconds", "esim_balances{status}"}


def test_every_alert_has_a_duration_a_severity_and_a_runbook_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", readme, re.MULTILINE)
    }
    for rule in _rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook"] == f"README.md#{name.lower()}", name
        assert name.lower() in anchors, f"README.md has no section {name}"
