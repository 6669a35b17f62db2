"""Enrolment: register an eSIM and start its Balance, idempotently.

Used by ``starter.py`` and the HTTP API. The database says whether an eSIM has an open
balance (``Balance.open_iccid`` is unique); the workflow id ``balance-{iccid}`` with the
USE_EXISTING conflict policy makes a repeated start return the running workflow. So
enrolling the same ICCID twice — even concurrently — yields one balance and one workflow.
An open balance whose workflow is gone (terminated in the Temporal UI, say) is started
again to continue, not to start over: its new run first rebuilds its state from the
database and the carrier (``activities.audit_restart``), then goes on from there.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from models import search
from models.db import session_scope
from models.identifiers import validate_customer_ref, validate_eid, validate_iccid
from models.payloads import BalanceState, Policy, ProductSpec, pass_problem
from models.tables import Balance, Esim, LineEvent, Product

CARRIERS = ("telna", "webbing", "esimgo")
MAX_LINES = 100_000


class EnrolmentError(ValueError):
    """Bad enrolment input; the message is one line an operator can act on."""


class EnrolRequest(BaseModel):
    """What it takes to enrol one eSIM on one product; checks what needs no database."""

    model_config = {"extra": "forbid"}

    iccid: str
    carrier: str
    product_id: str = Field(min_length=1, max_length=96)
    lines: int | None = Field(default=None, ge=1, le=MAX_LINES)
    eid: str | None = None
    policy: Policy | None = None
    # The operator's own customer of the balance; omitted: the eSIM's. An eSIM without one
    # takes it (an eSIM keeps the first it is given; a later balance may name another).
    customer_ref: str | None = None

    @field_validator("customer_ref")
    @classmethod
    def _customer_ref(cls, value: str | None) -> str | None:
        return None if value is None else validate_customer_ref(value)

    @field_validator("iccid")
    @classmethod
    def _iccid(cls, value: str) -> str:
        return validate_iccid(value)

    @field_validator("eid")
    @classmethod
    def _eid(cls, value: str | None) -> str | None:
        return None if value is None else validate_eid(value)

    @field_validator("carrier")
    @classmethod
    def _carrier(cls, value: str) -> str:
        if value not in CARRIERS:
            raise ValueError(f"unknown carrier {value!r} (known: {', '.join(CARRIERS)})")
        return value


class EnrolResult(BaseModel):
    balance_id: str
    workflow_id: str
    created: bool


def workflow_id(iccid: str) -> str:
    return f"balance-{iccid}"


def product_spec(product: Product) -> ProductSpec:
    """The product as a balance runs it; EnrolmentError if no balance can (a row synced
    before the catalogue sync left such products out, or written by hand)."""
    problem = pass_problem(product.allowance_bytes, product.validity_seconds)
    if problem is not None:
        raise EnrolmentError(f"product {product.id} cannot be sold: {problem}")
    return ProductSpec(
        id=product.id,
        carrier=product.carrier,
        carrier_product_id=product.carrier_product_id,
        allowance_bytes=product.allowance_bytes,
        validity_seconds=product.validity_seconds,
        reset=product.reset,
        price_cents=product.price_cents,
        currency=product.currency,
        rotation=product.rotation,
    )


def check(session: Session, req: EnrolRequest) -> Product:
    """Check the request against the catalogue and the eSIM's carrier; returns the product."""
    product = session.get(Product, req.product_id)
    if product is None:
        raise EnrolmentError(f"unknown product {req.product_id!r}")
    if product.carrier != req.carrier:
        raise EnrolmentError(
            f"product {product.id} is sold by {product.carrier}, not {req.carrier}"
        )
    esim = session.get(Esim, req.iccid)
    if esim is not None and esim.carrier != req.carrier:
        raise EnrolmentError(f"eSIM {req.iccid} is registered with {esim.carrier}")
    product_spec(product)  # refused before anything is written
    return product


def open_balance(session: Session, iccid: str) -> Balance | None:
    return session.exec(select(Balance).where(Balance.open_iccid == iccid)).first()


def balance_state(balance: Balance, product: Product) -> BalanceState:
    """The initial workflow state of a balance row."""
    return BalanceState(
        balance_id=balance.id,
        iccid=balance.iccid,
        carrier=balance.carrier,
        product=product_spec(product),
        policy=Policy.model_validate(balance.policy or {}),
        lines_total=balance.lines_total,
        revision=resumed_revision(balance),
    )


def resumed_revision(balance: Balance) -> int:
    """The revision a workflow started (again) for this balance row continues from.

    One past the row's: a workflow writes once its previous write has landed, so a run
    gone before it (terminated by hand, say) can have at most that one more write in
    flight on a stalled worker, and it must lose against the new run's first write."""
    return balance.revision + 1


def register(database_url: str, req: EnrolRequest, actor: str) -> tuple[BalanceState, bool]:
    """Write the eSIM and its open balance (or find the open one); no Temporal call."""
    for _ in range(2):
        try:
            with session_scope(database_url) as session:
                product = check(session, req)
                balance = open_balance(session, req.iccid)
                if balance is not None:
                    product = session.get(Product, balance.product_id) or product
                    # Its workflow may be gone: a new run must continue its history.
                    state = balance_state(balance, product)
                    state.restore = True
                    return state, False
                esim = session.get(Esim, req.iccid)
                if esim is None:
                    esim = Esim(
                        iccid=req.iccid,
                        carrier=req.carrier,
                        eid=req.eid,
                        customer_ref=req.customer_ref,
                    )
                    session.add(esim)
                    session.flush()  # no ORM relationship orders the inserts for us
                elif esim.customer_ref is None and req.customer_ref is not None:
                    esim.customer_ref = req.customer_ref
                    session.add(esim)
                balance = _new_balance(req, esim.customer_ref)
                session.add(balance)
                session.flush()
                session.add(
                    LineEvent(
                        key=f"{balance.id}:enrolled",
                        balance_id=balance.id,
                        kind="enrolled",
                        actor=actor,
                        at=balance.created_at,
                        detail={"product_id": req.product_id, "lines": req.lines},
                    )
                )
                return balance_state(balance, product), True
        except IntegrityError:
            continue  # a concurrent enrolment won the race: read what it wrote
    raise EnrolmentError(f"eSIM {req.iccid} could not be enrolled; try again")


def _new_balance(req: EnrolRequest, esim_customer_ref: str | None) -> Balance:
    return Balance(
        id=f"bal_{uuid.uuid4().hex[:12]}",
        iccid=req.iccid,
        open_iccid=req.iccid,
        carrier=req.carrier,
        product_id=req.product_id,
        lines_total=req.lines,
        policy=req.policy.model_dump(exclude_none=True) if req.policy else {},
        workflow_id=workflow_id(req.iccid),
        customer_ref=req.customer_ref or esim_customer_ref,
    )


async def start_workflow(client: Client, task_queue: str, state: BalanceState) -> str:
    """Start the balance's workflow, or find it running; returns the workflow id."""
    handle = await client.start_workflow(
        "BalanceWorkflow",
        state,
        id=workflow_id(state.iccid),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search.BALANCE_STATE, state.status.value),
                SearchAttributePair(search.ICCID, state.iccid),
                SearchAttributePair(search.CARRIER, state.carrier),
                SearchAttributePair(search.PRODUCT_ID, state.product.id),
            ]
        ),
        static_summary=workflow_summary(state),
        static_details=workflow_details(state),
    )
    return handle.id


def workflow_summary(state: BalanceState) -> str:
    """The workflow's one-line summary in the Temporal Web UI."""
    term = f"{state.lines_total} lines" if state.lines_total else "until cancelled"
    return f"eSIM {state.iccid} on {state.product.id}, {term}"


def workflow_details(state: BalanceState) -> str:
    """The workflow's details in the Temporal Web UI (Markdown): what the balance buys and
    when it rotates. The UI shows them for the first run only: continue-as-new does not
    carry them over, so every run also states the balance's current details (the
    workflow's ``set_current_details``), which the UI shows for the run in progress."""
    product, policy = state.product, state.policy
    validity = product.validity_seconds
    term = f"{state.lines_total} lines" if state.lines_total else "until cancelled"
    return "\n".join(
        [
            f"**Balance** `{state.balance_id}` for eSIM `{state.iccid}` at {state.carrier}",
            f"**Product** `{product.id}`: {product.allowance_bytes:,} bytes for "
            f"{validity:,} s (reset: {product.reset})",
            f"**Term** {term}; a line is ordered "
            f"{policy.lead(validity):g} s and switched {policy.margin(validity):g} s before "
            f"it ends, earlier at {policy.switch_fraction:.0%} of its allowance",
            f"**Cost cap** {policy.max_lines_per_day or 'none'} lines per UTC day",
        ]
    )


async def enrol(
    client: Client, database_url: str, task_queue: str, req: EnrolRequest, actor: str
) -> EnrolResult:
    """Register the eSIM if new and start its balance; idempotent per ICCID."""
    state, created = register(database_url, req, actor)
    wid = await start_workflow(client, task_queue, state)
    return EnrolResult(balance_id=state.balance_id, workflow_id=wid, created=created)


def parse_request(data: dict[str, Any]) -> EnrolRequest:
    """An EnrolRequest from loose input (CSV row, JSON), with one-line errors."""
    try:
        return EnrolRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "input"
        message = first["msg"].removeprefix("Value error, ")
        raise EnrolmentError(f"{where}: {message}") from None
