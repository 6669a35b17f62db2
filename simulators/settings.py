"""What the simulators read from the environment: their credentials and ports.

The same variables, with the same defaults, as the product's settings use for its side of
each carrier (so one ``.env`` or compose file configures both ends), read here on their
own: the simulators share no code with the product. Names match whatever their case, as
the product's settings match them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class SettingsError(ValueError):
    """A variable the simulators read cannot be used; the message names it."""


@dataclass(frozen=True)
class TelnaSimSettings:
    api_key: str
    webhook_secret: str
    port: int
    webhook_url: str
    """Where usage and status events go by default: the API's Telna webhook."""


@dataclass(frozen=True)
class EsimGoSimSettings:
    api_key: str
    port: int
    callback_url: str
    """Where usage callbacks go by default: the API's eSIM Go endpoint."""


@dataclass(frozen=True)
class WebbingSimSettings:
    username: str
    password: str
    wskey: str
    port: int


def telna_settings() -> TelnaSimSettings:
    api_port = _port("API_PORT", 8000)
    return TelnaSimSettings(
        api_key=_env("TELNA__API_KEY") or "",
        webhook_secret=_env("TELNA__WEBHOOK_SECRET") or "",
        port=_port("TELNA_PORT", 8102),
        webhook_url=f"http://127.0.0.1:{api_port}/v1/carriers/telna/events",
    )


def esimgo_settings() -> EsimGoSimSettings:
    api_port = _port("API_PORT", 8000)
    return EsimGoSimSettings(
        api_key=_env("ESIMGO__API_KEY") or "",
        port=_port("ESIMGO_PORT", 8103),
        callback_url=f"http://127.0.0.1:{api_port}/v1/carriers/esimgo/events",
    )


def webbing_settings() -> WebbingSimSettings:
    return WebbingSimSettings(
        username=_env("WEBBING__USERNAME") or "",
        password=_env("WEBBING__PASSWORD") or "",
        wskey=_env("WEBBING__WSKEY") or "",
        port=_port("WEBBING_PORT", 8101),
    )


def _env(name: str) -> str | None:
    wanted = name.lower()
    for key, value in os.environ.items():
        if key.lower() == wanted:
            return value
    return None


def _port(name: str, default: int) -> int:
    text = _env(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {text!r}") from None
