"""Bearer API keys with roles, from ``API_KEYS`` (``role:key,role:key``).

``operator`` may do everything; ``service`` may enrol (register eSIMs, start balances)
and read. Keys are kept only as SHA-256 digests and compared with
``hmac.compare_digest`` against every configured key, so neither the answer time nor a
log line tells anything about them. With no keys configured nothing is accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from pydantic import SecretStr


class Role(StrEnum):
    operator = "operator"
    service = "service"


READ = frozenset({Role.operator, Role.service})
ENROL = READ
OPERATE = frozenset({Role.operator})


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the role of the key it carried, and which key it was
    (``identity_of``), for what the API keeps per caller."""

    role: Role
    identity: str

    @property
    def actor(self) -> str:
        """How the ledger names this caller."""
        return f"api:{self.role.value}"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def identity_of(key: str) -> str:
    """A caller's key as the database may hold it: a digest (64 hex), never the key."""
    return hashlib.sha256(b"esim-balance caller\x00" + key.encode()).hexdigest()


class ApiKeys:
    """The configured keys; :meth:`role_of` finds a presented key's role."""

    def __init__(self, keys: list[tuple[Role, str]]) -> None:
        self._keys = [(role, _digest(key)) for role, key in keys]

    @classmethod
    def parse(cls, value: SecretStr) -> ApiKeys:
        """Keys from ``role:key,role:key``; ``ValueError`` (without the key) if malformed."""
        keys: list[tuple[Role, str]] = []
        for number, entry in enumerate(value.get_secret_value().split(","), start=1):
            if not entry.strip():
                continue
            role, sep, key = entry.strip().partition(":")
            if not sep or not key.strip() or role.strip() not in Role.__members__:
                raise ValueError(
                    f"API_KEYS entry {number} is not `role:key` with role operator or service"
                )
            keys.append((Role(role.strip()), key.strip()))
        return cls(keys)

    def role_of(self, presented: str) -> Role | None:
        """The role of ``presented``, or None; takes the same time whichever key matches."""
        given = _digest(presented)
        found: Role | None = None
        for role, digest in self._keys:
            if hmac.compare_digest(given, digest) and found is None:
                found = role
        return found
