"""The audit's activity: workflows, database and carriers compared, page by page.

One activity call audits one page of open balances (keyset by balance id): it reads
their rows and lines, asks each balance's carrier for the eSIM's packages
(``find_lines``) and Temporal whether its workflow runs, a bounded number of balances
at once, never one workflow or activity per balance. ``services.audit_rules.compare``
says what disagrees; this module repairs what is safe and records every finding as a
ledger event (actor ``audit``, kind ``audit_<kind>``, key
``audit:{balance_id}:{kind}:{subject}``, so an audit that sees the same thing again
adds no second event; the keys an earlier audit wrote are read first, in one query per
balance, and not written again) and counts it in ``esim_audit_findings`` (once, with
the event).

Repair rules — the carrier is the truth for what exists and what it costs; the
workflow is the only one that buys and switches:

- ``missing_workflow`` (open balance, no running workflow): restarted from the database
  and the carrier's packages (``activities.audit_restart``), adopting the active and
  scheduled lines, so nothing is bought twice. Checked again against the database just
  before, so a balance that closed meanwhile is left closed.
- ``ghost_line`` (database: active/scheduled; carrier: ended, or no such package): the
  row takes the carrier's end (``expired``, ``cancelled``, ``failed``), and the workflow
  gets the ``audit`` signal naming the line: it drops such a scheduled line and orders
  the next when due (at once, past the order time), and rotates away from such an
  active line now — the eSIM has no service on it. A signal, not ``rotate_now``: it
  names the line, so a repeated or late notice does nothing once the workflow has
  moved on, and a scheduled line is replaced without ending the good active one.
- ``orphan_purchase`` (a package on the eSIM no database line knows: not by the
  carrier's package id, nor by our reference where the package carries one). One
  carrying this balance's reference, for a seq no other package holds: a scheduled one
  is cancelled (nobody will activate it; a queued start would, later, as a second line);
  an active one is ended if the balance has another, current, active line, and kept
  otherwise (never the only active line of an open balance); an ended one is only
  written down. Either way the database then holds it as the line of that seq. One
  carrying no reference (most carriers have no field for it), or a second package for a
  seq that is already another's, is flagged only: without a reference its seq would be
  a guess, and it may as well be a purchase made outside the product. An operator
  looks; nothing is ended or written under a seq. Packages ordered before the balance
  was opened and carrying no reference are not looked at (the eSIM's earlier balances',
  or the carrier's own).
- ``two_active_lines`` (more than one active package for longer than margin + 60 s):
  our packages (a database line's, or carrying this balance's reference) other than the
  balance's current line are ended; any other package is never touched, only reported.
- ``missing_scheduled_line`` (past the current line's ``order_at`` and nothing ordered):
  the workflow gets the ``audit`` signal, which wakes it to re-check its deadlines
  (a workflow still retrying a failing carrier just goes on). Not ``rotate_now``: that
  would end the active line early and pay for a pass that is not needed yet.
- ``stuck_scheduled`` (still scheduled at the carrier after its switch time): flagged
  only. The workflow is already retrying the activation; an operator looks.
- ``unpriced_purchase`` (a package the carrier holds for one of our lines, the line's
  price never recorded: the spend ledger under-reports it): where the package shows
  what the carrier charged, that price is written (only while the row still has none,
  and counted in ``esim_spend`` then); else flagged, the detail naming the catalogue's
  price of the product now as a hint. No carrier's package shows a price today
  (CARRIERS.md; each client's ``package_price`` declaration), so it is flagged.
- ``price_mismatch`` (the package shows what the carrier charged, and the line's
  recorded price or currency differs): flagged with both figures, never rewritten.
  Keyed by the line and both figures: the same disagreement is one finding.
- An ``orphan_purchase``'s detail names the price its package shows (``carrier_price_
  cents``, ``carrier_currency``), else the catalogue's price of its product now
  (``catalogue_price_cents``, ``catalogue_currency``): the money at stake.

A purchase the audit writes down (an orphan carrying our reference) is priced as an
order's line is (``models/prices.py``), so it is no ``unpriced_purchase`` afterwards.

The metric's ``repaired`` label is ``true`` when the audit acted (row corrected,
package ended, workflow signalled or restarted) and ``false`` when it only reported or
its repair failed; a failed repair is tried again by the next audit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.audit_restart import carrier_line, read_carrier, read_known, rebuild_state
from activities.store import StoreActivities
from carriers.base import Carrier, CarrierLine
from carriers.errors import CarrierError
from models.audit import AuditPage, AuditPageResult, AuditReport
from models.payloads import AuditNotice, LineState, RecordChanges
from models.prices import line_price
from services import metrics
from services.audit_rules import (
    BalanceView,
    Finding,
    Kind,
    Repair,
    compare,
    record_as,
    settle_seconds,
)
from services.audit_store import (
    OpenBalance,
    catalogue_price,
    correct_row,
    event_key,
    read_page,
    read_view,
    record_finding,
    record_price,
    recorded,
)
from services.enrolment import start_workflow, workflow_id

# Findings about a purchase's money: their detail names what is at stake.
_PRICED_KINDS = frozenset({Kind.orphan_purchase, Kind.unpriced_purchase})


class AuditActivities:
    """The audit against carriers, Temporal and the database, all injected."""

    def __init__(
        self,
        carriers: Mapping[str, Carrier],
        client: Client,
        database_url: str,
        task_queue: str,
    ) -> None:
        self._carriers = carriers
        self._client = client
        self._url = database_url
        self._task_queue = task_queue
        self._store = StoreActivities(database_url)

    @activity.defn(name="audit_page")
    async def audit_page(self, req: AuditPage) -> AuditPageResult:
        """Audit up to ``limit`` open balances after ``after``; repair, record, count."""
        page = await asyncio.to_thread(read_page, self._url, req.after, req.limit)
        gate = asyncio.Semaphore(req.concurrency)
        reports = await asyncio.gather(*(self._audit(open_, req, gate) for open_ in page))
        total = AuditReport()
        for report in reports:
            total = total.add(report)
        full = len(page) == req.limit
        return AuditPageResult(report=total, next_after=page[-1].balance_id if full else None)

    async def _audit(
        self, open_: OpenBalance, req: AuditPage, gate: asyncio.Semaphore
    ) -> AuditReport:
        async with gate:
            carrier = self._carriers.get(open_.carrier)
            try:
                if carrier is None:
                    raise CarrierError(open_.carrier, "no client for this carrier")
                found = await carrier.find_lines(open_.iccid)
                running, run_id = await self._workflow(open_.iccid)
            except (CarrierError, RPCError) as error:
                activity.logger.warning("audit of %s skipped: %s", open_.balance_id, error)
                activity.heartbeat()
                return AuditReport(balances=1, unreadable=1)
            # The database is read after the carrier and Temporal: what the workflow
            # recorded meanwhile is seen, so a package it just ordered is no orphan, and
            # a workflow that completed has closed its balance already.
            view = await asyncio.to_thread(read_view, self._url, open_.balance_id)
            if view is None:
                activity.heartbeat()
                return AuditReport(balances=1)  # closed since the page was read
            now = datetime.now(UTC)
            settle = settle_seconds(view, req.settle_seconds)
            findings = compare(view, found, now, settle, req.switch_allowance_seconds)
            report = AuditReport(balances=1)
            # Findings an earlier audit recorded, in one read: a finding that lasts (a
            # line bought before prices were recorded stays unpriced) costs no write and
            # no catalogue read at every audit. Its repairs are still made each time.
            keys = [event_key(view.balance_id, f.kind, f.subject) for f in findings]
            seen = await asyncio.to_thread(recorded, self._url, keys) if keys else set()
            for finding, key in zip(findings, keys, strict=True):
                done = await self._repair(view, finding, found, signal=running)
                if key in seen:
                    report = report.add(AuditReport(findings={finding.kind.value: 1}))
                else:
                    report = report.add(await self._record(view, finding, done, now))
            if not running:
                missing = Finding(
                    kind=Kind.missing_workflow,
                    subject=run_id or "never-started",
                    detail={"dead_run_id": run_id},
                )
                restarted = await self._restart(view, carrier, missing, now)
                report = report.add(await self._record(view, missing, restarted, now))
                report.restarted += restarted
            activity.heartbeat()
            return report

    async def _workflow(self, iccid: str) -> tuple[bool, str | None]:
        """Whether the balance's workflow runs, and the id of its latest run."""
        handle = self._client.get_workflow_handle(workflow_id(iccid))
        try:
            described = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return False, None
            raise
        return described.status == WorkflowExecutionStatus.RUNNING, described.run_id

    # --- repairs ------------------------------------------------------------------------

    async def _repair(
        self, view: BalanceView, finding: Finding, found: list[CarrierLine], signal: bool
    ) -> bool:
        """Apply the finding's repairs; True if any was made, False if none or one failed."""
        acted = False
        by_id = {line.line_id: line for line in found}
        try:
            for repair in finding.repairs:
                if repair is Repair.correct_row:
                    line = by_id.get(finding.line_id or "")
                    await asyncio.to_thread(correct_row, self._url, view, finding, line)
                elif repair is Repair.record_row and finding.line_id in by_id:
                    await self._write_line(view, by_id[finding.line_id or ""])
                elif repair is Repair.deactivate:
                    ids = finding.detail.get("end") or [finding.line_id]
                    for line_id in ids:
                        ended = await self._carriers[view.carrier].deactivate(line_id)
                        listed = by_id.get(line_id, ended)
                        await self._write_line(view, ended, LineState.cancelled, listed)
                elif repair is Repair.notify and signal:
                    await self._notify(view, finding)
                elif repair is Repair.record_price:
                    if not await asyncio.to_thread(record_price, self._url, view, finding):
                        continue  # priced meanwhile: nothing written, nothing counted
                    cents, currency = (
                        finding.detail["carrier_price_cents"],
                        finding.detail["carrier_currency"],
                    )
                    metrics.spend.labels(view.carrier, currency).inc(cents / 100)
                else:
                    continue
                acted = True
        except (CarrierError, RPCError) as error:
            activity.logger.warning(
                "audit repair of %s %s failed: %s", finding.kind, view.balance_id, error
            )
            finding.detail["repair_error"] = str(error)
            return False
        return acted

    def _catalogue_hint(self, view: BalanceView, finding: Finding) -> None:
        """Where the carrier shows no price for a purchase the ledger does not hold (an
        orphan, an unpriced line), the detail names the catalogue's price of its product
        now, so the money at stake is visible; a hint for an operator, never recorded as
        what the purchase cost (the catalogue may have changed since)."""
        detail = finding.detail
        product_id = detail.get("carrier_product_id")
        if detail.get("carrier_price_cents") is not None or not product_id:
            return
        price = catalogue_price(self._url, view.carrier, product_id)
        detail["catalogue_price_cents"] = price.cents if price else None
        detail["catalogue_currency"] = price.currency if price else None

    async def _write_line(
        self,
        view: BalanceView,
        found: CarrierLine,
        state: LineState | None = None,
        listed: CarrierLine | None = None,
    ) -> None:
        """The database learns (or corrects) a package of this balance as it is now, under
        the seq and reference ``record_as`` gives it as the audit read it (``listed``: a
        carrier's answer to a change need not repeat the reference it lists); a package
        without is not written."""
        line = record_as(view, listed or found)
        known = await asyncio.to_thread(read_known, self._url, view.balance_id)
        if line is None or known is None:
            return
        seq, reference = line
        spec = known.products.get(found.carrier_product_id, known.product)
        written = carrier_line(found, seq, reference, spec, state)
        if all(row.seq != seq for row in view.lines):
            # A purchase the database learns now is priced as an order's line is
            # (models/prices.py): the carrier's own price, else the catalogue's now, else
            # the spec's. A row it holds keeps what it has (an unpriced one is a finding).
            catalogue = await asyncio.to_thread(
                catalogue_price, self._url, view.carrier, found.carrier_product_id
            )
            written = line_price(written, catalogue, spec)
        changes = RecordChanges(
            balance_id=view.balance_id,
            iccid=view.iccid,
            carrier=view.carrier,
            lines=[written],
        )
        await asyncio.to_thread(self._store.record_changes, changes)

    async def _notify(self, view: BalanceView, finding: Finding) -> None:
        """The ``audit`` signal, naming the line by our reference as the database holds it."""
        notice = AuditNotice(
            kind=finding.kind.value,
            reference=finding.reference,
            reason=f"audit: {finding.kind.value} {finding.subject}",
        )
        await self._client.get_workflow_handle(workflow_id(view.iccid)).signal("audit", notice)

    async def _restart(
        self, view: BalanceView, carrier: Carrier, missing: Finding, now: datetime
    ) -> bool:
        """Start the workflow again from the database and the carrier, if still open."""
        known = await asyncio.to_thread(read_known, self._url, view.balance_id)
        if known is None:
            missing.detail["skipped"] = "closed meanwhile, or its product is unknown"
            return False
        try:
            found = await read_carrier(carrier, view.iccid, known)  # after this audit's repairs
            state = rebuild_state(known, found, now)
            adopted = [line for line in (state.active, state.scheduled) if line is not None]
            if adopted:
                changes = RecordChanges(
                    balance_id=view.balance_id,
                    iccid=view.iccid,
                    carrier=view.carrier,
                    lines=adopted,
                )
                await asyncio.to_thread(self._store.record_changes, changes)
            await start_workflow(self._client, self._task_queue, state)
        except (CarrierError, RPCError) as error:
            missing.detail["repair_error"] = str(error)
            activity.logger.warning("audit restart of %s failed: %s", view.balance_id, error)
            return False
        missing.detail.update(
            active_seq=state.active.seq if state.active else None,
            scheduled_seq=state.scheduled.seq if state.scheduled else None,
            last_seq=state.last_seq,
        )
        activity.logger.info("audit restarted the workflow of %s", view.balance_id)
        return True

    async def _record(
        self, view: BalanceView, finding: Finding, repaired: bool, now: datetime
    ) -> AuditReport:
        """The ledger event of a finding; counted in the metric only the first time."""
        if finding.kind in _PRICED_KINDS:
            await asyncio.to_thread(self._catalogue_hint, view, finding)
        new = await asyncio.to_thread(record_finding, self._url, view, finding, repaired, now)
        if new:
            metrics.audit_findings.labels(finding.kind.value, str(repaired).lower()).inc()
        kind = finding.kind.value
        return AuditReport(findings={kind: 1}, new_findings={kind: 1} if new else {})
