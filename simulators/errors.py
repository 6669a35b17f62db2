"""The engine's business errors; each protocol front end maps them to its own answers."""

from __future__ import annotations


class SimulationError(Exception):
    """Base of the engine's business errors; front ends map them to their protocol."""


class UnknownSim(SimulationError):
    """The ICCID is not in the carrier's inventory."""


class UnknownProduct(SimulationError):
    """No such product in the catalogue."""


class UnknownPackage(SimulationError):
    """No such package."""


class WrongState(SimulationError):
    """The package cannot do that in its current status."""
