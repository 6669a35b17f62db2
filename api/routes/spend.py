"""The spend ledger: what the chain cost, per carrier, product, UTC day or customer."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from api import pagination
from api.deps import ReaderDep, SessionDep
from api.errors import ApiError, documented
from api.schemas.common import CarrierName
from api.schemas.spend import CSV_COLUMNS, SpendReport
from api.views import spend_group
from models.identifiers import CUSTOMER_REF_PATTERN
from models.spend import Filters, GroupBy, Tally, after, load_spend

router = APIRouter(prefix="/v1/spend", tags=["spend"])

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
CSV_TYPE = "text/csv"


def _day(name: str, description: str) -> object:
    return Query(
        max_length=10,
        pattern=DATE_PATTERN,
        description=description,
        examples=["2026-12-01"],
        json_schema_extra={"format": "date"},
        alias=name,
    )


SinceDay = Annotated[
    str | None, _day("since", "First UTC day counted, YYYY-MM-DD (by when a pass was bought)")
]
UntilDay = Annotated[str | None, _day("until", "Last UTC day counted, YYYY-MM-DD (inclusive)")]


@router.get(
    "",
    response_model=SpendReport,
    responses={
        200: {
            "description": "The groups as JSON, or as CSV with a header row (`format=csv` or "
            "`Accept: text/csv`: every group, unpaged)",
            "content": {CSV_TYPE: {"schema": {"type": "string"}}},
        },
        **documented(401, 403, 422),
    },
)
def get_spend(
    _: ReaderDep,
    session: SessionDep,
    group_by: GroupBy = "carrier",
    since: SinceDay = None,
    until: UntilDay = None,
    carrier: CarrierName | None = None,
    customer_ref: Annotated[str | None, Query(max_length=64, pattern=CUSTOMER_REF_PATTERN)] = None,
    format: Literal["json", "csv"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Groups per page (JSON)")] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """What the passes bought cost, grouped (by carrier unless `group_by` says), per
    currency; `format=csv` or `Accept: text/csv` for an export."""
    first, last = _date("since", since), _date("until", until)
    if first is not None and last is not None and last < first:
        raise ApiError(422, "invalid_request", "query.until: must not be before since")
    filters = Filters(
        since=_midnight(first),
        until=_midnight(last + timedelta(days=1)) if last is not None else None,
        carrier=carrier,
        customer_ref=customer_ref,
    )
    start = pagination.decode_group(cursor, group_by) if cursor is not None else None
    tallies = load_spend(session, group_by, filters)
    if format == "csv" or (format is None and CSV_TYPE in (accept or "").lower()):
        return _csv(group_by, tallies)
    page = after(tallies, *start) if start is not None else tallies
    more = len(page) > limit
    page = page[:limit]
    last_group = page[-1] if more else None
    report = SpendReport(
        group_by=group_by,
        since=first,
        until=last,
        groups=[spend_group(t) for t in page],
        next_cursor=pagination.encode_group(group_by, last_group.key, last_group.currency)
        if last_group is not None
        else None,
    )
    return JSONResponse(report.model_dump(mode="json"))


def _date(name: str, value: str | None) -> date | None:
    """A UTC day; 422 if it names none (a 30th of February)."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise ApiError(422, "invalid_request", f"query.{name}: {error}") from None


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), tzinfo=UTC)


def _csv(group_by: GroupBy, tallies: list[Tally]) -> Response:
    """Every group, one row each, under a header naming the grouping; null is empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow((group_by, *CSV_COLUMNS))
    for t in tallies:
        row = spend_group(t).model_dump()
        writer.writerow(["" if row[c] is None else row[c] for c in ("key", *CSV_COLUMNS)])
    return Response(
        out.getvalue(),
        media_type=f"{CSV_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="spend-by-{group_by}.csv"'},
    )
