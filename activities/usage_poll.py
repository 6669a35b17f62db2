"""The usage poller's activity: read a carrier's usage in pages, signal only crossings.

Carriers without usage webhooks (Webbing) report usage only when asked. One activity per
poll reads the whole account's usage page by page (``FleetUsage.usage_page``), joins each
page with the open balances' active lines in the database (by the carrier's line id),
and signals ``usage_reported`` to a balance only when its line's usage crossed a
threshold — the balance's pre-order and switch fractions, and 100 % — beyond what was
last signalled for that line (the ``usage_watermark`` table). A fleet whose usage moves
slowly costs one carrier call per page and no signal at all; never one activity per
balance per poll.

Signals go out with bounded concurrency; the watermark of a line is written only after
its signal was delivered, so a poll that fails half-way signals again next time (the
workflow ignores an observation no newer than the one it has). A balance whose workflow
is gone (closed, or never started) is logged and skipped, and its watermark written, so
one stale row does not fail every poll; the audit is what reconciles it.

Progress is heartbeated page by page: a retried attempt resumes at the next page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.carrier import carrier_failure
from carriers.base import Carrier, FleetUsage, LineUsage
from carriers.errors import CarrierError
from models.db import dialect_insert, session_scope
from models.payloads import Policy, UsagePollInput, UsagePollResult, UsageReport
from models.tables import Balance, BalanceLine, UsageWatermark
from services import metrics

# Webbing's largest page: fewest calls for a large fleet.
PAGE_SIZE = 500
# Signals in flight at once, so a fleet crossing together does not flood the frontend.
SIGNAL_CONCURRENCY = 20
# Rows per ``IN (...)`` lookup: well under SQLite's and PostgreSQL's parameter limits.
LOOKUP_CHUNK = 500


@dataclass(frozen=True)
class WatchedLine:
    """An open balance's active line, with what was last signalled for it."""

    workflow_id: str
    seq: int
    reference: str
    allowance_bytes: int
    policy: Policy
    signalled_bytes: int


def thresholds(policy: Policy, allowance_bytes: int) -> list[int]:
    """Usage levels (bytes) at which the balance must hear of its line: pre-order, switch,
    and the whole allowance (the line is throttled from there)."""
    fractions = sorted({policy.preorder_fraction, policy.switch_fraction, 1.0})
    return [max(1, round(f * allowance_bytes)) for f in fractions]


def crossed(used_bytes: int, signalled_bytes: int, levels: Iterable[int]) -> bool:
    """A threshold lies above what was last signalled and at or below what is used now."""
    return any(signalled_bytes < level <= used_bytes for level in levels)


def due(usage: LineUsage, line: WatchedLine) -> bool:
    """Whether this reading of the line is worth a signal to its balance."""
    allowance = usage.allowance_bytes or line.allowance_bytes
    return crossed(usage.used_bytes, line.signalled_bytes, thresholds(line.policy, allowance))


class UsagePollActivities:
    """The poll activity; carrier clients, the Temporal client and the database injected."""

    def __init__(
        self,
        carriers: Mapping[str, Carrier],
        client: Client,
        database_url: str,
        signal_concurrency: int = SIGNAL_CONCURRENCY,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._carriers = carriers
        self._page_size = page_size
        self._client = client
        self._url = database_url
        self._signal_concurrency = signal_concurrency

    @activity.defn(name="poll_usage")
    async def poll_usage(self, req: UsagePollInput) -> UsagePollResult:
        """Read every page of the carrier's usage; signal the balances that crossed."""
        carrier = self._fleet_usage(req.carrier)
        since = (datetime.now(UTC) - timedelta(days=1)).date()
        result, page = self._resume()
        while True:
            try:
                batch = await carrier.usage_page(page, since, self._page_size)
            except CarrierError as error:
                raise carrier_failure(error) from error
            result.pages += 1
            if batch.usage:
                await self._poll_page(req.carrier, batch.usage, result)
            activity.heartbeat(page + 1, result.model_dump())
            if not batch.usage or page >= batch.pages:
                break
            page += 1
        await asyncio.to_thread(_forget_ended_lines, self._url, req.carrier)
        activity.logger.info("usage poll of %s: %s", req.carrier, result)
        return result

    def _fleet_usage(self, name: str) -> FleetUsage:
        carrier = self._carriers.get(name)
        if not isinstance(carrier, FleetUsage):
            raise ApplicationError(
                f"carrier {name!r} has no client with a paged usage read",
                type="UnknownCarrier",
                non_retryable=True,
            )
        return carrier

    @staticmethod
    def _resume() -> tuple[UsagePollResult, int]:
        """Counts so far and the page to read next, from the last attempt's heartbeat."""
        details = activity.info().heartbeat_details
        if len(details) == 2:
            return UsagePollResult.model_validate(details[1]), int(details[0])
        return UsagePollResult(), 1

    async def _poll_page(
        self, carrier: str, usage: Sequence[LineUsage], result: UsagePollResult
    ) -> None:
        result.lines_read += len(usage)
        ids = [u.line_id for u in usage]
        watched = await asyncio.to_thread(_watched_lines, self._url, carrier, ids)
        result.lines_open += sum(u.line_id in watched for u in usage)
        crossing = [(u, watched[u.line_id]) for u in usage if u.line_id in watched]
        crossing = [(u, line) for u, line in crossing if due(u, line)]
        if not crossing:
            return
        gate = asyncio.Semaphore(self._signal_concurrency)
        outcomes = await asyncio.gather(*(self._signal(gate, u, line) for u, line in crossing))
        delivered = [u for (u, _), outcome in zip(crossing, outcomes, strict=True) if outcome]
        result.signals += sum(outcome == "signalled" for outcome in outcomes)
        result.gone += sum(outcome == "gone" for outcome in outcomes)
        metrics.usage_signals.labels(carrier).inc(outcomes.count("signalled"))
        await asyncio.to_thread(_mark_signalled, self._url, carrier, delivered)

    async def _signal(self, gate: asyncio.Semaphore, usage: LineUsage, line: WatchedLine) -> str:
        """``signalled``, or ``gone`` when no workflow runs for the balance; other errors
        propagate (the poll is retried, and its watermarks show what was delivered)."""
        report = UsageReport(
            seq=line.seq,
            used_bytes=usage.used_bytes,
            observed_at=usage.observed_at,
            reference=line.reference,
        )
        async with gate:
            try:
                handle = self._client.get_workflow_handle(line.workflow_id)
                await handle.signal("usage_reported", report)
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                activity.logger.warning(
                    "usage poll: no running workflow %s for line %s", line.workflow_id, line.seq
                )
                return "gone"
        return "signalled"


def _watched_lines(url: str, carrier: str, line_ids: Sequence[str]) -> dict[str, WatchedLine]:
    """The open balances' active lines among ``line_ids``, by carrier line id."""
    watched: dict[str, WatchedLine] = {}
    with session_scope(url) as session:
        for start in range(0, len(line_ids), LOOKUP_CHUNK):
            chunk = line_ids[start : start + LOOKUP_CHUNK]
            rows = session.exec(
                select(BalanceLine, Balance.workflow_id, Balance.policy, UsageWatermark)
                .join(Balance, col(Balance.id) == col(BalanceLine.balance_id))
                .outerjoin(
                    UsageWatermark,
                    sa.and_(
                        col(UsageWatermark.carrier) == col(BalanceLine.carrier),
                        col(UsageWatermark.carrier_line_id) == col(BalanceLine.carrier_line_id),
                    ),
                )
                .where(
                    col(BalanceLine.carrier) == carrier,
                    col(BalanceLine.state) == "active",
                    col(BalanceLine.carrier_line_id).in_(chunk),
                    col(Balance.closed_at).is_(None),
                )
            ).all()
            for line, workflow_id, policy, mark in rows:
                assert line.carrier_line_id is not None
                watched[line.carrier_line_id] = WatchedLine(
                    workflow_id=workflow_id,
                    seq=line.seq,
                    reference=line.reference,
                    allowance_bytes=line.allowance_bytes,
                    policy=_policy(policy),
                    signalled_bytes=mark.signalled_bytes if mark is not None else 0,
                )
    return watched


def _policy(stored: Mapping[str, Any] | None) -> Policy:
    """The balance's policy as stored; one that no longer validates falls back to the
    defaults rather than stopping the poll for the whole fleet."""
    try:
        return Policy.model_validate(stored or {})
    except ValueError:
        return Policy()


def _mark_signalled(url: str, carrier: str, usage: Sequence[LineUsage]) -> None:
    """Upsert the watermark of each delivered line: never lowered by a late reading."""
    if not usage:
        return
    rows = [
        {
            "carrier": carrier,
            "carrier_line_id": u.line_id,
            "signalled_bytes": u.used_bytes,
            "observed_at": u.observed_at,
        }
        for u in usage
    ]
    with session_scope(url) as session:
        insert = dialect_insert(session, UsageWatermark)
        table = UsageWatermark.__table__  # type: ignore[attr-defined]
        newer = insert.excluded.signalled_bytes > table.c.signalled_bytes
        session.execute(
            insert.on_conflict_do_update(
                index_elements=["carrier", "carrier_line_id"],
                set_={
                    "signalled_bytes": sa.case(
                        (newer, insert.excluded.signalled_bytes), else_=table.c.signalled_bytes
                    ),
                    "observed_at": sa.case(
                        (newer, insert.excluded.observed_at), else_=table.c.observed_at
                    ),
                },
            ),
            rows,
        )


def _forget_ended_lines(url: str, carrier: str) -> None:
    """Drop the watermarks of lines that are no longer active: the table stays as small
    as the fleet's active lines."""
    active = select(BalanceLine.carrier_line_id).where(
        col(BalanceLine.carrier) == carrier,
        col(BalanceLine.state) == "active",
        col(BalanceLine.carrier_line_id).is_not(None),
    )
    with session_scope(url) as session:
        session.execute(
            sa.delete(UsageWatermark).where(
                col(UsageWatermark.carrier) == carrier,
                col(UsageWatermark.carrier_line_id).not_in(active),
            )
        )
