"""Settings: one place for every knob, read from the environment (nested with ``__``).

Read them through :func:`get_settings`, never at import time, so tests and commands can
change the environment first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path(__file__).resolve().parent / ".data"
# An empty variable (`NAME=` in a .env or compose file) is unset, not the current directory.
FilePath = Annotated[Path | None, BeforeValidator(lambda value: value or None)]


class TelnaSettings(BaseModel):
    """The Telna-like carrier: REST/JSON, raw API key, webhooks through AWS SNS."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    base_url: str = "http://127.0.0.1:8102"
    """Base URL of the Telna API (or its simulator)."""
    api_key: SecretStr = SecretStr("")
    """Telna API key, sent in `Authorization` as `auth_scheme` says."""
    auth_scheme: Literal["raw", "bearer"] = "raw"
    """`raw`: `Authorization: <key>`; `bearer`: `Authorization: Bearer <key>` (Telna's
    public record shows both; `python -m carriers.doctor telna` checks the one chosen)."""
    webhook_secret: SecretStr = SecretStr("")
    """Password of Telna's SNS subscription URL (`https://telna:<it>@...`): SNS raw
    deliveries must carry it as HTTP Basic (wrapped ones are signed by SNS instead)."""
    sns_hosts: str = "https://sns.*.amazonaws.com"
    """Comma-separated origins (`scheme://host[:port]`, `*` one DNS label) whose SNS
    signing certificates are trusted and whose SubscribeURLs are visited."""
    rate_limit_per_second: float = 0.0
    """Requests/s one worker process sends to Telna at most (0: none); N workers: limit/N."""
    in_doubt_seconds: float = Field(default=60.0, gt=0)
    """Seconds Telna may take to commit a request: an unanswered order is held so long."""
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    """ISO 4217 code of the template prices (the record names none: the account's word)."""


class WebbingSettings(BaseModel):
    """The Webbing-like carrier: SOAP 1.1, credentials in the SOAP header."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    base_url: str = "http://127.0.0.1:8101"
    """Base URL of the Webbing SOAP service (or its simulator)."""
    username: str = ""
    """Webbing account user name (SOAP header)."""
    password: SecretStr = SecretStr("")
    """Webbing account password (SOAP header)."""
    wskey: SecretStr = SecretStr("")
    """Webbing web-service key (SOAP header)."""
    rate_limit_per_second: float = 0.0
    """Requests/s one worker process sends to Webbing at most (0: none); N workers: limit/N."""
    in_doubt_seconds: float = Field(default=60.0, gt=0)
    """Seconds Webbing may take to commit a request: an unanswered order is held so long."""
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    """ISO 4217 code of the product prices (the record names none: the account's word)."""


class EsimGoSettings(BaseModel):
    """The eSIM Go-like carrier: REST/JSON API v2.4, `X-API-Key`, signed usage callbacks."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    base_url: str = "http://127.0.0.1:8103/v2.4"
    """Base URL of eSIM Go's API, version included (or its simulator's)."""
    api_key: SecretStr = SecretStr("")
    """eSIM Go API key, sent in `X-API-Key`; it also keys the usage callbacks' HMAC."""
    refund_to_balance: bool = False
    """Revokes ask eSIM Go to credit an unused bundle to the balance (else: to inventory)."""
    rate_limit_per_second: float = Field(default=10.0, ge=0)
    """Requests/s one worker process sends to eSIM Go at most (0: none); N workers: limit/N."""
    in_doubt_seconds: float = Field(default=60.0, gt=0)
    """Seconds eSIM Go may take to commit a request: an unanswered order is held so long."""
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    """ISO 4217 code of catalogue prices (orders say theirs; the doctor compares the two)."""


class TemporalTLSSettings(BaseModel):
    """TLS to the Temporal frontend: a cluster with mTLS, or Temporal Cloud."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    enabled: bool = False
    """TLS with no file set (server checked against system CAs); a file or API key turns it on."""
    ca_cert: FilePath = None
    """Path of a PEM file: the CA of Temporal's server certificate (unset: the system CAs)."""
    client_cert: FilePath = None
    """Path of a PEM file: the client certificate (chain) for mTLS, with the key below."""
    client_key: FilePath = None
    """Path of a PEM file: the client certificate's private key (unencrypted)."""
    server_name: str = ""
    """Name the server certificate carries (also sent as SNI) if not the host of the address."""


class ActionLimits(BaseModel):
    """How often operators may buy a line by hand (resume, rotate): per balance and per
    API key, in a fixed window. 0 lifts a limit."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    per_balance: int = Field(default=6, ge=0)
    """Resumes and rotations one balance takes per window (more: 429 with Retry-After)."""
    per_key: int = Field(default=60, ge=0)
    """Resumes and rotations one API key (or its dashboard sign-in) sends per window."""
    window_seconds: int = Field(default=3600, ge=1)
    """The window of those limits, in seconds, counted from the epoch."""


class Settings(BaseSettings):
    """Every setting of the product. Environment variables win over defaults."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", extra="ignore", use_attribute_docstrings=True
    )

    database_url: str = Field(
        default=f"sqlite:///{DATA_DIR / 'esim_balance.db'}",
        description="SQLAlchemy URL of the product database (SQLite or PostgreSQL).",
    )
    auto_migrate: bool = Field(
        default=True,
        description=(
            "Upgrade the database schema to the latest migration at start; when false, "
            "refuse to start on a database behind it (run `alembic upgrade head` first)."
        ),
    )
    temporal_address: str = Field(default="127.0.0.1:7233", description="Temporal frontend.")
    temporal_namespace: str = "default"
    """Temporal namespace of the Balance workflows."""
    temporal_tls: TemporalTLSSettings = TemporalTLSSettings()
    temporal_api_key: SecretStr = SecretStr("")
    """Temporal API key (Temporal Cloud), sent as `Authorization: Bearer`; always over TLS."""
    task_queue: str = "esim-balance"
    """Task queue shared by every worker process."""
    temporal_ui_url: str = "http://127.0.0.1:8233"
    """Temporal Web UI as operators reach it; the dashboard links each balance's workflow there."""
    dashboard_carrier_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        description=(
            "Seconds the dashboard keeps a carrier's answer for an eSIM's lines (read by a "
            "worker): one carrier read per eSIM and period, whatever the viewers."
        ),
    )
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated `role:key` pairs; roles are `operator` and `service`.",
    )

    telna: TelnaSettings = TelnaSettings()
    webbing: WebbingSettings = WebbingSettings()
    esimgo: EsimGoSettings = EsimGoSettings()
    action_limits: ActionLimits = ActionLimits()

    temporal_port: int = 7233
    """`make run`: port of the Temporal dev server."""
    temporal_ui_port: int = 8233
    """`make run`: port of the Temporal Web UI."""
    api_port: int = 8000
    """Port of the HTTP API (`make run`; also the Telna webhook URL's port)."""
    webbing_port: int = 8101
    """`make run`: port of the Webbing-like simulator."""
    telna_port: int = 8102
    """`make run`: port of the Telna-like simulator."""
    esimgo_port: int = 8103
    """`make run`: port of the eSIM Go-like simulator."""

    carrier_timeout_seconds: float = Field(
        default=10.0, description="Timeout of one HTTP call to a carrier."
    )
    worker_max_concurrent_activities: int = 200
    """Activities one worker process runs at once."""
    worker_activity_threads: int = Field(default=200, ge=1)
    """Threads for the synchronous (database) activities of one worker process."""
    worker_max_concurrent_workflow_tasks: int = Field(default=100, ge=2)
    """Workflow tasks one worker process works on at once (Temporal's default, 100)."""
    worker_max_cached_workflows: int = 2_000
    """Workflows one worker keeps cached; one asleep beyond them replays its run on waking."""
    # Off by default: a worker replays every balance it cannot cache at a boundary, and a
    # replay costs half without the sandbox. The e2e tests and the replay tests run the
    # workflows in it, which is where it catches a non-deterministic call.
    worker_workflow_sandbox: bool = False
    """Run workflow code in Temporal's sandbox (the tests do; off, a replay costs half)."""
    worker_sticky_timeout_seconds: float = Field(default=5.0, gt=0)
    """Seconds a balance's task waits for the worker caching it; then any worker takes it."""
    worker_metrics_port: int = 9464
    """Port where the worker serves Prometheus metrics; 0 turns it off."""
    worker_metrics_host: str = "127.0.0.1"
    """Address the worker's metrics listen on (`0.0.0.0` for a Prometheus in another container)."""
    worker_log_level: str = "INFO"
    """Level of the worker's log (`make run` sets WARNING unless `--verbose`)."""

    usage_poll_carriers: str = "webbing"
    """Comma-separated carriers without usage webhooks, whose usage a Schedule polls."""
    usage_poll_interval_seconds: float = 60.0
    """How often the usage poller reads a polled carrier's usage."""
    audit_interval_seconds: float = 300.0
    """How often the audit compares workflows, database and carriers."""

    notify_url: str = ""
    """Where signed notifications (line activated/ended, failing, usage, cost cap) are
    posted; empty turns them off."""
    notify_secret: SecretStr = SecretStr("")
    """Shared secret that signs notifications (`Esim-Signature: t=...,v1=HMAC-SHA256`)."""
    notify_max_attempts: int = 10
    """Deliveries of one notification before it is given up (and counted as dropped)."""

    def telna_webhook_url(self) -> str:
        """Where the Telna-like carrier posts its usage and status events."""
        return f"http://127.0.0.1:{self.api_port}/v1/carriers/telna/events"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def env_table() -> str:
    """The Markdown table of every environment variable, its default and meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            for sub, subfield in nested.model_fields.items():
                rows.append(_env_row(f"{name}__{sub}", subfield.default, subfield.description))
        else:
            rows.append(_env_row(name, field.default, field.description))
    return "\n".join(rows) + "\n"


def _env_row(name: str, default: object, description: str | None) -> str:
    if isinstance(default, SecretStr):
        shown = "(secret, unset)" if not default.get_secret_value() else "(secret)"
    elif default is None:
        shown = "(unset)"
    else:
        value = str(default).lower() if isinstance(default, bool) else str(default)
        value = value.replace(str(DATA_DIR), ".data")
        shown = f"`{value}`" if value else "(empty)"
    return f"| `{name.upper()}` | {shown} | {description or ''} |"


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Settings of eSIM Balance.")
    parser.add_argument("--env-docs", action="store_true", help="print the env var table")
    if parser.parse_args().env_docs:
        sys.stdout.write(env_table())
    else:
        parser.print_help()
