"""The operator's customer_ref on eSIMs and balances: taken from the API, the command line
and a CSV column, checked, stored, shown; a balance without one inherits its eSIM's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from models.db import init_db, session_scope
from models.identifiers import InvalidIdentifier, validate_customer_ref
from models.tables import Balance, BalanceLine, Esim
from services.enrolment import EnrolmentError, EnrolRequest, parse_request, register
from starter import read_csv
from tests.api.conftest import OPERATOR_KEY, new_iccid, product
from tests.api.helpers import offline_api, offline_settings

AUTH = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.mark.parametrize("ref", ["ACME-0042", "a", "cust 7/eu@north+1:x.y_z", "9" * 64])
def test_customer_refs_of_letters_digits_and_separators_are_taken(ref: str) -> None:
    assert validate_customer_ref(ref) == ref


@pytest.mark.parametrize("ref", ["", " acme", "=SUM(A1)", "-1", "x" * 65, "acme\n", "ümlaut"])
def test_customer_refs_a_spreadsheet_could_read_as_a_formula_are_refused(ref: str) -> None:
    with pytest.raises(InvalidIdentifier):
        validate_customer_ref(ref)
    with pytest.raises(EnrolmentError, match="customer_ref"):
        parse_request(
            {"iccid": new_iccid(), "carrier": "telna", "product_id": "p", "customer_ref": ref}
        )


def test_a_csv_names_the_customer_in_its_fifth_column_or_where_its_header_says(
    tmp_path: Path,
) -> None:
    first, second, third = new_iccid(), new_iccid(), new_iccid()
    positional = tmp_path / "positional.csv"
    positional.write_text(
        f"{first},telna,telna-daily-1gb,,ACME-1\n{second},telna,telna-daily-1gb,3\n"
        f"{third},telna,telna-daily-1gb,3,=bad\n"
    )
    rows = read_csv(positional)
    assert [(n, r.customer_ref, r.lines) for n, r in rows[:2]] == [  # type: ignore[union-attr]
        (1, "ACME-1", None),
        (2, None, 3),
    ]
    assert rows[2][0] == 3 and "customer_ref" in str(rows[2][1])
    named = tmp_path / "named.csv"
    named.write_text(
        f"iccid,carrier,product_id,customer_ref\n{first},telna,telna-daily-1gb,ACME-2\n"
    )
    ((number, request),) = read_csv(named)
    assert number == 2 and isinstance(request, EnrolRequest)
    assert (request.customer_ref, request.lines) == ("ACME-2", None)


def test_a_balance_takes_its_own_customer_or_its_esims(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'customers.db'}"
    init_db(url)
    with session_scope(url) as session:
        session.add(product("telna", "daily-1gb", 86_400))
    iccid, other = new_iccid(), new_iccid()
    req = EnrolRequest(
        iccid=iccid, carrier="telna", product_id="telna-daily-1gb", customer_ref="ACME-1"
    )
    named, _ = register(url, req, "test")
    inherited, _ = register(
        url, EnrolRequest(iccid=other, carrier="telna", product_id="telna-daily-1gb"), "test"
    )
    with session_scope(url) as session:
        esim = session.get(Esim, iccid)
        assert esim is not None and esim.customer_ref == "ACME-1"  # an eSIM without one takes it
        balance = session.get(Balance, named.balance_id)
        assert balance is not None and balance.customer_ref == "ACME-1"
        # Its balance closed, the eSIM is enrolled for another customer: it keeps its own.
        balance.open_iccid, balance.state = None, "Cancelled"
        none = session.get(Balance, inherited.balance_id)
        assert none is not None and none.customer_ref is None
    again, _ = register(
        url,
        EnrolRequest(
            iccid=iccid, carrier="telna", product_id="telna-daily-1gb", customer_ref="GLOBEX"
        ),
        "test",
    )
    fresh, _ = register(
        url, EnrolRequest(iccid=iccid, carrier="telna", product_id="telna-daily-1gb"), "test"
    )
    with session_scope(url) as session:
        moved = session.get(Balance, again.balance_id)
        assert moved is not None and moved.customer_ref == "GLOBEX"
        assert fresh.balance_id == again.balance_id  # still open: the same balance
        esim = session.get(Esim, iccid)
        assert esim is not None and esim.customer_ref == "ACME-1"


def test_the_api_registers_shows_and_guards_an_esims_customer(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    init_db(settings.database_url)
    iccid = new_iccid()
    with offline_api(settings) as url:
        body = {"iccid": iccid, "carrier": "telna", "customer_ref": "ACME-1"}
        made = httpx.post(f"{url}/v1/esims", json=body, headers=AUTH, timeout=10)
        assert made.status_code == 201 and made.json()["customer_ref"] == "ACME-1"
        again = httpx.post(f"{url}/v1/esims", json=body, headers=AUTH, timeout=10)
        assert again.status_code == 200 and again.json()["customer_ref"] == "ACME-1"
        other = httpx.post(
            f"{url}/v1/esims", json=body | {"customer_ref": "GLOBEX"}, headers=AUTH, timeout=10
        )
        assert other.status_code == 409 and other.json()["error"]["code"] == "esim_conflict"
        bad = httpx.post(
            f"{url}/v1/esims", json=body | {"customer_ref": "=1+1"}, headers=AUTH, timeout=10
        )
        assert bad.status_code == 422 and "customer_ref" in bad.json()["error"]["message"]
        shown = httpx.get(f"{url}/v1/esims/{iccid}", headers=AUTH, timeout=10)
        assert shown.json()["customer_ref"] == "ACME-1"


def test_a_balance_shows_its_customer_and_what_its_passes_cost(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    url = settings.database_url
    init_db(url)
    with session_scope(url) as session:
        session.add(product("telna", "daily-1gb", 86_400))
    iccid = new_iccid()
    req = EnrolRequest(
        iccid=iccid, carrier="telna", product_id="telna-daily-1gb", customer_ref="ACME-1"
    )
    state, _ = register(url, req, "test")
    with session_scope(url) as session:
        for seq, cents in ((1, None), (2, 150), (3, 150)):
            session.add(
                BalanceLine(
                    balance_id=state.balance_id,
                    seq=seq,
                    iccid=iccid,
                    carrier="telna",
                    carrier_line_id=f"pkg-{seq}",
                    reference=f"{state.balance_id}:{seq}",
                    product_id="telna-daily-1gb",
                    state="expired",
                    allowance_bytes=1_000_000,
                    price_cents=cents,
                    currency="USD" if cents else None,
                )
            )
        assert session.exec(select(BalanceLine)).first() is not None
    with offline_api(settings) as api:
        got = httpx.get(f"{api}/v1/balances/{state.balance_id}", headers=AUTH, timeout=10)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["customer_ref"] == "ACME-1"
    assert [(line["seq"], line["price_cents"], line["currency"]) for line in body["lines"]] == [
        (3, 150, "USD"),
        (2, 150, "USD"),
        (1, None, None),
    ]
    # The unpriced line (bought before prices were recorded) is counted, never as 0.
    assert body["spend"] == [
        {
            "currency": "USD",
            "amount": "3.00",
            "amount_cents": 300,
            "lines": 3,
            "unpriced_lines": 1,
            "refunded": "0.00",
            "refunded_cents": 0,
        }
    ]
