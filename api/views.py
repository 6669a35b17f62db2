"""Database rows as the API's public models."""

from __future__ import annotations

from datetime import datetime

from api.schemas.balances import BalanceDetail, BalancePublic, LinePublic
from api.schemas.esims import EsimPublic
from api.schemas.products import ProductPublic
from api.schemas.spend import CurrencySpend, SpendGroup
from models.continuity import Continuity
from models.payloads import BalanceStatus, LineState, Policy
from models.spend import Tally, spent
from models.tables import Balance, BalanceLine, Esim, Product


def balance_public(row: Balance) -> BalancePublic:
    return BalancePublic(
        id=row.id,
        iccid=row.iccid,
        carrier=row.carrier,
        product_id=row.product_id,
        next_product_id=row.next_product_id,
        lines_total=row.lines_total,
        policy=Policy.model_validate(row.policy or {}),
        state=BalanceStatus(row.state),
        workflow_id=row.workflow_id,
        line_seq=row.line_seq,
        line_ends_at=row.line_ends_at,
        rotations=row.rotations,
        paused=row.paused,
        capped=row.capped,
        failing_reason=row.failing_reason,
        customer_ref=row.customer_ref,
        created_at=row.created_at,
        updated_at=row.updated_at,
        closed_at=row.closed_at,
    )


def line_public(row: BalanceLine) -> LinePublic:
    return LinePublic(
        id=row.reference,
        seq=row.seq,
        state=LineState(row.state),
        product_id=row.product_id,
        carrier_line_id=row.carrier_line_id,
        allowance_bytes=row.allowance_bytes,
        used_bytes=row.used_bytes,
        ordered_at=row.ordered_at,
        activated_at=row.activated_at,
        ends_at=row.ends_at,
        ended_at=row.ended_at,
        exhausted_at=row.exhausted_at,
        price_cents=row.price_cents,
        currency=row.currency,
    )


def balance_detail(
    row: Balance,
    lines: list[BalanceLine],
    next_cursor: str | None,
    since: datetime,
    continuity: Continuity | None,
    spend: list[Tally],
) -> BalanceDetail:
    return BalanceDetail(
        **balance_public(row).model_dump(),
        lines=[line_public(line) for line in lines],
        next_cursor=next_cursor,
        continuity_since=since,
        continuity=continuity,
        spend=[currency_spend(t) for t in spend],
    )


def esim_public(row: Esim, open_balance: Balance | None) -> EsimPublic:
    return EsimPublic(
        id=row.iccid,
        iccid=row.iccid,
        carrier=row.carrier,
        eid=row.eid,
        customer_ref=row.customer_ref,
        created_at=row.created_at,
        open_balance=balance_public(open_balance) if open_balance else None,
    )


def product_public(row: Product) -> ProductPublic:
    return ProductPublic.model_validate(row, from_attributes=True)


def currency_spend(t: Tally) -> CurrencySpend:
    return CurrencySpend(**spent(t))


def spend_group(t: Tally) -> SpendGroup:
    return SpendGroup(key=t.key, **spent(t))
