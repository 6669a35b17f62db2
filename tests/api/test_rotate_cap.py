"""The API refuses an operator's rotation past the balance's cost cap of today, in lines
or in money, as the workflow counts it; on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from api.routes.balance_actions import cap_refusal
from models.db import migrate, session_scope
from models.tables import Balance, BalanceLine, Esim, Product


def _balance(url: str, policy: dict[str, object]) -> Balance:
    """A balance on a 1.50 USD pass, with nothing bought yet."""
    iccid = f"8944{uuid.uuid4().int % 10**15:015d}"
    product_id = f"telna-p-{iccid[-6:]}"
    balance = Balance(
        id=f"bal_{uuid.uuid4().hex[:12]}",
        iccid=iccid,
        open_iccid=iccid,
        carrier="telna",
        product_id=product_id,
        policy=policy,
        workflow_id=f"balance-{iccid}",
    )
    with session_scope(url) as session:
        session.add(Esim(iccid=iccid, carrier="telna"))
        session.flush()
        session.add(
            Product(
                id=product_id,
                carrier="telna",
                carrier_product_id=product_id,
                name="a pass",
                allowance_bytes=10**9,
                validity_seconds=86_400,
                throttle_kbps=128,
                price_cents=150,
                currency="USD",
            )
        )
        session.flush()
        session.add(balance)
        session.flush()
        session.expunge(balance)
    return balance


def _bought(url: str, b: Balance, seq: int, cents: int, state: str = "expired") -> None:
    now = datetime.now(UTC)
    with session_scope(url) as session:
        session.add(
            BalanceLine(
                balance_id=b.id,
                seq=seq,
                iccid=b.iccid,
                carrier="telna",
                carrier_line_id=f"pkg-{b.id}-{seq}",
                reference=f"{b.id}:{seq}",
                product_id=b.product_id,
                state=state,
                allowance_bytes=10**9,
                ordered_at=now - timedelta(seconds=1),
                activated_at=now if state != "scheduled" else None,
                price_cents=cents,
                currency="USD",
            )
        )


def test_a_rotation_that_would_spend_past_the_days_cap_is_refused(database_url: str) -> None:
    migrate(database_url)
    b = _balance(database_url, {"max_spend_per_day": "3.00"})
    assert cap_refusal(database_url, b) is None  # nothing spent
    _bought(database_url, b, 1, 150)
    assert cap_refusal(database_url, b) is None  # 1.50 + 1.50 is the cap, not past it
    _bought(database_url, b, 2, 100)
    refusal = cap_refusal(database_url, b)
    assert refusal == "would spend 4.00 USD today with its next line, past its 3.00"
    # A next line bought already costs nothing more to switch to.
    _bought(database_url, b, 3, 150, state="scheduled")
    assert cap_refusal(database_url, b) is None


def test_the_lines_cap_is_said_as_before(database_url: str) -> None:
    migrate(database_url)
    b = _balance(database_url, {"max_lines_per_day": 1})
    assert cap_refusal(database_url, b) is None
    _bought(database_url, b, 1, 150, state="active")
    assert cap_refusal(database_url, b) == "has had its 1 lines of today"
