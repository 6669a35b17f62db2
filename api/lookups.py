"""Database look-ups that routes share; each refuses with the API's error when it fails,
unless finding nothing is an answer (``None``)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from api import pagination
from api.errors import ApiError
from models.payloads import Policy, pass_problem, policy_problem
from models.tables import Balance, BalanceLine, Product


def balance_or_404(session: Session, balance_id: str) -> Balance:
    balance = session.get(Balance, balance_id)
    if balance is None:
        raise ApiError(404, "not_found", f"no balance {balance_id}")
    return balance


def open_balance_or_409(session: Session, balance_id: str) -> Balance:
    """The balance if it is still open (its workflow runs); 404 / 409 otherwise."""
    balance = balance_or_404(session, balance_id)
    if balance.closed_at is not None or balance.open_iccid is None:
        raise ApiError(409, "balance_closed", f"balance {balance_id} is {balance.state}")
    return balance


def line_page(
    session: Session, balance_id: str, limit: int, cursor: str | None = None
) -> tuple[list[BalanceLine], str | None]:
    """Up to ``limit`` of the balance's lines, newest first, after ``cursor``; and the
    cursor of the next page, if there is one."""
    query = select(BalanceLine).where(BalanceLine.balance_id == balance_id)
    if cursor is not None:
        query = query.where(col(BalanceLine.seq) < pagination.decode_seq(cursor))
    query = query.order_by(col(BalanceLine.seq).desc()).limit(limit + 1)
    rows = list(session.exec(query).all())
    page = rows[:limit]
    more = len(rows) > limit
    return page, pagination.encode_seq(page[-1].seq) if more else None


def carrier_line(session: Session, carrier: str, line_id: str) -> BalanceLine | None:
    """Our line that is the carrier's package ``line_id``, if we ordered it (the newest,
    should a carrier reuse an id)."""
    query = (
        select(BalanceLine)
        .where(BalanceLine.carrier_line_id == line_id, BalanceLine.carrier == carrier)
        .order_by(col(BalanceLine.id).desc())
        .limit(1)
    )
    return session.exec(query).first()


def product_for(session: Session, product_id: str, carrier: str) -> Product:
    """The catalogue product, if the eSIM's carrier sells it; 422 otherwise."""
    product = session.get(Product, product_id)
    if product is None:
        raise ApiError(422, "unknown_product", f"no product {product_id!r} in the catalogue")
    if product.carrier != carrier:
        raise ApiError(
            422,
            "carrier_mismatch",
            f"product {product.id} is sold by {product.carrier}, but this eSIM is on {carrier}",
        )
    problem = pass_problem(product.allowance_bytes, product.validity_seconds)
    if problem is not None:
        raise ApiError(422, "unsellable_product", f"product {product.id} cannot be sold: {problem}")
    return product


def check_policy(policy: Policy | None, *products: Product) -> None:
    """422 unless ``policy`` can drive lines of each of these products."""
    if policy is None:
        return
    for product in products:
        problem = policy_problem(policy, product.validity_seconds)
        if problem is not None:
            raise ApiError(422, "invalid_policy", f"policy: {problem} for {product.id}")
