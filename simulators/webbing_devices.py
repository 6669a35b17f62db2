"""What the Webbing-like carrier's record shows of a service device, read off the engine.

A device is an ICCID of the inventory; its ``ServiceDeviceID`` is its place in the
inventory plus 700,001 (an int, stable across restarts since the snapshot keeps the order).
One product at a time: the engine's ACTIVE package (changes are ordered ``in_place``).

- StatusID 2 Inactive until its first product takes effect (or it is suspended), then 3
  Active; 4 Suspended between SuspendServiceDevice and ActivateServiceDevice. 5
  Deactivated is in the vocabulary; the simulator never deactivates a device.
- ``StatusDateChange``: when StatusID last changed (for a device still Inactive, when it
  was added).
- ``UpdatedAtUtc``: when the product or the status last changed: the moment the current
  product took effect, or the end of the last pass if none serves now.
- ``DataUsage``: high-speed bytes used on the current product, as the usage meter last
  read them (so with its lag); 0 without a product.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulators.core import CarrierEngine
from simulators.errors import UnknownSim
from simulators.records import Package
from simulators.webbing_usage import UsageMeter

SERVICE_DEVICE_ID_BASE = 700_001
INACTIVE, ACTIVE, SUSPENDED = 2, 3, 4


@dataclass(frozen=True)
class Device:
    service_device_id: int
    iccid: str
    status_id: int
    product: Package | None
    product_name: str
    used_bytes: int
    updated_at: float | None
    status_changed_at: float | None

    @property
    def product_id(self) -> str:
        return self.product.product_id if self.product is not None else "0"


class Devices:
    """The service devices of one engine, by ICCID or ServiceDeviceID."""

    def __init__(self, engine: CarrierEngine, meter: UsageMeter) -> None:
        self.engine, self.meter = engine, meter
        self._iccids: list[str] = []
        self._places: dict[str, int] = {}

    def iccid_of(self, identifier: dict[str, str]) -> str:
        """The ICCID a ``ServiceDeviceIdentifier`` names; raises UnknownSim, or ValueError
        if it names nothing."""
        iccid, number, imei = (identifier.get(k) for k in ("ICCID", "ServiceDeviceID", "IMEI"))
        if iccid:
            if not self.engine.has_esim(iccid):
                raise UnknownSim(f"no service device with ICCID {iccid}")
            return iccid
        if number:
            place = int(number) - SERVICE_DEVICE_ID_BASE if number.isdigit() else -1
            iccids = self._inventory()
            if not 0 <= place < len(iccids):
                raise UnknownSim(f"no service device {number}")
            return iccids[place]
        if imei:
            raise UnknownSim(f"no service device with IMEI {imei}")
        raise ValueError("ServiceDeviceIdentifier needs a ServiceDeviceID, ICCID or IMEI")

    def all(self) -> list[Device]:
        return [self.read(iccid) for iccid in self._inventory()]

    def read(self, iccid: str) -> Device:
        sim = self.engine.sim(iccid)
        self._inventory()
        served = [p for p in sim.packages if p.activated_at is not None]
        product = next((p for p in reversed(served) if p.status == "ACTIVE"), None)
        first = served[0].activated_at if served else None
        if sim.suspended:
            status = SUSPENDED
        elif sim.status_changed_at is not None or first is not None:
            status = ACTIVE
        else:
            status = INACTIVE
        changed = next(
            (t for t in (sim.status_changed_at, first, sim.added_at) if t is not None), None
        )
        moments = [t for p in served for t in (p.activated_at, p.terminated_at) if t is not None]
        updated = max(moments + ([changed] if changed is not None else []), default=None)
        catalogue = self.engine.products.get(product.product_id) if product else None
        return Device(
            service_device_id=SERVICE_DEVICE_ID_BASE + self._places[iccid],
            iccid=iccid,
            status_id=status,
            product=product,
            product_name=catalogue.name if catalogue else "",
            used_bytes=self.meter.reading(product).high_speed_bytes if product else 0,
            updated_at=updated,
            status_changed_at=changed,
        )

    def _inventory(self) -> list[str]:
        """The ICCIDs in inventory order; the inventory only grows, so a count suffices."""
        if len(self._iccids) != self.engine.inventory_size:
            self._iccids = self.engine.iccids()
            self._places = {iccid: place for place, iccid in enumerate(self._iccids)}
        return self._iccids
