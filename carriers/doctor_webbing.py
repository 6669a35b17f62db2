"""The carrier doctor's checks of the Webbing client: how it speaks WWS and what it chose
where the record is silent (:data:`carriers.webbing.WIRE`), one check per field.

Only Get methods are sent (:mod:`carriers.doctor_webbing_account`): one product
(``GetProductsList``, PageSize 1), the first page of the account's devices
(``GetServiceDevices``), one usage figure (``GetDeviceUsage``), ``GET`` of the endpoints
whose state-changing methods are looked for there, and with ``--iccid`` that device and
the catalogue its product is looked up in. A product change is a purchase and is never
made, so what a change does is ``not checked``; what a suspension does is read off a
device the account already has suspended, if any.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

import httpx

from carriers.doctor_webbing_account import (
    Answer,
    WebbingAccount,
    lists,
    named_fields,
    probe_days,
)
from carriers.verdicts import (
    NotChecked,
    Verdict,
    confirmed,
    contradicted,
    not_checked,
    price_fields,
    run_checks,
)
from carriers.webbing import GENERAL_ERROR, WIRE
from carriers.webbing_records import SUSPENDED, Device, megabytes, product
from carriers.webbing_soap import child, fields, local_name
from config import Settings

# A daily pass of a terabyte or more is no figure in MB: it is in bytes or kB.
MAX_PASS_MB = 1_000_000
_READ_ERRORS = (KeyError, ValueError, ArithmeticError)


async def diagnose(
    settings: Settings,
    iccid: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[tuple[str, Verdict]]:
    account = WebbingAccount(settings, iccid, WIRE, transport)
    try:
        await account.products()  # the first read: it stops the run if the account refuses it
        return await run_checks(account, CHECKS)
    finally:
        await account.aclose()


async def endpoints(account: WebbingAccount) -> Verdict:
    """Each read answers on its endpoint with its Result; each state-changing method is
    looked for in what a ``GET`` of its endpoint lists (it is never sent)."""
    answered, wrong, untold = [], [], []
    listed: dict[str, list[str]] = {}
    for method, path in account.wire.endpoints.items():
        if method in READS:
            answer = await READS[method](account)
            if answer.result is None:
                wrong.append(f"{path} {answer.said()}")
            else:
                answered.append(f"{method} on {path}")
            continue
        status, page = await account.listing(path)
        if status == 200 and lists(page, method):
            listed.setdefault(path, []).append(method)
        elif status == 200 and any(lists(page, m) for m in account.wire.endpoints):
            wrong.append(f"GET {path} lists no {method}")
        else:
            untold.append(f"{method}: GET {path} answered HTTP {status} listing no method")
    seen = [", ".join(answered)] if answered else []
    seen += [f"{', '.join(ms)} listed by GET {path} (never sent)" for path, ms in listed.items()]
    if wrong:
        return contradicted("; ".join(wrong + untold))
    if untold:
        return not_checked("; ".join(untold + seen))
    return confirmed("; ".join(seen))


async def soap_version(account: WebbingAccount) -> Verdict:
    said = []
    for answer in (await account.products(), await account.devices()):
        kind = answer.content_type.split(";")[0].strip() or "no content type"
        if answer.result is not None and kind == "text/xml":
            return confirmed(
                f"a text/xml call with SOAPAction answered in SOAP 1.1: {answer.said()}"
            )
        said.append(f"{answer.said()} ({kind})")
    return contradicted("; ".join(said))


async def credentials_header(account: WebbingAccount) -> Verdict:
    names = ", ".join(account.wire.credentials_header)
    said = []
    for answer in (await account.products(), await account.devices()):
        if answer.success:
            return confirmed(f"Credentials{{{names}}} in the SOAP header: {answer.said()}")
        said.append(answer.said())
    return not_checked(f"no read was carried out: {'; '.join(said)}")


async def request_wrapper(account: WebbingAccount) -> Verdict:
    """The parameters are read where the client puts them: PageSize 1 is honoured."""
    answer = await account.products()
    wrapper = (account.wire.request_wrapper or "{Method}").format(Method=answer.method)
    sent = f"PaginationRequest{{PageSize 1}} in <{wrapper}>"
    if answer.result is not None and answer.code == GENERAL_ERROR:
        return contradicted(
            f"{sent}: {answer.said()} (the record's answer to a wrongly named request element)"
        )
    found = answer.rows("Products", "ProductRecord")
    if len(found) > 1:
        return contradicted(f"{sent} not read: {len(found)} products answered")
    if not found:
        raise NotChecked(f"no product to page: {answer.said()}")
    return confirmed(f"{sent} read: 1 product answered")


async def paging(account: WebbingAccount) -> Verdict:
    answer = await account.products()
    answer.rows("Products", "ProductRecord")  # a successful answer, else not checked
    assert answer.result is not None
    try:
        totals = fields(child(answer.result, "PaginationResponse"))
    except KeyError:
        flat = {k: v for k, v in answer.head.items() if k in ("TotalRecords", "TotalPages")}
        beside = f" (totals on the result itself: {flat})" if flat else ""
        return contradicted(f"no PaginationResponse in {answer.method}Result{beside}")
    records, pages = totals.get("TotalRecords", ""), totals.get("TotalPages", "")
    shown = f"PaginationResponse{{TotalRecords={records}, TotalPages={pages}}}"
    if not (records.isdigit() and pages.isdigit()):
        return contradicted(f"{shown}: not counts")
    if int(pages) != int(records):
        return contradicted(f"{shown} for PageSize 1: one page per record expected")
    return confirmed(f"{shown} for PageSize 1")


async def units(account: WebbingAccount) -> Verdict:
    record = await _first_product(account)
    mb, name = record.get("DailyHighSpeedMB"), f"{record.get('ProductID')} {_name(record)}"
    try:
        allowance = megabytes(mb or "")
    except _READ_ERRORS as exc:
        return contradicted(f"DailyHighSpeedMB {mb!r} on product {name}: {exc!r}")
    if allowance >= MAX_PASS_MB * 10**6:
        return contradicted(f"DailyHighSpeedMB={mb} on product {name}: {allowance / 10**12:g} TB")
    return confirmed(f"DailyHighSpeedMB={mb} on product {name}: {allowance / 10**9:g} GB")


async def date_format(account: WebbingAccount) -> Verdict:
    """A ``MM/dd/yyyy`` StartDate whose day is over 12 is read (a dd/MM service refuses
    it); if it is refused, a day of 12 or under tells whether the format is to blame."""
    start, end = probe_days()
    answer = await account.usage(start, end)
    sent = f"StartDate {start:%m/%d/%Y}, EndDate {end:%m/%d/%Y}"
    if answer.success:
        found = answer.rows("Usage", "DeviceUsageRecord")
        return confirmed(f"{sent} read by {answer.said()}, {len(found)} usage record(s)")
    if answer.code != GENERAL_ERROR:
        raise NotChecked(f"{sent}: {answer.said()} does not tell")
    again = await account.usage(end.replace(day=1), end.replace(day=1))
    if again.success:
        return contradicted(
            f"{sent} refused ({answer.said()}), {end.replace(day=1):%m/%d/%Y} read: dd/MM?"
        )
    raise NotChecked(f"{sent}: {answer.said()}, and a day under 13 too")


async def status_ids(account: WebbingAccount) -> Verdict:
    devices = await account.known_devices()
    tally = Counter(
        f"{d.get('StatusID', 'none')} {d.get('StatusName', '')}".strip() for d in devices
    )
    shown = ", ".join(f"{status} ×{n}" for status, n in sorted(tally.items()))
    if any(d.get("StatusID") not in account.wire.status_ids for d in devices):
        return contradicted(f"StatusID not in {list(account.wire.status_ids)}: {shown}")
    return confirmed(f"StatusID {shown} on {len(devices)} device(s)")


async def products(account: WebbingAccount) -> Verdict:
    answer = await account.products()
    found = answer.rows("Products", "ProductRecord")
    if not found:
        assert answer.result is not None
        shape = [local_name(c.tag) for c in answer.result if len(c)]
        if set(shape) - {"Products", "PaginationResponse"}:
            return contradicted(f"no Products/ProductRecord; {answer.method}Result holds {shape}")
        raise NotChecked(f"no product answered: {answer.said()}")
    record = found[0]
    absent = [f for f in named_fields(account.wire.products) if f not in record]
    try:
        offer = product(record, account.currency)
    except _READ_ERRORS as exc:
        return contradicted(f"ProductRecord {record.get('ProductID')} unreadable: {exc!r}")
    if offer.validity_seconds <= 0:
        return contradicted(f"ValidityHours={record.get('ValidityHours')} on {offer.name}")
    defaults = f"; absent, read as defaults: {', '.join(absent)}" if absent else ""
    return confirmed(
        f"ProductRecord {offer.carrier_product_id} {offer.name!r}: "
        f"ValidityHours={record.get('ValidityHours')}, {offer.reset}, "
        f"{offer.throttle_kbps} kbps after, ${offer.price_cents / 100:.2f}{defaults}"
    )


async def device_product(account: WebbingAccount) -> Verdict:
    record = await account.device()
    absent = [f for f in named_fields(account.wire.device_product) if f not in record]
    if "ProductID" in absent or "DataUsage" in absent:
        return contradicted(f"ServiceDeviceRecord of {account.iccid} has no {', '.join(absent)}")
    try:
        device = Device.of(record)
    except _READ_ERRORS as exc:
        return contradicted(f"ServiceDeviceRecord of {account.iccid} unreadable: {exc!r}")
    seen = f"{account.iccid}: ProductID {device.product_id}"
    if device.product_id == "0":
        return confirmed(f"{seen} (no product), DataUsage {record['DataUsage']} MB")
    if device.since is None:
        return contradicted(f"{seen} without UpdatedAtUtc: its line cannot be named")
    offer = {p.get("ProductID"): p for p in await account.catalogue()}.get(device.product_id)
    if offer is None:
        return contradicted(f"{seen} is no ProductID of GetProductsList")
    if record.get("ProductName") and record.get("ProductName") != offer.get("ProductName"):
        return contradicted(
            f"{seen} is {_name(offer)} in GetProductsList, the device names "
            f"{record.get('ProductName')!r}"
        )
    return confirmed(
        f"{seen} {_name(offer)} since UpdatedAtUtc {record['UpdatedAtUtc']}, DataUsage "
        f"{record['DataUsage']} of {offer.get('DailyHighSpeedMB')} MB"
    )


async def change(account: WebbingAccount) -> Verdict:
    return not_checked(
        "only a purchase would show it: ChangeServiceDeviceProduct is never sent, and "
        "the record shows no pending change to read"
    )


async def suspend(account: WebbingAccount) -> Verdict:
    """Read off the devices the account already has suspended, if any: one still showing
    a product would keep its pass."""
    suspended = [d for d in await account.known_devices() if d.get("StatusID") == SUSPENDED]
    if not suspended:
        raise NotChecked(
            "no suspended device on the account's first page (or --iccid) to read; "
            "SuspendServiceDevice is never sent"
        )
    kept = [
        f"{d.get('ICCID')} ProductID {d.get('ProductID')}"
        for d in suspended
        if d.get("ProductID", "0") != "0"
    ]
    if kept:
        return contradicted(f"suspended device(s) still on a product: {', '.join(kept)}")
    return confirmed(f"{len(suspended)} suspended device(s) read, none on a product")


async def currency(account: WebbingAccount) -> Verdict:
    """No record names the currency of a ``Price``: the configured one is the operator's
    word, unless the account's product records name one (then the two must agree)."""
    found = (await account.products()).rows("Products", "ProductRecord")
    named = {r["Currency"] for r in found if r.get("Currency")}
    if not named:
        raise NotChecked(
            f"no ProductRecord names a currency: WEBBING__CURRENCY={account.currency} is taken"
            " on the operator's word"
        )
    if named != {account.currency}:
        return contradicted(
            f"ProductRecords name {sorted(named)}, WEBBING__CURRENCY={account.currency}"
        )
    return confirmed(f"ProductRecords name {account.currency}")


async def package_price(account: WebbingAccount) -> Verdict:
    """The device record shows no price of the product on it."""
    record = await account.device()
    shown = price_fields(record)
    if shown:
        return contradicted(
            f"ServiceDeviceRecord of {account.iccid} shows what may be a price, unread by the"
            f" audit: {shown}"
        )
    return confirmed(f"ServiceDeviceRecord of {account.iccid} shows no price")


CHECKS: tuple[Callable[[WebbingAccount], Awaitable[Verdict]], ...] = (
    endpoints,
    soap_version,
    credentials_header,
    request_wrapper,
    paging,
    units,
    date_format,
    status_ids,
    products,
    device_product,
    change,
    suspend,
    currency,
    package_price,
)


async def _usage(account: WebbingAccount) -> Answer:
    return await account.usage(*probe_days())


READS: dict[str, Callable[[WebbingAccount], Awaitable[Answer]]] = {
    "GetProductsList": WebbingAccount.products,
    "GetServiceDevices": WebbingAccount.devices,
    "GetDeviceUsage": _usage,
}


async def _first_product(account: WebbingAccount) -> dict[str, str]:
    answer = await account.products()
    found = answer.rows("Products", "ProductRecord")
    if not found:
        raise NotChecked(f"no product answered: {answer.said()}")
    return found[0]


def _name(record: dict[str, str]) -> str:
    return repr(record.get("ProductName", ""))
