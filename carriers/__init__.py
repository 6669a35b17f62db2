"""Carrier clients behind one interface (``carriers.base.Carrier``)."""

from __future__ import annotations

from carriers.base import Carrier
from config import Settings


def build_carriers(settings: Settings) -> dict[str, Carrier]:
    """One long-lived client per configured carrier, keyed by carrier name; each call is
    timed and its errors counted (``carriers.metered``)."""
    from carriers.esimgo import EsimGoCarrier
    from carriers.metered import metered
    from carriers.telna import TelnaCarrier
    from carriers.webbing import WebbingCarrier

    return metered(
        {
            "telna": TelnaCarrier.from_settings(settings),
            "webbing": WebbingCarrier.from_settings(settings),
            "esimgo": EsimGoCarrier.from_settings(settings),
        }
    )
