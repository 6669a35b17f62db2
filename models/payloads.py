"""The pydantic payloads that cross Temporal: workflow state, messages, activity in/out.

Every field added later needs a default, so histories of running workflows still decode.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

# How many ended lines the workflow keeps in its state (the "archived" part of the stack).
ARCHIVE_DEPTH = 5


class LineState(StrEnum):
    """Where one Balance Line is in its life."""

    scheduled = "scheduled"
    active = "active"
    expired = "expired"
    exhausted = "exhausted"
    cancelled = "cancelled"
    failed = "failed"


class BalanceStatus(StrEnum):
    """The ``BalanceState`` search attribute: what an operator filters on."""

    Active = "Active"
    Rotating = "Rotating"
    Throttled = "Throttled"
    Paused = "Paused"
    Failing = "Failing"
    Cancelled = "Cancelled"
    Completed = "Completed"


CLOSED_STATUSES = frozenset({BalanceStatus.Cancelled, BalanceStatus.Completed})


def pass_problem(allowance_bytes: int, validity_seconds: int) -> str | None:
    """Why a pass of this allowance and validity cannot be chained, or None.

    Usage is steered as a share of the allowance, and a rotation's moments are shares of
    the validity: a pass without either is one nobody can sell (the catalogue sync leaves
    it out, enrolment and product changes refuse it)."""
    if allowance_bytes <= 0:
        return f"its allowance is {allowance_bytes} bytes"
    if validity_seconds <= 0:
        return f"its validity is {validity_seconds} s"
    return None


class ProductSpec(BaseModel):
    """A carrier product as the workflow needs it (resolved from the Product table)."""

    id: str
    carrier: str
    carrier_product_id: str
    allowance_bytes: int
    validity_seconds: int
    reset: str = "rolling"
    # The catalogue's price of one pass, in minor units (cents) of ``currency`` (ISO 4217).
    price_cents: int = Field(default=0, ge=0)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    # How its carrier moves to the next pass (carriers.base.Rotation): ``queued``, the
    # carrier starts the next line as this one ends; ``activated``, we start it.
    rotation: Literal["queued", "activated", "in_place"] = "activated"

    @model_validator(mode="after")
    def _sellable(self) -> ProductSpec:
        problem = pass_problem(self.allowance_bytes, self.validity_seconds)
        if problem is not None:
            raise ValueError(f"product {self.id} cannot be sold: {problem}")
        return self


class Policy(BaseModel):
    """How a balance rotates. ``None`` means the default derived from the product.

    Strict: ``true`` is not a number of lines, whoever sends it (API, CLI, database)."""

    model_config = {"extra": "forbid", "strict": True}

    lead_seconds: float | None = Field(default=None, gt=0, le=7 * 86400)
    margin_seconds: float | None = Field(default=None, gt=0, le=86400)
    preorder_fraction: float = Field(default=0.80, gt=0, le=1)
    switch_fraction: float = Field(default=0.95, gt=0, le=1)
    max_lines_per_day: int | None = Field(default=None, ge=1, le=1000)
    # A UTC day's spend, in the currency of the balance's product (major units, two
    # decimals: "12.50"); at the cap nothing more is bought that day for usage.
    max_spend_per_day: Decimal | None = Field(
        default=None, strict=False, ge=0, le=1_000_000, decimal_places=2
    )

    @model_validator(mode="after")
    def _ordered(self) -> Policy:
        if self.preorder_fraction > self.switch_fraction:
            raise ValueError("preorder_fraction must not exceed switch_fraction")
        if (
            self.lead_seconds is not None
            and self.margin_seconds is not None
            and self.margin_seconds >= self.lead_seconds
        ):
            raise ValueError("margin_seconds must be smaller than lead_seconds")
        return self

    def lead(self, validity_seconds: int) -> float:
        """Seconds before a line's end at which the next one is ordered."""
        if self.lead_seconds is not None:
            return self.lead_seconds
        return min(1800.0, validity_seconds / 4)

    def margin(self, validity_seconds: int) -> float:
        """Seconds before a line's end at which the switch starts (covers activation)."""
        if self.margin_seconds is not None:
            return self.margin_seconds
        return min(60.0, validity_seconds / 10)


def policy_problem(policy: Policy, validity_seconds: int) -> str | None:
    """Why ``policy`` cannot drive lines of this validity, or None if it can.

    The switch starts ``margin`` before a line ends: with a margin close to the validity
    every line would be switched away from soon after it is up, a pass bought per loop.
    So a line must serve at least half its validity, and ordering comes before switching.
    The API refuses such a policy before it reaches a workflow, which checks it again.
    """
    margin, lead = policy.margin(validity_seconds), policy.lead(validity_seconds)
    if margin >= lead:
        return f"margin {margin:g} s must be shorter than the lead {lead:g} s"
    if margin > validity_seconds / 2:
        return f"margin {margin:g} s must be at most half the validity {validity_seconds} s"
    return None


class Line(BaseModel):
    """One Balance Line: a carrier package with a time window."""

    seq: int
    reference: str
    product_id: str
    carrier_product_id: str
    allowance_bytes: int
    validity_seconds: int
    state: LineState = LineState.scheduled
    line_id: str | None = None
    ordered_at: datetime | None = None
    activated_at: datetime | None = None
    ends_at: datetime | None = None
    ended_at: datetime | None = None
    # When the carrier says the allowance ran out (first usage seen at the allowance):
    # the line serves throttled from then on in place, and has ended where a used-up pass
    # ends (Telna: ``ended_at`` is then this moment).
    exhausted_at: datetime | None = None
    used_bytes: int = 0
    usage_observed_at: datetime | None = None
    # The observation before the last one: two points give the traffic rate.
    prev_used_bytes: int = 0
    prev_observed_at: datetime | None = None
    # What ending it refunded, where the carrier says (carriers.base.Refund).
    refund: str | None = None
    # What buying it cost, recorded when it was ordered (the catalogue's price then, or
    # the carrier's own where its answer says): minor units of ``currency``.
    price_cents: int | None = None
    currency: str | None = None
    # Why the carrier must not end it, so it was left on the eSIM (carriers.errors.
    # LAST_BUNDLE: the last pass of an eSIM never installed); None once ended or kept.
    left_on_esim: str | None = None


class EventRecord(BaseModel):
    """One ledger event; ``key`` makes writing it idempotent across activity retries."""

    key: str
    balance_id: str
    seq: int | None = None
    kind: str
    actor: str
    at: datetime
    detail: dict[str, Any] = {}


class BalanceState(BaseModel):
    """The whole state of one BalanceWorkflow, carried through continue-as-new."""

    balance_id: str
    iccid: str
    carrier: str
    product: ProductSpec
    policy: Policy = Policy()
    lines_total: int | None = None
    next_product: ProductSpec | None = None
    status: BalanceStatus = BalanceStatus.Active
    active: Line | None = None
    scheduled: Line | None = None
    archived: list[Line] = []
    last_seq: int = 0
    paused: bool = False
    cancel_requested: bool = False
    rotate_requested: bool = False
    capped: bool = False
    failing_reason: str | None = None
    day: date | None = None
    lines_today: int = 0
    # What the balance's lines cost as ordered, in minor units by currency; and what was
    # bought on ``spend_day`` (UTC), for ``max_spend_per_day``.
    spend_cents: dict[str, int] = {}
    spend_day: date | None = None
    spend_today_cents: dict[str, int] = {}
    rotations: int = 0
    early_rotations: int = 0
    event_counter: int = 0
    usage_check_at: datetime | None = None
    # Events from message handlers, written with the next store call.
    pending_events: list[EventRecord] = []
    # Whether a run hands over once a line it brought up is active (rotation.hands_over):
    # decided in a balance's first workflow task, None until then.
    hand_over_after_bring_up: bool | None = None
    # Whether a run that has rotated hands over when the next order falls due, instead
    # of at its switch (rotation.hands_over): asked in each run's first workflow task
    # until it is True, then carried.
    hand_over_at_order: bool | None = None
    # Bumped by every store write (workflows.ledger.Ledger.record) and sent with it: the rows
    # keep the newest write's, so an older write that lands late (its worker stalled
    # mid-write while another took the workflow on) changes nothing. A workflow started
    # again from the database continues from the balance row's
    # (services.enrolment.resumed_revision).
    revision: int = 0
    # Whether every wait hands over once messages have made the history long
    # (rotation.piled_up): asked as ``hand_over_at_order`` is.
    hand_over_when_long: bool | None = None
    # Whether ``rotate_now`` respects the cost cap unless forced: asked as above.
    rotate_within_cap: bool | None = None
    # Whether a queued carrier's switch by usage is the carrier's, at the pass's end of data,
    # and an early one ends the old line first (timing.carrier_switches_by_usage): asked as
    # above.
    queued_by_carrier: bool | None = None
    # Whether pause and cancel stop a wait for the carrier to start a line (one on an eSIM
    # never installed may never start): asked as above.
    activation_yields: bool | None = None
    # Whether a cost cap lifts at 00:00 UTC by itself, the workflow waking for it (until
    # then a capped eSIM waited for its line's end): asked as above.
    cap_lifts_at_midnight: bool | None = None
    # Whether the cost cap's state and event are written as it is reached, before the
    # balance sleeps (else they waited for the next wake): asked as above.
    cap_recorded_at_once: bool | None = None
    # Started again for a balance with a history (enrolled again once its workflow was
    # gone): the run first rebuilds its state from the database and the carrier.
    restore: bool = False


class RestoreBalance(BaseModel):
    """Input of the ``restore_balance`` activity."""

    balance_id: str


class RestoredBalance(BaseModel):
    """Result of the ``restore_balance`` activity: None if the balance has closed.
    ``while_gone``: the lines the database held open that the carrier moved on meanwhile
    (as the carrier has them now); ``started_while_gone``: the seqs of those the carrier
    started."""

    state: BalanceState | None
    while_gone: list[Line] = []
    started_while_gone: list[int] = []


class ActionRequest(BaseModel):
    """Payload of the operator signals pause / resume / cancel / rotate_now. ``force``:
    rotate even when the day's cost cap is reached."""

    actor: str = "operator"
    reason: str = ""
    force: bool = False


class AuditNotice(BaseModel):
    """Payload of the ``audit`` signal: what the audit found about line ``reference``.

    ``kind`` ``ghost_line``: the carrier has ended the line (or does not know it);
    ``missing_scheduled_line``: past the order time, nothing is ordered. Naming the line
    makes a repeated or late notice harmless: it acts only while the workflow holds it.
    ``used_up_at``: the carrier ended the line then because its data ran out (a Telna
    termination with the package's used bytes at its total).
    """

    kind: str
    reference: str | None = None
    reason: str = ""
    actor: str = "audit"
    used_up_at: datetime | None = None


class UsageReport(BaseModel):
    """Payload of the ``usage_reported`` signal and result of the usage activity."""

    seq: int
    used_bytes: int = Field(ge=0)
    observed_at: datetime
    # Our order reference ``{balance_id}:{seq}``: tells a line of this balance from one of
    # an earlier balance of the same eSIM.
    reference: str | None = None


class ChangeProduct(BaseModel):
    """Payload of the ``change_product`` update: the new product, resolved by the caller."""

    product: ProductSpec
    actor: str = "operator"


class ChangePolicy(BaseModel):
    """Payload of the ``change_policy`` update: the balance's whole new policy."""

    policy: Policy
    actor: str = "operator"


class BalanceStatusView(BaseModel):
    """Result of the ``status`` query: the stack of lines and what happens next."""

    balance_id: str
    iccid: str
    carrier: str
    status: BalanceStatus
    product_id: str
    next_product_id: str | None
    lines_total: int | None
    active: Line | None
    scheduled: Line | None
    archived: list[Line]
    usage_fraction: float | None
    order_at: datetime | None
    switch_at: datetime | None
    usage_check_at: datetime | None
    paused: bool
    capped: bool
    failing_reason: str | None
    rotations: int
    early_rotations: int
    lines_today: int
    cap_reached: bool = False  # the cost cap of today (UTC) is spent
    # What the balance's lines cost as ordered, by currency ("12.50"), and today's (UTC).
    spend: dict[str, str] = {}
    spend_today: dict[str, str] = {}
    # What the eSIM has on its active line: once used up, a line in place serves at the
    # throttled speed, and a pass that ends when used up (Telna) leaves no service.
    service: Literal["high_speed", "throttled", "none"] = "high_speed"


# --- activity payloads -------------------------------------------------------------


class OrderLineInput(BaseModel):
    """Order line ``seq`` for a balance; the reference makes the order findable."""

    balance_id: str
    iccid: str
    carrier: str
    seq: int
    product: ProductSpec
    # The carrier starts the line by itself then, should our activation not come first.
    start_at: datetime | None = None
    # The balance's lines at the carrier now: a package among them is not this order's.
    known_line_ids: list[str] = []

    @property
    def reference(self) -> str:
        return f"{self.balance_id}:{self.seq}"


class LineCommand(BaseModel):
    """Act on one line at its carrier; ``end_state`` says why a deactivation happens."""

    carrier: str
    iccid: str
    line: Line
    end_state: LineState | None = None


class BalanceRecord(BaseModel):
    """The balance row as the workflow last saw it, at its ``revision`` (see BalanceState):
    the row and the lines written with it take this write only if they hold none newer."""

    balance_id: str
    status: BalanceStatus
    product_id: str
    next_product_id: str | None = None
    line_seq: int | None = None
    line_ends_at: datetime | None = None
    rotations: int = 0
    paused: bool = False
    capped: bool = False
    failing_reason: str | None = None
    closed: bool = False
    revision: int = 0

    @classmethod
    def of(cls, s: BalanceState, closed: bool = False) -> BalanceRecord:
        active = s.active
        return cls(
            balance_id=s.balance_id,
            status=s.status,
            product_id=s.product.id,
            next_product_id=s.next_product.id if s.next_product else None,
            line_seq=active.seq if active else None,
            line_ends_at=active.ends_at if active else None,
            rotations=s.rotations,
            paused=s.paused,
            capped=s.capped,
            failing_reason=s.failing_reason,
            closed=closed,
            revision=s.revision,
        )


class RecordChanges(BaseModel):
    """Everything one workflow step changed, written in one transaction.

    Without a ``balance`` (the audit's writes) the lines are the carrier's truth: written
    whatever their revision, which they keep."""

    balance_id: str
    iccid: str
    carrier: str
    balance: BalanceRecord | None = None
    lines: list[Line] = []
    events: list[EventRecord] = []


class UsagePollInput(BaseModel):
    """One poll of one carrier's usage (the ``usage-poll-{carrier}`` Schedule's action)."""

    carrier: str


class UsagePollResult(BaseModel):
    """What one poll read and did: pages and lines read, lines of open balances among
    them, balances signalled, and signals that found no workflow (balance gone); or why
    it gave up (the carrier kept failing: the next poll reads again)."""

    pages: int = 0
    lines_read: int = 0
    lines_open: int = 0
    signals: int = 0
    gone: int = 0
    gave_up: str | None = None
