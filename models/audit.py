"""The pydantic payloads of the audit: its workflow input, one page's work, the report.

Every field added later needs a default, so histories of running audits still decode.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class AuditReport(BaseModel):
    """What one audit saw: balances read, findings by kind, carriers it could not read."""

    balances: int = 0
    findings: dict[str, int] = {}
    new_findings: dict[str, int] = {}
    restarted: int = 0
    unreadable: int = 0

    def add(self, other: AuditReport) -> AuditReport:
        def total(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in sorted({*a, *b})}

        return AuditReport(
            balances=self.balances + other.balances,
            findings=total(self.findings, other.findings),
            new_findings=total(self.new_findings, other.new_findings),
            restarted=self.restarted + other.restarted,
            unreadable=self.unreadable + other.unreadable,
        )


class AuditInput(BaseModel):
    """Input of AuditWorkflow (the schedule passes the defaults).

    ``settle_seconds``: how old a carrier change must be before it is judged (None: per
    balance, its margin and at least 5 s). ``switch_allowance_seconds``: how long two
    lines may both be active beyond the margin (DESIGN invariant 2: 60 s).
    """

    page_size: int = Field(default=100, ge=1, le=1000)
    concurrency: int = Field(default=10, ge=1, le=100)
    settle_seconds: float | None = Field(default=None, ge=0)
    switch_allowance_seconds: float = Field(default=60.0, ge=0)
    # Carried through continue-as-new: where the next page starts, what was seen so far.
    after: str | None = None
    report: AuditReport = AuditReport()


class AuditPage(BaseModel):
    """Audit the open balances whose id comes after ``after``, ``limit`` of them."""

    after: str | None = None
    limit: int
    concurrency: int
    settle_seconds: float | None = None
    switch_allowance_seconds: float = 60.0


class AuditPageResult(BaseModel):
    """One page's report and where the next page starts (None: this was the last)."""

    report: AuditReport
    next_after: str | None = None
