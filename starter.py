"""Command line: enrol eSIMs (one, or many from a CSV) and read a balance's status.

    python starter.py enroll --carrier telna --iccid ICCID --product telna-daily-1gb [--lines N]
        [--customer-ref REF]
    python starter.py enroll --csv FILE          # iccid,carrier,product_id[,lines[,customer_ref]]
    python starter.py status ICCID
    python starter.py products [--sync]

Errors are one line on stderr and a non-zero exit; a bad CSV row is reported by its line
number, changes nothing, and does not stop the good rows.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import NoReturn

from sqlmodel import select
from temporalio.client import Client
from temporalio.service import RPCError

from config import get_settings
from models.db import init_db, session_scope
from models.spend import load_balance_spend, spent
from models.tables import Product
from services.enrolment import (
    EnrolmentError,
    EnrolRequest,
    parse_request,
    register,
    start_workflow,
    workflow_id,
)
from temporal_client import TemporalConnectError, connect, exit_with


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


async def _client() -> Client:
    try:
        return await connect(get_settings())
    except TemporalConnectError as error:
        fail(str(error))


CSV_COLUMNS = ("iccid", "carrier", "product_id", "lines", "customer_ref")
CSV_REQUIRED = 3  # the first three; the others may be left out, or empty


def read_csv(path: Path) -> list[tuple[int, EnrolRequest | str]]:
    """Rows of the CSV as requests, or as the reason the row is bad, by line number.

    Columns in the order of ``CSV_COLUMNS``, or in the order a header row names them."""
    rows: list[tuple[int, EnrolRequest | str]] = []
    columns: tuple[str, ...] = CSV_COLUMNS
    shape = "iccid,carrier,product_id[,lines[,customer_ref]]"
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            cells = [cell.strip() for cell in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if number == 1 and cells[0].lower() == "iccid":
                named = tuple(cell.lower() for cell in cells)
                if set(named) <= set(CSV_COLUMNS) and len(set(named)) == len(named):
                    columns, shape = named, ",".join(named)  # else read by position
                continue  # header
            if not CSV_REQUIRED <= len(cells) <= len(columns):
                rows.append((number, f"expected {shape}, got {row}"))
                continue
            data: dict[str, object] = {
                name: cell for name, cell in zip(columns, cells, strict=False) if cell
            }
            try:
                rows.append((number, parse_request(data)))
            except EnrolmentError as error:
                rows.append((number, str(error)))
    return rows


async def cmd_enroll(args: argparse.Namespace) -> int:
    settings = get_settings()
    init_db(settings.database_url)
    if args.csv:
        if not args.csv.is_file():
            fail(f"no such file: {args.csv}")
        rows = read_csv(args.csv)
    else:
        if not (args.carrier and args.iccid and args.product):
            fail("enroll needs --carrier, --iccid and --product (or --csv FILE)", 2)
        data = {"iccid": args.iccid, "carrier": args.carrier, "product_id": args.product}
        if args.lines is not None:
            data["lines"] = args.lines
        if args.customer_ref is not None:
            data["customer_ref"] = args.customer_ref
        try:
            rows = [(0, parse_request(data))]
        except EnrolmentError as error:
            fail(str(error))
    client: Client | None = None
    bad = 0
    for number, item in rows:
        where = f"line {number}: " if args.csv else ""
        if isinstance(item, str):
            print(f"error: {where}{item}", file=sys.stderr)
            bad += 1
            continue
        try:
            state, created = register(settings.database_url, item, "cli")
        except EnrolmentError as error:
            print(f"error: {where}{error}", file=sys.stderr)
            bad += 1
            continue
        # Registered first: should Temporal be unreachable now, enrolling again (or the
        # audit) starts the workflow of the open balance.
        client = client or await _client()
        await start_workflow(client, settings.task_queue, state)
        note = "" if created else " (already enrolled)"
        prefix = f"{item.iccid} " if args.csv else ""
        print(f"{prefix}{state.balance_id}{note}")
    return 1 if bad else 0


async def cmd_status(args: argparse.Namespace) -> int:
    client = await _client()
    handle = client.get_workflow_handle(workflow_id(args.iccid))
    try:
        status = await handle.query("status")
    except RPCError as error:
        fail(f"no balance for eSIM {args.iccid}: {error.message}")
    # Beside the workflow's view, what every pass the balance bought cost (the ledger's).
    status["ledger_spend"] = _ledger_spend(str(status.get("balance_id", "")))
    print(json.dumps(status, indent=2, default=str))
    return 0


def _ledger_spend(balance_id: str) -> list[dict[str, object]]:
    """The balance's spend per currency, as ``GET /v1/balances/{id}`` shows it."""
    with session_scope(get_settings().database_url) as session:
        return [spent(t) for t in load_balance_spend(session, balance_id)]


async def cmd_products(args: argparse.Namespace) -> int:
    settings = get_settings()
    init_db(settings.database_url)
    if args.sync:
        from carriers import build_carriers
        from services.catalog import sync_catalogue

        carriers = build_carriers(settings)
        synced = await sync_catalogue(carriers, settings.database_url)
        for carrier in carriers.values():
            await carrier.aclose()
        print(f"synced: {synced}", file=sys.stderr)
    with session_scope(settings.database_url) as session:
        for product in session.exec(select(Product).order_by(Product.id)):
            print(
                f"{product.id:32} {product.allowance_bytes:>14} B "
                f"{product.validity_seconds:>8} s  {product.name}"
            )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="starter.py", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    enroll = sub.add_parser("enroll", help="register eSIMs and start their balances")
    enroll.add_argument("--carrier")
    enroll.add_argument("--iccid")
    enroll.add_argument("--product")
    enroll.add_argument("--lines", type=int)
    enroll.add_argument("--customer-ref", help="the operator's own customer of the eSIM")
    enroll.add_argument("--csv", type=Path)
    enroll.set_defaults(run=cmd_enroll)
    status = sub.add_parser("status", help="show a balance's stack of lines")
    status.add_argument("iccid")
    status.set_defaults(run=cmd_status)
    products = sub.add_parser("products", help="list the product catalogue")
    products.add_argument("--sync", action="store_true", help="sync from the carriers first")
    products.set_defaults(run=cmd_products)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = asyncio.run(args.run(args))
    return code


if __name__ == "__main__":
    exit_with(main)
