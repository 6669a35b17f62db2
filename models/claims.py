"""Order claims: one worker process at a time may buy a given line, and never while an
earlier attempt's purchase is still in doubt.

Carriers refuse no second order for the same line, so ``order_line`` looks before it
buys. Looking cannot see two things. An order another attempt is still about to send:
the server retries an attempt it has timed out (a heartbeat lost on a loaded or dying
worker) while that attempt may still be running. And an order the carrier received but
has not yet committed: a carrier may commit a request after our client gave up on it
(DESIGN section 5's in-doubt window).

A claim is a row per reference in the product database. Its holder (``owner``) alone may
buy the line until ``lease_until``; a process that finds the claim held fails its
attempt with ``OrderInFlight`` and Temporal retries it. Before an order leaves, the
holder writes ``in_doubt_until``: the moment by which the carrier will have committed it
if it ever does (the latest the request may leave, plus the carrier's window), and, the
first time, ``sent_at``. The row, and those moments, outlive the attempt: bought or
adopted, the row keeps the carrier's ``line_id`` (a later attempt whose predecessor
bought but could not tell Temporal reads that line back, and buys nothing); refused or
unanswered before it left, the moment goes back to what it was; otherwise (no answer, a
crash, a stall past the lease) it stays. Whoever takes the claim next, in any process,
looks, if an order ever left, for a package of the line's product made since
``sent_at``: carriers have no field for our reference, so that is how they show our
order. A look that finds nothing is trusted only once ``in_doubt_until`` has passed.
Until then the purchase is held (``OrderInDoubt``). So an order is sent only when every
earlier order for the line has been seen, or can no longer appear: one purchase per
(balance, seq), whichever worker runs the attempt. A claim whose process has gone from
this host (a worker killed and restarted here) is taken at once; its doubt still holds.
A line never ordered needs no look at all: its first order costs one carrier call,
whatever the eSIM's age.
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
# A settled claim is kept this long: the retry of an attempt whose purchase Temporal never
# heard of comes within the activity's timeouts (minutes), so a day is plenty.
KEEP_SETTLED = timedelta(days=1)
# How long an order may wait in this process (the rate limiter's queue) once its
# in-doubt moment is written: past it the order is not sent, so the moment holds.
SEND_SLACK = timedelta(seconds=5)


# Taking, marking and settling a claim are on every order's path: built once, with bound
# parameters (as the store's writes: activities/store.py).
CLAIMS: sa.Table = OrderClaim.__table__  # type: ignore[attr-defined]
_MINE = (CLAIMS.c.reference == sa.bindparam("c_reference", type_=CLAIMS.c.reference.type)) & (
    CLAIMS.c.owner == sa.bindparam("c_owner", type_=CLAIMS.c.owner.type)
)
_DROP = sa.delete(CLAIMS).where(_MINE)
_PRUNE = sa.delete(CLAIMS).where(
    CLAIMS.c.line_id.is_not(None),
    CLAIMS.c.lease_until < sa.bindparam("c_before", type_=CLAIMS.c.lease_until.type),
)
_SETTLE = (
    sa.update(CLAIMS)
    .where(_MINE)
    .values(
        line_id=sa.bindparam("c_line", type_=CLAIMS.c.line_id.type),
        lease_until=sa.bindparam("c_until", type_=CLAIMS.c.lease_until.type),
    )
)
_MARK = (
    sa.update(CLAIMS)
    .where(_MINE)
    .values(
        in_doubt_until=sa.bindparam("c_doubt", type_=CLAIMS.c.in_doubt_until.type),
        sent_at=sa.func.coalesce(
            CLAIMS.c.sent_at, sa.bindparam("c_sent", type_=CLAIMS.c.sent_at.type)
        ),
    )
    .returning(CLAIMS.c.sent_at)
)
# Handed back: the lease is over, the in-doubt moment stays for the next taker.
_HAND_BACK = (
    sa.update(CLAIMS)
    .where(_MINE)
    .values(
        lease_until=sa.bindparam("c_until", type_=CLAIMS.c.lease_until.type),
        in_doubt_until=sa.bindparam("c_doubt", type_=CLAIMS.c.in_doubt_until.type),
    )
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
    """A claim this process holds: send the order no later than ``send_by``; a look that
    finds nothing before ``in_doubt_until`` proves nothing (an earlier order may still
    be committed)."""

    reference: str
    send_by: datetime
    in_doubt_until: datetime | None = None
    sent_at: datetime | None = None  # the first order for the line left then
    line_id: str | None = None  # bought or adopted: the carrier's line

    def in_doubt(self, now: datetime) -> bool:
        return self.in_doubt_until is not None and now < self.in_doubt_until


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
            if inserted.first() is not None:
                return Claim(reference, now + SEND_WINDOW)
            # Ours already (an attempt of this process ended), handed back, its lease ran
            # out, or its process is gone.
            held = session.get(OrderClaim, reference)
            if held is None:  # handed back just now
                raise ClaimHeld(reference, "another process", now)
            if held.line_id is not None:  # bought: anyone may read it back
                return Claim(reference, now, held.in_doubt_until, held.sent_at, held.line_id)
            if held.owner != self.owner and held.lease_until > now:
                if not owner_is_gone(held.owner):
                    raise ClaimHeld(reference, held.owner, held.lease_until)
            taken = session.execute(
                sa.update(OrderClaim)
                .where(col(OrderClaim.reference) == reference)
                .where(col(OrderClaim.owner) == held.owner)
                .values(owner=self.owner, lease_until=until)
                .returning(col(OrderClaim.in_doubt_until), col(OrderClaim.sent_at))
            ).first()
            if taken is None:  # another process took it first
                raise ClaimHeld(reference, "another process", until)
        return Claim(reference, now + SEND_WINDOW, taken[0], taken[1])

    def sending(self, claim: Claim, window: timedelta, now: datetime | None = None) -> Claim:
        """Before the order leaves: the claim as it stands while the order is out. The
        order must leave by its ``send_by``; if it is ever committed, it is by its
        ``in_doubt_until``, which is written down first, for whoever takes the claim
        after this attempt."""
        now = now or datetime.now(UTC)
        send_by = min(claim.send_by, now + SEND_SLACK)
        doubt = max(send_by + window, claim.in_doubt_until or send_by)
        with session_scope(self._url) as session:
            marked = session.execute(
                _MARK,
                {
                    "c_reference": claim.reference,
                    "c_owner": self.owner,
                    "c_doubt": doubt,
                    "c_sent": now,
                },
            ).first()
        if marked is None:  # the lease ran out and another process took the claim
            raise ClaimHeld(claim.reference, "another process", now)
        return Claim(claim.reference, send_by, doubt, marked[0])

    def settle(self, reference: str, line_id: str, now: datetime | None = None) -> None:
        """The line is bought or adopted: keep which (the lease ends now, which dates the
        settlement), and let go of claims settled more than ``KEEP_SETTLED`` ago."""
        now = now or datetime.now(UTC)
        with session_scope(self._url) as session:
            session.execute(_PRUNE, {"c_before": now - KEEP_SETTLED})
            session.execute(
                _SETTLE,
                {
                    "c_reference": reference,
                    "c_owner": self.owner,
                    "c_line": line_id,
                    "c_until": now,
                },
            )

    def drop(self, reference: str) -> None:
        """Nothing was sent for the line: remove this process's claim."""
        with session_scope(self._url) as session:
            session.execute(_DROP, {"c_reference": reference, "c_owner": self.owner})

    def hand_back(self, claim: Claim, now: datetime | None = None) -> None:
        """This attempt ends unsettled: anyone may take the claim now, and the purchase
        stays in doubt until ``claim.in_doubt_until``. If no order ever left, the row
        goes; if one did, it stays, so that whoever buys next looks for it first."""
        now = now or datetime.now(UTC)
        if claim.sent_at is None:
            self.drop(claim.reference)
            return
        with session_scope(self._url) as session:
            session.execute(
                _HAND_BACK,
                {
                    "c_reference": claim.reference,
                    "c_owner": self.owner,
                    "c_until": now,
                    "c_doubt": claim.in_doubt_until,
                },
            )
