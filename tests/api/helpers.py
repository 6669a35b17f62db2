"""An API app served without Temporal, for what needs only HTTP and the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from config import Settings, TelnaSettings
from tests.api.conftest import OPERATOR_KEY, SERVICE_KEY, WEBHOOK_SECRET
from tests.servers import serve


class NoTemporal:
    """Stands in for the Temporal client where a test must never reach Temporal."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Temporal was called: {name}")


def offline_settings(tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp / 'offline.db'}",
        "api_keys": SecretStr(f"operator:{OPERATOR_KEY},service:{SERVICE_KEY}"),
        "telna": TelnaSettings(webhook_secret=SecretStr(WEBHOOK_SECRET)),
    }
    return Settings(**(values | overrides))


@contextmanager
def offline_api(settings: Settings, app: FastAPI | None = None) -> Iterator[str]:
    """Serves the app (``create_app(settings)`` unless given) with no Temporal client."""
    with serve(app or create_app(settings, client=NoTemporal())) as url:  # type: ignore[arg-type]
        yield url
