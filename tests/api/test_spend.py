"""The spend ledger over HTTP: what the passes bought cost per carrier, product, UTC day
and customer; filters, pages, the CSV export, bad input. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from models.db import init_db, session_scope
from models.tables import Balance, BalanceLine, Esim
from tests.api.conftest import OPERATOR_KEY, SERVICE_KEY, new_iccid, product
from tests.api.helpers import offline_api, offline_settings

AUTH = {"Authorization": f"Bearer {OPERATOR_KEY}"}
CSV = "text/csv"


def _balance(session: Any, carrier: str, product_id: str, customer: str | None) -> Balance:
    iccid = new_iccid()
    session.add(Esim(iccid=iccid, carrier=carrier, customer_ref=customer))
    session.flush()
    row = Balance(
        id=f"bal_{iccid[-12:]}",
        iccid=iccid,
        open_iccid=iccid,
        carrier=carrier,
        product_id=product_id,
        workflow_id=f"balance-{iccid}",
        customer_ref=customer,
    )
    session.add(row)
    session.flush()
    return row


def _line(
    row: Balance,
    seq: int,
    ordered: str | None,
    cents: int | None,
    currency: str | None = "USD",
    state: str | None = None,
    refunded: int | None = None,
) -> BalanceLine:
    return BalanceLine(
        balance_id=row.id,
        seq=seq,
        iccid=row.iccid,
        carrier=row.carrier,
        carrier_line_id=f"pkg-{row.id}-{seq}" if ordered else None,
        reference=f"{row.id}:{seq}",
        product_id=row.product_id,
        state=state or ("expired" if ordered else "scheduled"),
        allowance_bytes=1_000_000,
        ordered_at=datetime.fromisoformat(ordered).replace(tzinfo=UTC) if ordered else None,
        # Served (expired): it took effect; withdrawn (cancelled): never did.
        activated_at=datetime.fromisoformat(ordered).replace(tzinfo=UTC)
        if ordered and state is None
        else None,
        price_cents=cents,
        currency=currency if cents is not None else None,
        refunded_cents=refunded,
    )


def seed(url: str) -> None:
    """Telna (customer acme): two priced days, one line bought before prices were
    recorded, one not bought yet; Webbing (no customer): one line, and a change withdrawn
    before it took effect; eSIM Go (globex): one line in EUR, and one revoked unused with
    its price refunded to the account's balance."""
    init_db(url)
    with session_scope(url) as session:
        for carrier, pid in (("telna", "daily-1gb"), ("webbing", "1042"), ("esimgo", "day")):
            row = product(carrier, pid, 86_400)
            row.rotation = "in_place" if carrier == "webbing" else "queued"
            session.add(row)
        session.flush()
        telna = _balance(session, "telna", "telna-daily-1gb", "acme")
        webbing = _balance(session, "webbing", "webbing-1042", None)
        esimgo = _balance(session, "esimgo", "esimgo-day", "globex")
        session.add_all(
            [
                _line(telna, 1, "2025-12-31T23:00:00", None),
                _line(telna, 2, "2026-01-01T10:00:00", 150),
                _line(telna, 3, "2026-01-02T10:00:00", 175),
                _line(telna, 4, None, None),
                _line(webbing, 1, "2026-01-01T12:00:00", 200),
                # A change in place withdrawn before it took effect: Webbing bills none.
                _line(webbing, 2, "2026-01-01T13:00:00", 200, state="cancelled"),
                _line(esimgo, 1, "2026-01-02T23:59:59", 120, "EUR"),
                # Bought, then revoked unused with its price credited back: billed 0.
                _line(esimgo, 2, "2026-01-02T08:00:00", 120, "EUR", "cancelled", refunded=120),
            ]
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = offline_settings(tmp_path_factory.mktemp("spend"))
    seed(settings.database_url)
    with offline_api(settings) as url:
        yield url


def _get(url: str, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    return httpx.get(f"{url}/v1/spend", params=params, headers=headers or AUTH, timeout=10)


def _rows(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (g["key"], g["currency"], g["amount"], g["amount_cents"], g["lines"], g["unpriced_lines"])
        for g in body["groups"]
    ]


BY_CARRIER = [
    ("esimgo", "EUR", "1.20", 120, 2, 0),
    ("telna", "USD", "3.25", 325, 3, 1),
    ("webbing", "USD", "2.00", 200, 1, 0),
]


def test_spend_is_grouped_by_carrier_per_currency_by_default(served: str) -> None:
    r = _get(served)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["group_by"], body["since"], body["until"], body["next_cursor"]) == (
        "carrier",
        None,
        None,
        None,
    )
    # The line bought before prices were recorded counts as a line of unknown price.
    assert _rows(body) == BY_CARRIER
    # eSIM Go's refunded bundle: bought (a line), credited back, so billed nothing.
    refunds = [(g["key"], g["refunded"], g["refunded_cents"]) for g in body["groups"]]
    assert refunds == [("esimgo", "1.20", 120), ("telna", "0.00", 0), ("webbing", "0.00", 0)]


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        (
            "product",
            [
                ("esimgo-day", "EUR", "1.20", 120, 2, 0),
                ("telna-daily-1gb", "USD", "3.25", 325, 3, 1),
                ("webbing-1042", "USD", "2.00", 200, 1, 0),
            ],
        ),
        (
            "day",
            [
                ("2025-12-31", "USD", None, None, 1, 1),
                ("2026-01-01", "USD", "3.50", 350, 2, 0),
                ("2026-01-02", "EUR", "1.20", 120, 2, 0),
                ("2026-01-02", "USD", "1.75", 175, 1, 0),
            ],
        ),
        (
            "customer",
            [
                ("acme", "USD", "3.25", 325, 3, 1),
                ("globex", "EUR", "1.20", 120, 2, 0),
                (None, "USD", "2.00", 200, 1, 0),
            ],
        ),
    ],
)
def test_spend_groups_by_product_day_or_customer(
    served: str, group_by: str, expected: list[tuple[Any, ...]]
) -> None:
    r = _get(served, group_by=group_by)
    assert r.status_code == 200, r.text
    assert _rows(r.json()) == expected


def test_since_and_until_are_utc_days_of_purchase_inclusive(served: str) -> None:
    body = _get(served, since="2026-01-01", until="2026-01-01").json()
    assert (body["since"], body["until"]) == ("2026-01-01", "2026-01-01")
    assert _rows(body) == [
        ("telna", "USD", "1.50", 150, 1, 0),
        ("webbing", "USD", "2.00", 200, 1, 0),
    ]
    later = _get(served, since="2026-01-02").json()
    assert [(g["key"], g["amount_cents"]) for g in later["groups"]] == [
        ("esimgo", 120),
        ("telna", 175),
    ]


def test_spend_filters_by_carrier_and_customer(served: str) -> None:
    assert _rows(_get(served, carrier="webbing").json()) == [BY_CARRIER[2]]
    assert _rows(_get(served, customer_ref="acme").json()) == [BY_CARRIER[1]]
    assert _rows(_get(served, customer_ref="nobody").json()) == []


def test_spend_pages_follow_next_cursor(served: str) -> None:
    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        body = _get(served, **params).json()
        seen += _rows(body)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == BY_CARRIER
    # A cursor of another grouping is none this grouping returned.
    first = _get(served, limit=1).json()["next_cursor"]
    r = _get(served, group_by="day", cursor=first)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize("ask", [{"format": "csv"}, {"accept": "text/csv"}])
def test_the_csv_export_holds_the_same_rows_under_a_header(
    served: str, ask: dict[str, str]
) -> None:
    headers = AUTH | ({"Accept": ask["accept"]} if "accept" in ask else {})
    params = {"group_by": "customer", "limit": 1} | ({"format": "csv"} if "format" in ask else {})
    r = _get(served, headers, **params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(CSV)
    assert 'filename="spend-by-customer.csv"' in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows == [
        [
            "customer",
            "currency",
            "amount",
            "amount_cents",
            "lines",
            "unpriced_lines",
            "refunded",
            "refunded_cents",
        ],
        ["acme", "USD", "3.25", "325", "3", "1", "0.00", "0"],
        ["globex", "EUR", "1.20", "120", "2", "0", "1.20", "120"],
        # Every group, unpaged; no customer: empty.
        ["", "USD", "2.00", "200", "1", "0", "0.00", "0"],
    ]
    # format=json wins over the Accept header.
    r = _get(served, AUTH | {"Accept": CSV}, format="json")
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"group_by": "iccid"}, "invalid_request", "query.group_by"),
        ({"since": "2026-02-30"}, "invalid_request", "query.since"),
        ({"since": "2026-01-01T00:00:00Z"}, "invalid_request", "query.since"),
        ({"until": "yesterday"}, "invalid_request", "query.until"),
        ({"since": "2026-01-02", "until": "2026-01-01"}, "invalid_request", "before since"),
        ({"carrier": "vodafone"}, "invalid_request", "query.carrier"),
        ({"customer_ref": "=HYPERLINK(1)"}, "invalid_request", "query.customer_ref"),
        ({"format": "xml"}, "invalid_request", "query.format"),
        ({"limit": 0}, "invalid_request", "query.limit"),
        ({"cursor": "not-ours"}, "invalid_cursor", "cursor"),
    ],
)
def test_bad_input_is_a_422_in_the_error_shape(
    served: str, params: dict[str, Any], code: str, message: str
) -> None:
    r = _get(served, **params)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == code and message in error["message"]


def test_service_keys_read_spend_and_no_key_is_refused(served: str) -> None:
    service = _get(served, {"Authorization": f"Bearer {SERVICE_KEY}"})
    assert service.status_code == 200
    refused = httpx.get(f"{served}/v1/spend", timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"


def test_the_report_reads_alike_on_sqlite_and_postgresql(database_url: str, tmp_path: Any) -> None:
    settings = offline_settings(tmp_path, database_url=database_url)
    seed(database_url)
    with offline_api(settings) as url:
        assert _rows(_get(url).json()) == BY_CARRIER
        days = _rows(_get(url, group_by="day").json())
    assert [(d[0], d[1], d[3]) for d in days] == [
        ("2025-12-31", "USD", None),
        ("2026-01-01", "USD", 350),
        ("2026-01-02", "EUR", 120),
        ("2026-01-02", "USD", 175),
    ]


def test_the_openapi_schema_documents_the_report_as_json_and_csv(served: str) -> None:
    schema = httpx.get(f"{served}/openapi.json", timeout=10).json()
    operation = schema["paths"]["/v1/spend"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert {"group_by", "since", "until", "carrier", "customer_ref", "format"} <= set(params)
    assert {"limit", "cursor"} <= set(params)
    assert params["since"]["schema"]["format"] == "date"
    ok = operation["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/SpendReport"}
    assert ok["text/csv"]["schema"] == {"type": "string"}
    assert set(operation["responses"]) == {"200", "401", "403", "422"}
    group = schema["components"]["schemas"]["SpendGroup"]["properties"]
    assert set(group) == {
        "key",
        "currency",
        "amount",
        "amount_cents",
        "lines",
        "unpriced_lines",
        "refunded",
        "refunded_cents",
    }
