"""Settings: one place for every knob, read from the environment (nested with ``__``).

Read them through :func:`get_settings`, never at import time, so tests and commands can
change the environment first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DATA_DIR = Path(__file__).resolve().parent / ".data"


class TelnaSettings(BaseModel):
    """The Telna-like carrier: REST/JSON, raw API key, signed usage webhooks."""

    base_url: str = "http://127.0.0.1:8102"
    api_key: SecretStr = SecretStr("")
    webhook_secret: SecretStr = SecretStr("")


class WebbingSettings(BaseModel):
    """The Webbing-like carrier: SOAP 1.1, credentials in the SOAP header."""

    base_url: str = "http://127.0.0.1:8101"
    username: str = ""
    password: SecretStr = SecretStr("")
    wskey: SecretStr = SecretStr("")


class Settings(BaseSettings):
    """Every setting of the product. Environment variables win over defaults."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DATA_DIR / 'esim_balance.db'}",
        description="SQLAlchemy URL of the product database (SQLite or PostgreSQL).",
    )
    temporal_address: str = Field(default="127.0.0.1:7233", description="Temporal frontend.")
    temporal_namespace: str = "default"
    task_queue: str = "esim-balance"
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated `role:key` pairs; roles are `operator` and `service`.",
    )

    telna: TelnaSettings = TelnaSettings()
    webbing: WebbingSettings = WebbingSettings()

    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    api_port: int = 8000
    webbing_port: int = 8101
    telna_port: int = 8102

    carrier_timeout_seconds: float = Field(
        default=10.0, description="Timeout of one HTTP call to a carrier."
    )
    worker_max_concurrent_activities: int = 200
    worker_max_cached_workflows: int = 10_000

    def telna_webhook_url(self) -> str:
        """Where the Telna-like carrier posts its usage and status events."""
        return f"http://127.0.0.1:{self.api_port}/v1/carriers/telna/events"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
