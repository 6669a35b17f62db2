"""docker-compose.yml without a Docker engine: it follows the Compose specification, runs
every part of production, waits on health or completion, pins its third-party images,
every command it gives our image exists in that image and takes the flags it is given,
the simulators' control API is not reachable from outside, and Prometheus scrapes the API
and every worker with the alerts loaded."""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator

import stack
from config import Settings, env_table, get_settings
from simulators import esimgo, telna, webbing
from simulators.control import CONTROL_TOKEN_ENV
from tests.servers import serve

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP = {name: s for name, s in SERVICES.items() if "build" in s}
THIRD_PARTY = {name: s for name, s in SERVICES.items() if "build" not in s}
SIMULATORS = {
    n: s
    for n, s in APP.items()
    if s["command"][1:3]
    in (["-m", "simulators.telna"], ["-m", "simulators.webbing"], ["-m", "simulators.esimgo"])
}
# The simulators' own settings, beside the product's they read.
SIMULATOR_ENV = {CONTROL_TOKEN_ENV}
ONE_SHOT_RESTARTS = re.compile(r"^(no|on-failure(:\d+)?)$")
# A version tag, not `latest` (Prometheus's tags begin with `v`).
PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+:v?\d[\w.-]*$")
# The spend alerts forecast from the 8 days before now (deploy/prometheus/alerts.yml).
ALERT_HISTORY_DAYS = 8


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip().removeprefix("**/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in patterns)


def _module_file(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.exists():
            return candidate
    return None


def _help(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (module, done.stderr)
    return done.stdout


def test_the_compose_file_follows_the_compose_specification() -> None:
    validator = Draft202012Validator(json.loads(SCHEMA.read_text()))
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(COMPOSE)
    ]
    assert errors == []


def test_it_runs_every_part_of_production() -> None:
    assert set(SERVICES) == {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "migrate",
        "api",
        "worker",
        "telna-sim",
        "webbing-sim",
        "esimgo-sim",
        "prometheus",
    }
    assert SERVICES["worker"]["deploy"]["replicas"] == 2
    assert SERVICES["temporal"]["environment"]["DB"] == "postgres12"
    attributes = SERVICES["temporal-namespace"]["environment"]["SEARCH_ATTRIBUTES"].split()
    assert attributes == stack.SEARCH_ATTRIBUTES
    for name in APP:
        env = SERVICES[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["AUTO_MIGRATE"] == "false", name  # `migrate` runs first; the app checks


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for target, how in service.get("depends_on", {}).items():
            assert target in SERVICES, (name, target)
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], (name, target)
            else:
                assert condition == "service_completed_successfully", (name, target)
                assert ONE_SHOT_RESTARTS.match(SERVICES[target]["restart"]), target


def test_third_party_images_are_pinned() -> None:
    for name, service in THIRD_PARTY.items():
        assert PINNED_IMAGE.match(service["image"]), (name, service["image"])
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert base is not None and PINNED_IMAGE.match(base.group(1)), base


def test_files_mounted_from_the_repo_exist_and_scripts_parse() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("./"):
                continue
            path = ROOT / source
            assert path.is_file(), (name, source)
            if path.suffix == ".sh":
                done = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
                assert done.returncode == 0, (source, done.stderr)


@pytest.mark.parametrize("name", sorted(APP))
def test_each_app_command_exists_in_the_image(name: str) -> None:
    command: list[str] = SERVICES[name]["command"]
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert command[0] == "python", command
    if command[1] != "-m":
        script = command[1]
        assert (ROOT / script).is_file() and not _dockerignored(script), script
        return
    module, args = command[2], command[3:]
    own = _module_file(module)
    if own is not None:
        assert not _dockerignored(str(own.relative_to(ROOT))), own
    else:  # a dependency the image installs from pyproject.toml
        assert any(re.match(rf"{module}\b", dep) for dep in dependencies), module
    options = _help(module)
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, (name, arg)
    for arg in (a for a in args if ":" in a and not a.startswith("-")):  # uvicorn's app
        target, attribute = arg.split(":")
        path = _module_file(target)
        assert path is not None and not _dockerignored(str(path.relative_to(ROOT))), arg
        assert re.search(rf"^def {attribute}\(", path.read_text(), re.MULTILINE), arg
    if module == "alembic":
        assert (ROOT / "alembic.ini").is_file() and (ROOT / "migrations" / "env.py").is_file()


@pytest.mark.parametrize("name", sorted(n for n in APP if "healthcheck" in SERVICES[n]))
def test_app_healthchecks_ask_the_port_the_service_listens_on(name: str) -> None:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    compile(test[3], name, "exec")
    port = next(a.split("=")[1] for a in SERVICES[name]["command"] if a.startswith("--port="))
    assert f"127.0.0.1:{port}/" in test[3]


def test_app_environment_names_only_known_settings() -> None:
    known = set(re.findall(r"^\| `([A-Z_]+)`", env_table(), re.MULTILINE))
    for name in APP:
        unknown = set(SERVICES[name]["environment"]) - known
        if name in SIMULATORS:
            unknown -= SIMULATOR_ENV
        assert unknown == set(), (name, unknown)


def test_the_esimgo_simulator_calls_back_the_api_with_the_key_the_worker_sends() -> None:
    sim, worker = SERVICES["esimgo-sim"], SERVICES["worker"]
    assert "--callback-url=http://api:8000/v1/carriers/esimgo/events" in sim["command"]
    assert worker["environment"]["ESIMGO__BASE_URL"] == "http://esimgo-sim:8103/v2.4"
    assert sim["environment"]["ESIMGO__API_KEY"] == worker["environment"]["ESIMGO__API_KEY"]
    assert SERVICES["api"]["environment"]["ESIMGO__API_KEY"].startswith("${ESIMGO__API_KEY:?")
    assert worker["depends_on"]["esimgo-sim"] == {"condition": "service_healthy"}


def test_prometheus_scrapes_the_api_and_every_worker_with_the_alerts_loaded() -> None:
    prometheus = SERVICES["prometheus"]
    mounted = {
        target: ROOT / source
        for source, target, *_ in (v.split(":") for v in prometheus["volumes"])
        if source.startswith("./")
    }
    flags = dict(a.removeprefix("--").split("=", 1) for a in prometheus["command"])
    config_file = flags["config.file"]
    config = yaml.safe_load(mounted[config_file].read_text())
    rules = [posixpath.join(posixpath.dirname(config_file), f) for f in config["rule_files"]]
    assert [mounted[path] for path in rules] == [ROOT / "deploy" / "prometheus" / "alerts.yml"]
    retention = re.fullmatch(r"(\d+)d", flags["storage.tsdb.retention.time"])
    assert retention is not None and int(retention.group(1)) > ALERT_HISTORY_DAYS
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_port = next(a.split("=")[1] for a in SERVICES["api"]["command"] if a.startswith("--port="))
    assert jobs["esim-api"]["static_configs"] == [{"targets": [f"api:{api_port}"]}]
    # Every replica, each found by the service's name, on the port its worker serves.
    worker = SERVICES["worker"]["environment"]
    port = worker.get("WORKER_METRICS_PORT", Settings.model_fields["worker_metrics_port"].default)
    (found,) = jobs["esim-worker"]["dns_sd_configs"]
    assert (found["names"], found["type"], found["port"]) == (["worker"], "A", int(port))
    assert worker["WORKER_METRICS_HOST"] == "0.0.0.0"  # not loopback: scraped from outside
    for job in jobs.values():
        assert job.get("metrics_path", "/metrics") == "/metrics"


def test_readme_env_table_is_generated_from_settings() -> None:
    """If this fails: `python -m config --env-docs` and paste it into the README."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- env-table -->\n(.*?)<!-- /env-table -->", readme, re.DOTALL)
    assert found is not None, "README.md has no <!-- env-table --> block"
    assert found.group(1) == env_table()


def test_the_simulators_control_api_is_not_reachable_from_outside() -> None:
    """No simulator port is published (the worker and the API reach them on the compose
    network), and their /_sim needs a token only they are given: a port published by an
    override file still refuses whoever lacks it."""
    assert set(SIMULATORS) == {"telna-sim", "webbing-sim", "esimgo-sim"}
    for name, service in SIMULATORS.items():
        assert "ports" not in service and "network_mode" not in service, name
        token = service["environment"].get(CONTROL_TOKEN_ENV, "")
        assert token.startswith(f"${{{CONTROL_TOKEN_ENV}:?"), (name, token)  # set, not empty
        assert f"os.environ['{CONTROL_TOKEN_ENV}']" in service["healthcheck"]["test"][3], name
    for name, service in SERVICES.items():
        if name not in SIMULATORS:
            assert CONTROL_TOKEN_ENV not in service.get("environment", {}), name


def _interpolated(environment: dict[str, str]) -> dict[str, str]:
    """The service's environment with each required ``${NAME:?...}`` given a value."""
    return {
        key: re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: f"compose-{m.group(1).lower()}", value)
        for key, value in environment.items()
    }


@pytest.mark.parametrize("name", sorted(SIMULATORS))
async def test_a_simulator_as_compose_runs_it_refuses_control_without_the_token(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _interpolated(SERVICES[name]["environment"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TELNA_SIM_WEBHOOK_URL", "")  # no API to post to here
    monkeypatch.setenv("ESIMGO_SIM_CALLBACK_URL", "")
    get_settings.cache_clear()
    try:
        module = {
            "simulators.telna": telna,
            "simulators.webbing": webbing,
            "simulators.esimgo": esimgo,
        }
        app = module[SERVICES[name]["command"][2]].create_app_from_settings()
    finally:
        get_settings.cache_clear()
    bearer = {"Authorization": f"Bearer {env.get(CONTROL_TOKEN_ENV, '')}"}
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            refused = await client.post("/_sim/faults", json={"outage_seconds": 60})
            assert refused.status_code == 401
            assert (await client.get("/_sim/products", headers=bearer)).status_code == 200
