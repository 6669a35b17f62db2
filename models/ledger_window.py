"""The ledger rows that continuity figures over a window need, and no others.

Figures from ``since`` on (``models.continuity``) read, of each balance:

- the lines that serve at or after ``since``: activated then or later, or ended after it,
  or not ended (still serving, or ended without an end time: their window's end counts);
- one line activated before ``since``, which says the balance was measured before the
  window opened and is the latest end before it (a Completed balance ends with its last
  line), preferring a line that has an end;
- the ``activated`` events of rotations in the window: by the carrier's activation of the
  new line, or by the event's time where the line has none;
- the ``paused`` and ``resumed`` events from ``pauses_since`` (``since`` unless earlier),
  and the latest of each before it, which say whether the balance was paused then;
- its first ``cancel_requested`` event, where its measured span ends.

The rest of a long history gives the same figures, so it is not read: two queries, for
the lines and the events, each walking the indexes of its balances from the window on.
Without ``since`` everything is read, as the figures over the whole history need it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, and_, func, or_, union_all
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from models.tables import Balance, BalanceLine, LineEvent

# A line in these states serves until now, whatever its planned end.
SERVING = ("scheduled", "active")
PAUSE_KINDS = ("paused", "resumed")
# The ledger events the figures read; the rest of the ledger is not loaded.
EVENT_KINDS = ("activated", *PAUSE_KINDS, "cancel_requested")


def figure_rows(
    session: Session,
    balances: ColumnElement[bool],
    since: datetime | None,
    pauses_since: datetime | None = None,
) -> tuple[list[BalanceLine], list[LineEvent]]:
    """The lines and events (in ledger order) of the balances matching ``balances`` that
    their figures from ``since`` need; everything of theirs without ``since``."""
    scope = select(Balance.id).where(balances)
    if since is None:
        lines = select(BalanceLine).where(col(BalanceLine.balance_id).in_(scope))
        events = select(LineEvent).where(
            col(LineEvent.balance_id).in_(scope), col(LineEvent.kind).in_(EVENT_KINDS)
        )
    else:
        earliest = since if pauses_since is None else min(since, pauses_since)
        lines = select(BalanceLine).where(col(BalanceLine.id).in_(_line_ids(scope, since)))
        events = select(LineEvent).where(col(LineEvent.id).in_(_event_ids(scope, since, earliest)))
    ordered = events.order_by(col(LineEvent.at), col(LineEvent.id))
    return list(session.exec(lines).all()), list(session.exec(ordered).all())


def _line_ids(scope: SelectOfScalar[str], since: datetime) -> CompoundSelect[Any]:
    line = BalanceLine
    mine = col(line.balance_id).in_(scope)
    ended = col(line.ended_at)
    # Each select a range of one (balance_id, time) index of the balances in scope.
    started_in = select(line.id).where(mine, col(line.activated_at) >= since)
    ended_in = select(line.id).where(mine, ended > since)
    not_ended = select(line.id).where(
        mine, ended.is_(None), or_(col(line.state).in_(SERVING), col(line.ends_at) > since)
    )
    prior = aliased(BalanceLine)

    def latest_before(*extra: ColumnElement[bool]) -> ColumnElement[int]:
        return (
            select(prior.id)
            .where(prior.balance_id == Balance.id, col(prior.activated_at) < since, *extra)
            .order_by(col(prior.activated_at).desc())
            .limit(1)
            .correlate(Balance)
            .scalar_subquery()
        )

    has_end = or_(
        col(prior.ended_at).is_not(None),
        col(prior.state).in_(SERVING),
        col(prior.ends_at).is_not(None),
    )
    before = select(func.coalesce(latest_before(has_end), latest_before())).where(
        col(Balance.id).in_(scope)
    )
    return union_all(started_in, ended_in, not_ended, before)


def _event_ids(
    scope: SelectOfScalar[str], since: datetime, pauses_since: datetime
) -> CompoundSelect[Any]:
    """Ids of a superset of the events the window needs, all of ``EVENT_KINDS`` that
    matter among them: the caller keeps only those kinds."""
    event, line = LineEvent, BalanceLine
    mine = col(event.balance_id).in_(scope)
    of_its_line = and_(
        col(line.balance_id) == col(event.balance_id), col(line.seq) == col(event.seq)
    )
    # A rotation counts by the carrier's activation of its line, else by the event's time:
    # those recorded in the window, unless their line was activated before it...
    recorded_in = (
        select(event.id)
        .outerjoin(line, of_its_line)
        .where(
            mine,
            event.kind == "activated",
            event.at >= since,
            or_(col(line.activated_at).is_(None), col(line.activated_at) >= since),
        )
    )
    # ...and every event of a line activated in the window, whenever recorded. Without a
    # condition on the event, the planner has to reach them through the line.
    of_fresh_lines = (
        select(event.id)
        .select_from(line)
        .join(event, of_its_line)
        .where(col(line.balance_id).in_(scope), col(line.activated_at) >= since)
    )
    pauses_in = select(event.id).where(
        mine, col(event.kind).in_(PAUSE_KINDS), event.at >= pauses_since
    )
    other = aliased(LineEvent)

    def first_of(
        kind: str, *extra: ColumnElement[bool], latest: bool = False
    ) -> ColumnElement[int]:
        order = (col(other.at).desc(), col(other.id).desc()) if latest else (other.at, other.id)
        return (
            select(other.id)
            .where(other.balance_id == Balance.id, other.kind == kind, *extra)
            .order_by(*order)
            .limit(1)
            .correlate(Balance)
            .scalar_subquery()
        )

    def per_balance(first: ColumnElement[int]) -> SelectOfScalar[int]:
        return select(first).where(col(Balance.id).in_(scope))

    return union_all(
        recorded_in,
        of_fresh_lines,
        pauses_in,
        *(
            per_balance(first_of(kind, col(other.at) < pauses_since, latest=True))
            for kind in PAUSE_KINDS
        ),
        per_balance(first_of("cancel_requested")),
    )
