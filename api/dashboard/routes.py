"""The operator dashboard: ``GET /`` (the fleet) and ``/dashboard/...`` (sign-in, one eSIM,
actions). Server-rendered HTML, an inline SVG timeline, no build step.

Pages need a signed-in session (``api.dashboard.session``); any role may read, only
``operator`` may act. Actions are POST forms with a CSRF token, sent to the balance's
workflow as the same signals as ``POST /v1/balances/{id}/{action}``, and answered with a
redirect back to the eSIM's page. Errors are HTML pages with the API's error code and
message, never JSON, since a browser shows them. Pages are left out of the OpenAPI
document: they are not an API.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import or_
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from api.auth import ApiKeys, identity_of
from api.dashboard import esim as esim_view
from api.dashboard import fleet as fleet_view
from api.dashboard import session as auth
from api.dashboard.carrier_lines import CarrierLines
from api.dashboard.esim import MAX_LINES_DRAWN
from api.dashboard.session import DashboardSession
from api.errors import TEMPORAL_CONNECT_FAILED, ApiError
from api.lookups import line_page, open_balance_or_409
from api.routes.balance_actions import send_action
from api.schemas.common import BALANCE_ID_PATTERN
from api.window import WINDOW_HOURS, default_start
from config import Settings
from models.continuity import balance_continuity, load_fleet_continuity
from models.db import session_scope
from models.identifiers import InvalidIdentifier, validate_iccid
from models.ledger_window import figure_rows
from models.payloads import ActionRequest, BalanceStatus
from models.spend import Tally, load_balance_spend
from models.tables import Balance, BalanceLine, Esim, utcnow

router = APIRouter(include_in_schema=False)

# Seconds between the page's own refreshes (the live part only; scroll and forms stay).
REFRESH_SECONDS = 5
# Form field -> workflow signal, as in api/routes/balance_actions.py.
ACTIONS = {"pause": "pause", "resume": "resume", "rotate": "rotate_now", "cancel": "cancel"}
MAX_FORM_BYTES = 4096

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _page(
    request: Request,
    template: str,
    status: int = 200,
    session: DashboardSession | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page with a fresh CSP nonce for its inline style and script."""
    settings: Settings = request.app.state.settings
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template(template).render(
        nonce=nonce,
        session=session,
        csrf=auth.csrf_token(settings, session) if session else "",
        now=utcnow(),
        **({"refresh": REFRESH_SECONDS if context.pop("live", True) else 0} | context),
    )
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'"
        ),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return HTMLResponse(html, status_code=status, headers=headers)


def _error(
    request: Request, status: int, code: str, message: str, session: DashboardSession | None
) -> HTMLResponse:
    """An error page; it does not refresh itself (its URL may be a form's POST)."""
    return _page(request, "error.html", status, session, code=code, message=message, live=False)


def _to_signin() -> RedirectResponse:
    return RedirectResponse("/dashboard/signin", status_code=303)


async def _form(request: Request) -> dict[str, str] | None:
    """An urlencoded form's fields (first value of each), or None if it is not one."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    body = await request.body()
    if kind != "application/x-www-form-urlencoded" or len(body) > MAX_FORM_BYTES:
        return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in fields.items()}


def temporal_link(settings: Settings, workflow_id: str) -> str:
    """The workflow's page in the Temporal Web UI."""
    ui = settings.temporal_ui_url.rstrip("/")
    return (
        f"{ui}/namespaces/{quote(settings.temporal_namespace, safe='')}"
        f"/workflows/{quote(workflow_id, safe='')}"
    )


@router.get("/dashboard/signin")
def signin_form(request: Request) -> Response:
    """The sign-in form."""
    return _page(request, "signin.html", message=None)


@router.post("/dashboard/signin")
async def signin(request: Request) -> Response:
    """Exchange an API key for a session cookie; a wrong key is a 401 with the form again."""
    form = await _form(request)
    keys: ApiKeys = request.app.state.api_keys
    settings: Settings = request.app.state.settings
    if form is None:
        return _page(request, "signin.html", 400, message="Send the form (an API key).")
    role = keys.role_of(form.get("api_key", "").strip()) if form.get("api_key") else None
    if role is None:
        message = (
            "API key not accepted."
            if settings.api_keys.get_secret_value()
            else "No API keys are configured (API_KEYS), so no key is accepted."
        )
        return _page(request, "signin.html", 401, message=message)
    value, _ = auth.issue(settings, role, identity_of(form["api_key"].strip()))
    response = RedirectResponse("/", status_code=303)
    auth.set_cookie(response, request, value)
    return response


@router.post("/dashboard/signout")
async def signout(request: Request) -> Response:
    """Forget the session."""
    response = _to_signin()
    auth.clear_cookie(response, request)
    return response


@router.get("/")
def fleet_page(request: Request, state: str | None = None) -> Response:
    """The fleet at a glance: balances by state, rotations, spend, carriers' health, the
    balances."""
    session = auth.from_request(request)
    if session is None:
        return _to_signin()
    settings: Settings = request.app.state.settings
    chosen: BalanceStatus | None = None
    if state:
        if state not in BalanceStatus.__members__:
            known = ", ".join(BalanceStatus.__members__)
            return _error(request, 422, "invalid_request", f"state: one of {known}", session)
        chosen = BalanceStatus(state)
    now = utcnow()
    with session_scope(settings.database_url) as db:
        fleet = fleet_view.load(db, chosen)
        continuity = load_fleet_continuity(db, now, default_start(now))
        spend = fleet_view.load_spend(db, now)
    return _page(
        request,
        "fleet.html",
        session=session,
        fleet=fleet,
        continuity=continuity.total,
        per_carrier=continuity.carriers,
        spend=spend,
        window_hours=WINDOW_HOURS,
        state=chosen.value if chosen else None,
        states=[s.value for s in BalanceStatus],
        link=lambda wid: temporal_link(settings, wid),
    )


@router.get("/dashboard/esims/{iccid}")
async def esim_page(
    request: Request, iccid: str, balance: str | None = None, lines: str | None = None
) -> Response:
    """One eSIM: its balance's lines on a time axis, ours beside the carrier's."""
    session = auth.from_request(request)
    if session is None:
        return _to_signin()
    settings: Settings = request.app.state.settings
    try:
        validate_iccid(iccid)
    except InvalidIdentifier as error:
        return _error(request, 422, "invalid_request", f"iccid: {error}", session)
    if balance is not None and not re.fullmatch(BALANCE_ID_PATTERN, balance[:64]):
        return _error(request, 422, "invalid_request", "balance: not a balance id", session)
    try:
        found = await run_in_threadpool(_esim_rows, settings.database_url, iccid, balance, lines)
    except ApiError as error:
        return _error(request, error.status, error.code, error.message, session)
    if found is None:
        return _error(request, 404, "not_found", f"no eSIM {iccid}", session)
    esim, balances, chosen, page = found
    context: dict[str, Any] = {"esim": esim, "balances": balances, "balance": chosen}
    if chosen is not None:
        carrier_lines: CarrierLines = request.app.state.carrier_lines
        theirs = await carrier_lines.view(request.app.state.client, chosen.carrier, iccid)
        now = utcnow()
        context["carrier_error"] = theirs.error
        context["timeline"] = await run_in_threadpool(
            _timeline, settings.database_url, chosen, page, theirs, now
        )
        context["spend"] = await run_in_threadpool(_spend, settings.database_url, chosen.id)
        context["older_lines"] = page.next_cursor
        context["window_hours"] = WINDOW_HOURS
        context["temporal_url"] = temporal_link(settings, chosen.workflow_id)
    sent = request.query_params.get("sent")
    context["sent"] = sent if sent in ACTIONS else None
    return _page(request, "esim.html", session=session, **context)


@dataclass
class _LinePage:
    newest: list[BalanceLine]  # drawn on the time axis
    listed: list[BalanceLine]  # in the table
    next_cursor: str | None


def _esim_rows(
    url: str, iccid: str, balance_id: str | None, cursor: str | None
) -> tuple[Esim, list[Balance], Balance | None, _LinePage] | None:
    with session_scope(url) as db:
        esim = db.get(Esim, iccid)
        if esim is None:
            return None
        balances = list(
            db.exec(
                select(Balance)
                .where(Balance.iccid == iccid)
                .order_by(col(Balance.created_at).desc())
            ).all()
        )
        chosen = next((b for b in balances if b.id == balance_id), None) if balance_id else None
        chosen = chosen or (balances[0] if balances else None)
        if chosen is None:
            return esim, balances, None, _LinePage([], [], None)
        listed, next_cursor = line_page(db, chosen.id, esim_view.LINES_LISTED, cursor)
        newest = listed if cursor is None else line_page(db, chosen.id, MAX_LINES_DRAWN)[0]
        return esim, balances, chosen, _LinePage(newest[:MAX_LINES_DRAWN], listed, next_cursor)


def _spend(url: str, balance_id: str) -> list[Tally]:
    """What every pass the balance bought cost, per currency (as its API view says)."""
    with session_scope(url) as db:
        return load_balance_spend(db, balance_id)


def _timeline(
    url: str, balance: Balance, page: _LinePage, theirs: esim_view.CarrierView, now: datetime
) -> esim_view.Timeline:
    """The rest the page needs once the carrier has answered: which of the carrier's lines
    are ours, and the ledger of the window and of the time the timeline spans."""
    since = default_start(now)
    references = {line.reference for line in theirs.lines if line.reference}
    line_ids = {line.line_id for line in theirs.lines}
    with session_scope(url) as db:
        named = (
            []
            if not theirs.lines
            else db.exec(
                select(BalanceLine).where(
                    or_(
                        col(BalanceLine.reference).in_(references),
                        col(BalanceLine.carrier_line_id).in_(line_ids),
                    )
                )
            ).all()
        )
        known = {line.reference for line in named if line.iccid == balance.iccid}
        theirs = theirs.named(
            {line.carrier_line_id: line.reference for line in named if line.carrier_line_id}
        )
        plan = esim_view.layout(balance, page.newest, theirs, known, now)
        lines, events = figure_rows(db, col(Balance.id) == balance.id, since, plan.cover_from)
    figures = balance_continuity(balance, lines, events, now, since)
    matched = [line for line in named if line.balance_id == balance.id]
    return esim_view.build(balance, plan, page.listed, matched, events, figures, theirs, now)


@router.post("/dashboard/balances/{balance_id}/{action}")
async def act(request: Request, balance_id: str, action: str) -> Response:
    """Pause, resume, rotate now or cancel, from a form; operator only, CSRF-checked."""
    session = auth.from_request(request)
    if session is None:
        return _error(request, 401, "unauthorized", "Sign in first.", None)
    settings: Settings = request.app.state.settings
    form = await _form(request)
    if form is None or not auth.csrf_ok(settings, session, form.get("csrf", "")):
        return _error(
            request, 403, "forbidden", "The form is stale or not ours: reload the page.", session
        )
    if not session.may_act:
        message = f"A {session.role.value} key may not act on balances (operator only)."
        return _error(request, 403, "forbidden", message, session)
    if action not in ACTIONS or not re.fullmatch(BALANCE_ID_PATTERN, balance_id[:64]):
        return _error(request, 404, "not_found", f"no action {action!r}", session)
    reason = "".join(c for c in form.get("reason", "")[:200] if c.isprintable())
    try:
        balance = await run_in_threadpool(_open_balance, settings.database_url, balance_id)
        force = action == "rotate" and form.get("force") == "on"
        request_ = ActionRequest(actor=session.actor, reason=reason, force=force)
        client = request.app.state.client
        who = session.identity or f"dashboard:{session.nonce}"
        await send_action(settings, client, balance, who, ACTIONS[action], request_)
    except ApiError as error:
        return _error(request, error.status, error.code, error.message, session)
    except RPCError:
        return _error(request, 503, "temporal_unavailable", "Temporal is unreachable.", session)
    except RuntimeError as error:
        if not str(error).startswith(TEMPORAL_CONNECT_FAILED):
            raise
        return _error(request, 503, "temporal_unavailable", "Temporal is unreachable.", session)
    target = f"/dashboard/esims/{balance.iccid}?balance={balance.id}&sent={action}"
    return RedirectResponse(target, status_code=303)


def _open_balance(url: str, balance_id: str) -> Balance:
    with session_scope(url) as db:
        return open_balance_or_409(db, balance_id)
