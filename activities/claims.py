"""Order claims: one worker process at a time may buy a given line.

Carriers refuse no second order with the same reference, so ``order_line`` looks before
it buys. Looking cannot see an order another attempt is still about to send: the server
retries an attempt it has timed out (a heartbeat lost on a loaded or dying worker) while
that attempt may still be running. In one process the retry joins the order in flight;
across processes the claim is what stops it.

A claim is a row per reference in the product database, held by one process until a
lease ends. The holder sends its order only while enough of the lease is left for the
request to finish inside it (``send_by``); past that the order is not sent and the
attempt fails, to be retried. A process that finds the claim held by another fails its
attempt with ``OrderInFlight``, and Temporal retries it; once the holder is done (claim
removed) or its lease has run out, the retry takes the claim, looks, and adopts what the
holder bought. So whatever the holder did has happened, or never will, before anyone
else looks: one purchase per (balance, seq), whichever worker runs the attempt. A claim
whose process has gone from this host (a worker killed and restarted here) is taken at
once, without waiting for its lease.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from models.db import dialect_insert_for, session_scope
from models.tables import OrderClaim

SEND_WINDOW = timedelta(seconds=30)  # how long after taking the claim an order may leave


# Taking and releasing a claim are on every order's path: built once, with bound
# parameters (as the store's writes: activities/store.py).
CLAIMS: sa.Table = OrderClaim.__table__  # type: ignore[attr-defined]
_RELEASE = (
    sa.delete(CLAIMS)
    .where(CLAIMS.c.reference == sa.bindparam("c_reference", type_=CLAIMS.c.reference.type))
    .where(CLAIMS.c.owner == sa.bindparam("c_owner", type_=CLAIMS.c.owner.type))
)


@cache
def _take_claim(dialect: str) -> Any:
    return (
        dialect_insert_for(dialect, CLAIMS)
        .values(
            reference=sa.bindparam("c_reference", type_=CLAIMS.c.reference.type),
            owner=sa.bindparam("c_owner", type_=CLAIMS.c.owner.type),
            lease_until=sa.bindparam("c_until", type_=CLAIMS.c.lease_until.type),
        )
        .on_conflict_do_nothing()
        .returning(CLAIMS.c.reference)  # not rowcount: psycopg says -1
    )


def process_owner() -> str:
    """This process, as an owner name: host, pid and a random tag (a restarted process
    with the same pid is another owner)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_gone(owner: str) -> bool:
    """True if ``owner`` was a process on this host that no longer runs: a worker killed
    and restarted here need not wait for its claims to lapse. A process elsewhere, or a
    pid now reused, counts as running (its claim lapses at the end of its lease)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname()[:40] or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False


class ClaimHeld(Exception):
    """Another process holds the claim on ``reference`` until ``lease_until``."""

    def __init__(self, reference: str, owner: str, lease_until: datetime) -> None:
        super().__init__(f"an order for {reference} is in flight at {owner}")
        self.lease_until = lease_until


@dataclass(frozen=True)
class Claim:
    """A claim this process holds: send the order no later than ``send_by``."""

    reference: str
    send_by: datetime


class OrderClaims:
    """Claims in the database at ``database_url``, taken by this process.

    ``request_seconds`` is the carrier client's timeout per phase of a request (connect,
    write, read): the lease covers the send window and a whole request after it.
    """

    def __init__(self, database_url: str, request_seconds: float, owner: str | None = None):
        self._url = database_url
        self.owner = owner or process_owner()
        self.lease = SEND_WINDOW + timedelta(seconds=3 * request_seconds + 5)

    def take(self, reference: str, now: datetime | None = None) -> Claim:
        """Claim ``reference`` for this process, or raise ``ClaimHeld``."""
        now = now or datetime.now(UTC)
        until = now + self.lease
        with session_scope(self._url) as session:
            claim = _take_claim(session.get_bind().dialect.name)
            inserted = session.execute(
                claim, {"c_reference": reference, "c_owner": self.owner, "c_until": until}
            )
            if inserted.first() is None:
                # Ours already (an attempt of this process ended), its lease ran out, or
                # its process is gone.
                held = session.get(OrderClaim, reference)
                if held is None:  # released just now
                    raise ClaimHeld(reference, "another process", now)
                if held.owner != self.owner and held.lease_until > now:
                    if not owner_is_gone(held.owner):
                        raise ClaimHeld(reference, held.owner, held.lease_until)
                taken = session.execute(
                    sa.update(OrderClaim)
                    .where(col(OrderClaim.reference) == reference)
                    .where(col(OrderClaim.owner) == held.owner)
                    .values(owner=self.owner, lease_until=until)
                    .returning(col(OrderClaim.reference))
                )
                if taken.first() is None:  # another process took it first
                    raise ClaimHeld(reference, "another process", until)
        return Claim(reference, now + SEND_WINDOW)

    def release(self, reference: str) -> None:
        """The order is settled (bought, adopted or refused): remove this process's claim."""
        with session_scope(self._url) as session:
            session.execute(_RELEASE, {"c_reference": reference, "c_owner": self.owner})
