"""SQLModel tables: eSIMs, products, balances, their lines, and the append-only ledger.

All times are stored in UTC and come back timezone-aware on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import JSON, Column, Field, Index, SQLModel, UniqueConstraint


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A DateTime that refuses naive values and always returns aware UTC ones."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _revision() -> Any:
    """The workflow write that last set a row (``BalanceState.revision``): a write of an
    older one, from a worker that stalled mid-write and woke after another worker took
    the workflow on, must not roll the row back (``activities/store.py``)."""
    return Field(default=0, sa_column_kwargs={"server_default": "0"})


class Esim(SQLModel, table=True):
    """A profile on a device, identified by its ICCID; belongs to one carrier."""

    iccid: str = Field(primary_key=True, max_length=20)
    carrier: str = Field(index=True, max_length=32)
    eid: str | None = Field(default=None, max_length=32)
    # The operator's own name for whom the eSIM serves (its balances inherit it).
    customer_ref: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class Product(SQLModel, table=True):
    """A carrier's data pass, synced from the carrier's catalogue; id is ``{carrier}-{id}``."""

    id: str = Field(primary_key=True, max_length=96)
    carrier: str = Field(index=True, max_length=32)
    carrier_product_id: str = Field(max_length=64)
    name: str = Field(max_length=200)
    allowance_bytes: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    validity_seconds: int
    reset: str = Field(default="rolling", max_length=32)
    reset_utc_offset_minutes: int = 0
    throttle_kbps: int
    price_cents: int
    # ISO 4217 code of ``price_cents`` (minor units): the carrier client's named choice
    # where the catalogue says none (carriers.base.CarrierProduct.currency).
    currency: str = Field(default="USD", max_length=3, sa_column_kwargs={"server_default": "USD"})
    # How its carrier moves to the next pass: carriers.base.Rotation.
    rotation: str = Field(
        default="activated", max_length=16, sa_column_kwargs={"server_default": "activated"}
    )
    synced_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class Balance(SQLModel, table=True):
    """One eSIM + one Product over a term; mirrors its workflow ``balance-{iccid}``.

    ``open_iccid`` equals ``iccid`` while the balance is open and is NULL once closed;
    its unique constraint is what makes "at most one open balance per eSIM" hold.
    """

    id: str = Field(primary_key=True, max_length=40)
    iccid: str = Field(foreign_key="esim.iccid", index=True, max_length=20)
    open_iccid: str | None = Field(default=None, unique=True, max_length=20)
    carrier: str = Field(index=True, max_length=32)
    product_id: str = Field(max_length=96)
    next_product_id: str | None = Field(default=None, max_length=96)
    lines_total: int | None = None
    policy: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="Active", index=True, max_length=16)
    workflow_id: str = Field(max_length=64)
    line_seq: int | None = None
    line_ends_at: datetime | None = _ts()
    rotations: int = 0
    paused: bool = False
    capped: bool = False
    failing_reason: str | None = Field(default=None, max_length=500)
    # The operator's own customer, for spend per customer (GET /v1/spend).
    customer_ref: str | None = Field(default=None, index=True, max_length=64)
    revision: int = _revision()
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    closed_at: datetime | None = _ts(index=True)


class BalanceLine(SQLModel, table=True):
    """One activation of the product at the carrier: a package with a time window."""

    __tablename__ = "balance_line"
    # A balance's lines by when they served: what a window of continuity figures reads.
    __table_args__ = (
        UniqueConstraint("balance_id", "seq", name="uq_balance_line_seq"),
        Index("ix_balance_line_balance_id_activated_at", "balance_id", "activated_at"),
        Index("ix_balance_line_balance_id_ended_at", "balance_id", "ended_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    balance_id: str = Field(foreign_key="balance.id", max_length=40)
    seq: int
    iccid: str = Field(index=True, max_length=20)
    carrier: str = Field(max_length=32)
    carrier_line_id: str | None = Field(default=None, index=True, max_length=64)
    reference: str = Field(index=True, max_length=64)
    product_id: str = Field(max_length=96)
    state: str = Field(index=True, max_length=16)
    allowance_bytes: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    used_bytes: int = Field(default=0, sa_column=Column(sa.BigInteger(), nullable=False))
    # Spend reports select lines by when they were ordered.
    ordered_at: datetime | None = _ts(index=True)
    activated_at: datetime | None = _ts()
    ends_at: datetime | None = _ts(index=True)
    ended_at: datetime | None = _ts()
    # Carrier time the allowance was used up (throttled from then on), if it was.
    exhausted_at: datetime | None = _ts()
    # What buying it cost, in minor units of ``currency``: set once, when its purchase is
    # first recorded, and never changed after. NULL: bought before prices were recorded.
    price_cents: int | None = Field(default=None, sa_column=Column(sa.BigInteger(), nullable=True))
    currency: str | None = Field(default=None, max_length=3)
    # What the carrier credited back to the account's balance when it ended the line
    # unused (eSIM Go's refund of a revoked bundle), in minor units of ``currency``: set
    # once, and never changed after. NULL: nothing refunded.
    refunded_cents: int | None = Field(
        default=None, sa_column=Column(sa.BigInteger(), nullable=True)
    )
    revision: int = _revision()
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class LineEvent(SQLModel, table=True):
    """Append-only ledger: who did what to which balance/line, and when.

    ``key`` is chosen by the workflow deterministically, so a retried write is a no-op.
    """

    __tablename__ = "line_event"
    # A balance's events of one kind in a window, and a line's events. No index on all
    # events leads with ``kind``: a planner without statistics takes it for selective and
    # walks every event of the kind instead of one balance's. The audit's findings, which
    # /metrics counts by kind, have one of their own (only a query naming the audit as
    # actor can use it).
    __table_args__ = (
        Index("ix_line_event_balance_id_kind_at", "balance_id", "kind", "at"),
        Index("ix_line_event_balance_id_seq", "balance_id", "seq"),
        Index(
            "ix_line_event_audit_kind",
            "kind",
            sqlite_where=sa.text("actor = 'audit'"),
            postgresql_where=sa.text("actor = 'audit'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=160)
    balance_id: str = Field(max_length=40)
    seq: int | None = None
    kind: str = Field(max_length=32)
    actor: str = Field(max_length=64)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class IdempotencyRecord(SQLModel, table=True):
    """A request the API has answered, by key, so a repeat gets the first answer.

    ``scope`` says what the key is: ``POST /v1/balances`` for a client's
    ``Idempotency-Key``, ``telna-event`` for a Telna webhook's MessageId, ``esimgo-event``
    for an eSIM Go callback's ICCID, assignment, alert type and remaining quantity. ``caller``
    says whose it is: a digest of the API key that sent it (never the key), empty for a
    carrier. ``status_code`` is NULL while the first request is still being served.
    """

    __tablename__ = "idempotency_record"

    scope: str = Field(primary_key=True, max_length=32)
    caller: str = Field(
        default="", primary_key=True, max_length=64, sa_column_kwargs={"server_default": ""}
    )
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    status_code: int | None = None
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))


class ActionQuota(SQLModel, table=True):
    """How many operator actions that buy a line ``scope`` (a balance, or an API key's
    digest) took in the window starting at ``window_start``; see ``api/action_limits.py``."""

    __tablename__ = "action_quota"

    scope: str = Field(primary_key=True, max_length=80)
    window_start: datetime = Field(sa_column=Column(UTCDateTime(), primary_key=True))
    used: int = 0


class UsageWatermark(SQLModel, table=True):
    """What the usage poller last signalled for a carrier line, so it signals a balance
    only when the line's usage crosses a threshold beyond it (not at every poll).

    Keyed by the carrier's line id; a row whose line is no longer active is removed by
    the next poll of its carrier.
    """

    __tablename__ = "usage_watermark"

    carrier: str = Field(primary_key=True, max_length=32)
    carrier_line_id: str = Field(primary_key=True, max_length=64)
    signalled_bytes: int = Field(sa_column=Column(sa.BigInteger(), nullable=False))
    observed_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class NotificationCursor(SQLModel, table=True):
    """How far outbound notifications have gone through the ledger: every ``line_event``
    up to ``last_event_id`` was delivered or given up.

    The ledger is the outbox; this row is the only state of delivery. The dispatcher that
    holds the lease (``owner`` until ``lease_until``) is the only one delivering, so any
    number of worker processes deliver in ledger order.
    """

    __tablename__ = "notification_cursor"

    name: str = Field(primary_key=True, max_length=32)
    last_event_id: int = 0
    owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts()
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class OrderClaim(SQLModel, table=True):
    """An order in flight for one line reference: the worker process ``owner`` may buy it
    until ``lease_until``; no other may, so two processes never buy one line twice.

    Taken before the order looks at the carrier; a claim left by a dead process lapses
    at ``lease_until``. ``sent_at``: when the first order for this line left (a package
    of the line's product made since may be it). ``in_doubt_until``: an order sent for
    this line may be committed by the carrier until then, so a look that finds nothing
    before it proves nothing. ``line_id``: the carrier's line bought or adopted, once
    settled. See ``models/claims.py``.
    """

    __tablename__ = "order_claim"
    # Settled claims are let go of by age (models/claims.py, ``KEEP_SETTLED``).
    __table_args__ = (Index("ix_order_claim_lease_until", "lease_until"),)

    reference: str = Field(primary_key=True, max_length=64)
    owner: str = Field(max_length=64)
    lease_until: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    in_doubt_until: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    line_id: str | None = Field(default=None, max_length=64)
