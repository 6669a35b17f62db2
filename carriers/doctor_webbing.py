"""The carrier doctor's checks of the Webbing client: how it speaks WWS
(:data:`carriers.webbing.WIRE`), each read made exactly as the client makes it (its
endpoint, envelope, ``SOAPAction`` and credentials), one or two reads each.

Only Get methods are called: one product (``GetProductsList``, PageSize 1), one page of
one usage row (``GetDeviceUsage``), an instance id no account has (``0``) where a
method's endpoint is to be found, and with ``--iccid`` that eSIM's first instances
(``GetServiceDeviceProducts``, PageSize 5).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.etree.ElementTree import Element

import httpx

from carriers.verdicts import (
    CannotCheck,
    NotChecked,
    Verdict,
    confirmed,
    contradicted,
    not_checked,
    run_checks,
)
from carriers.webbing import GENERAL_ERROR, WIRE, http_client, soap_action
from carriers.webbing_records import line, product, usage
from carriers.webbing_soap import (
    SoapFault,
    UnreadableAnswer,
    call_envelope,
    child,
    fields,
    read_answer,
    rows,
)
from config import Settings

ONE = {"PageSize": 1, "PageNumber": 1}
INSTANCE_PAGE = 5
# A daily pass of a terabyte or more is no figure in MB: it is in bytes or kB.
MAX_PASS_MB = 1_000_000
NO_INSTANCE = "0"  # ServiceDeviceProductIDs are 18-digit numbers


@dataclass(frozen=True)
class Answer:
    """One call's answer: its ``<Method>Result``, its Fault, or why it is neither."""

    method: str
    status: int
    content_type: str
    result: Element | None = None
    fault: SoapFault | None = None
    unreadable: str = ""

    @property
    def head(self) -> dict[str, str]:
        return fields(self.result) if self.result is not None else {}

    @property
    def success(self) -> bool:
        return self.head.get("Success") == "true"

    @property
    def code(self) -> str:
        return self.head.get("ResponseCode", "")

    def said(self) -> str:
        """The answer in a few words, for a line of the report."""
        if self.fault is not None:
            return f"{self.method}: Fault {self.fault.code} {self.fault.message!r}"
        if self.result is None:
            return f"{self.method}: HTTP {self.status}, {self.unreadable}"
        head = self.head
        if self.success:
            return f"{self.method}: Success=true"
        return (
            f"{self.method}: Success={head.get('Success')} {self.code} "
            f"{head.get('ResponseDescription', '')!r}"
        )


class WebbingAccount:
    """The configured Webbing account, called as the client calls it; each read is made
    once per run and shared by the checks that need it."""

    def __init__(
        self,
        settings: Settings,
        iccid: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        webbing = settings.webbing
        credentials = {
            "Username": webbing.username,
            "Password": webbing.password.get_secret_value(),
            "WSKey": webbing.wskey.get_secret_value(),
        }
        missing = [f"WEBBING__{k.upper()}" for k, v in credentials.items() if not v]
        if missing:
            raise CannotCheck(" and ".join(missing) + " not set")
        self.base_url, self.iccid, self._credentials = webbing.base_url, iccid, credentials
        timeout = settings.carrier_timeout_seconds
        self._client = http_client(webbing.base_url, timeout, transport)
        self._answers: dict[str, Answer] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, method: str, params: Mapping[str, Any]) -> Answer:
        """The answer to one read, made once per run."""
        if method not in self._answers:
            self._answers[method] = await self._send(method, params)
        return self._answers[method]

    async def _send(self, method: str, params: Mapping[str, Any]) -> Answer:
        envelope = call_envelope(method, self._credentials, params)
        headers = {"SOAPAction": soap_action(method)}
        try:
            response = await self._client.post(
                WIRE.endpoints[method], content=envelope, headers=headers
            )
        except httpx.TransportError as exc:
            raise CannotCheck(f"webbing at {self.base_url} does not answer: {exc!r}") from exc
        kind = response.headers.get("content-type", "")
        try:
            found = read_answer(response.content, method)
        except UnreadableAnswer as exc:
            return Answer(method, response.status_code, kind, unreadable=str(exc))
        if isinstance(found, SoapFault):
            return Answer(method, response.status_code, kind, fault=found)
        return Answer(method, response.status_code, kind, result=found)


async def diagnose(
    settings: Settings, iccid: str | None, transport: httpx.AsyncBaseTransport | None = None
) -> list[tuple[str, Verdict]]:
    account = WebbingAccount(settings, iccid, transport)
    try:
        await _products(account)  # the first read: it stops the run if the account refuses it
        return await run_checks(account, CHECKS)
    finally:
        await account.aclose()


async def endpoints(account: WebbingAccount) -> Verdict:
    """Each endpoint answers a read method the client calls there with its Result."""
    served, missing, unclear = [], [], []
    for path in sorted(set(WIRE.endpoints.values())):
        reads = [m for m in READS if WIRE.endpoints[m] == path]
        if not reads:
            unclear.append(f"{path} (no read lives there)")
            continue
        answer = await READS[reads[0]](account)
        said = f"{path} {answer.said()}"
        if answer.result is None:
            missing.append(said)
        elif answer.code == GENERAL_ERROR:
            unclear.append(said)
        else:
            served.append(said)
    if missing:
        return contradicted("; ".join(missing))
    if unclear:
        return not_checked("; ".join(unclear + served))
    return confirmed("; ".join(served))


async def soap_version(account: WebbingAccount) -> Verdict:
    answer = await _products(account)
    if answer.result is None and answer.fault is None:
        return contradicted(f"{answer.said()} ({answer.content_type or 'no content type'})")
    return confirmed(f"{answer.method} answered a SOAP 1.1 envelope ({answer.content_type})")


async def credentials_header(account: WebbingAccount) -> Verdict:
    answer = await _products(account)
    if not answer.success:
        return not_checked(f"the call was not read: {answer.said()}")
    names = ", ".join(WIRE.credentials_header)
    return confirmed(f"Credentials {{{names}}} in the SOAP header accepted: {answer.said()}")


async def request_wrapper(account: WebbingAccount) -> Verdict:
    """The parameters are read where the client puts them: PageSize 1 is honoured."""
    answer = await _products(account)
    where = f"<{WIRE.request_wrapper}>" if WIRE.request_wrapper else "<GetProductsList>"
    if answer.fault is not None or answer.code == GENERAL_ERROR:
        return contradicted(
            f"PaginationRequest straight in {where}: {answer.said()} "
            "(the record's answer to a wrongly named request element)"
        )
    found = rows(_result(answer), "Products", "Product")
    if len(found) > 1:
        return contradicted(f"PageSize 1 in {where} ignored: {len(found)} products answered")
    if not found:
        return not_checked(f"no product to page: {answer.said()}")
    return confirmed(f"PaginationRequest straight in {where} read: PageSize 1 gave 1 product")


async def paging(account: WebbingAccount) -> Verdict:
    head = fields(_result(await _products(account)))
    totals = {k: head.get(k) for k in ("TotalRecords", "TotalPages")}
    if not all(v is not None and v.isdigit() for v in totals.values()):
        try:
            nested = fields(child(_result(await _products(account)), "PaginationResponse"))
        except KeyError:
            return contradicted(f"no TotalRecords/TotalPages on GetProductsListResult: {totals}")
        return contradicted(
            f"totals in PaginationResponse {nested}, the client reads them "
            "off GetProductsListResult"
        )
    records, pages = int(totals["TotalRecords"] or 0), int(totals["TotalPages"] or 0)
    if pages != records:
        return contradicted(f"PageSize 1 over {records} records gave TotalPages={pages}")
    return confirmed(
        f"TotalRecords={records}, TotalPages={pages} on GetProductsListResult for PageSize 1"
    )


async def units(account: WebbingAccount) -> Verdict:
    (record,) = await _product_rows(account)
    mb = record.get("DailyHighSpeedMB")
    try:
        allowance = product(record).allowance_bytes
    except (KeyError, ValueError, ArithmeticError) as exc:
        return contradicted(f"product {record.get('ProductID')} DailyHighSpeedMB {mb!r}: {exc!r}")
    if allowance >= MAX_PASS_MB * 10**6:
        return contradicted(
            f"DailyHighSpeedMB={mb} on product {record.get('ProductID')} would "
            f"be {allowance / 10**12:g} TB a day: not MB"
        )
    return confirmed(
        f"DailyHighSpeedMB={mb} on product {record.get('ProductID')}: {allowance / 10**9:g} GB"
    )


async def date_format(account: WebbingAccount) -> Verdict:
    """A ``MM/dd/yyyy`` date whose day is over 12 is read (a dd/MM service refuses it)."""
    answer = await _usage_read(account)
    sent = f"FromDate {_probe_date():%m/%d/%Y}"
    if answer.code == GENERAL_ERROR:
        return not_checked(f"{sent}: {answer.said()} does not tell")
    if not answer.success:
        return contradicted(f"{sent} refused: {answer.said()}")
    seen = rows(_result(answer), "DeviceUsages", "DeviceUsage")
    if seen:
        try:
            read = usage(seen[0]).observed_at
        except (KeyError, ValueError, ArithmeticError) as exc:
            return contradicted(
                f"{sent} read, but UsageAsOfUtc {seen[0].get('UsageAsOfUtc')!r}: {exc!r}"
            )
        return confirmed(f"{sent} read by GetDeviceUsage; UsageAsOfUtc read as {read:%Y-%m-%d}")
    return confirmed(f"{sent} read by GetDeviceUsage (no usage row to read back)")


async def status_ids(account: WebbingAccount) -> Verdict:
    instances = await _instances(account)
    ids = Counter(i.get("StatusID", "none") for i in instances)
    wrong = {k: n for k, n in ids.items() if k not in WIRE.status_ids}
    tally = ", ".join(f"{k} ×{n}" for k, n in sorted((wrong or ids).items()))
    if wrong:
        return contradicted(f"unknown StatusID {tally} on {account.iccid}")
    return confirmed(f"StatusID {tally} on {_of(account, instances)}")


async def records(account: WebbingAccount) -> Verdict:
    """Products and instances carry the fields the client's readers take."""
    read = []
    for record in await _product_rows(account):
        problem = _unreadable(product, record)
        if problem:
            return contradicted(f"product {record.get('ProductID')}: {problem}")
        read.append("1 product")
    try:
        instances = await _instances(account)
    except NotChecked as exc:
        return confirmed(f"{', '.join(read)} read; no instance: {exc}")
    for record in instances:
        problem = _unreadable(line, record)
        if problem:
            return contradicted(f"instance {record.get('ServiceDeviceProductID')}: {problem}")
    return confirmed(f"{', '.join(read)} and {_of(account, instances)} read")


CHECKS = (
    endpoints,
    soap_version,
    credentials_header,
    request_wrapper,
    paging,
    units,
    date_format,
    status_ids,
    records,
)


async def _products(account: WebbingAccount) -> Answer:
    """One product; an account that refuses it stops the run."""
    answer = await account.call("GetProductsList", {"PaginationRequest": ONE})
    if (
        answer.result is None
        and answer.fault is None
        and (answer.status == 429 or answer.status >= 500)
    ):
        raise CannotCheck(f"webbing at {account.base_url} is unavailable: {answer.said()}")
    if answer.result is None and answer.status == 404:
        raise CannotCheck(
            f"webbing at {account.base_url}: {answer.said()} (check WEBBING__BASE_URL)"
        )
    if answer.result is not None and not answer.success and answer.code != GENERAL_ERROR:
        raise CannotCheck(
            f"webbing refuses the account's first read ({answer.said()}): check "
            "WEBBING__USERNAME, WEBBING__PASSWORD and WEBBING__WSKEY"
        )
    return answer


async def _product_rows(account: WebbingAccount) -> list[dict[str, str]]:
    answer = await _products(account)
    found = rows(_result(answer), "Products", "Product")[:1]
    if not found:
        raise NotChecked(f"no product answered: {answer.said()}")
    return found


async def _usage_read(account: WebbingAccount) -> Answer:
    params = {"FromDate": f"{_probe_date():%m/%d/%Y}", "PaginationRequest": ONE}
    return await account.call("GetDeviceUsage", params)


async def _instance_read(account: WebbingAccount) -> Answer:
    return await account.call("GetServiceDeviceProduct", {"ServiceDeviceProductID": NO_INSTANCE})


async def _instances(account: WebbingAccount) -> list[dict[str, str]]:
    if account.iccid is None:
        raise NotChecked("needs --iccid")
    paging = {"PageSize": INSTANCE_PAGE, "PageNumber": 1}
    answer = await account.call(
        "GetServiceDeviceProducts", {"ICCID": account.iccid, "PaginationRequest": paging}
    )
    if not answer.success:
        raise NotChecked(answer.said())
    found = rows(_result(answer), "ServiceDeviceProducts", "ServiceDeviceProduct")
    if not found:
        raise NotChecked(f"no instance on {account.iccid}")
    return found


READS = {
    "GetProductsList": _products,
    "GetServiceDeviceProduct": _instance_read,
    "GetDeviceUsage": _usage_read,
}


def _result(answer: Answer) -> Element:
    if answer.result is None:
        raise NotChecked(answer.said())
    return answer.result


def _unreadable(reader: Any, record: dict[str, str]) -> str:
    try:
        reader(record)
    except (KeyError, ValueError, ArithmeticError) as exc:
        return repr(exc)
    return ""


def _of(account: WebbingAccount, instances: list[dict[str, str]]) -> str:
    n = len(instances)
    return f"{n} instance{'s' if n != 1 else ''} of {account.iccid}"


def _probe_date() -> date:
    """The latest UTC day, today or before, whose day of the month is over 12."""
    day = datetime.now(UTC).date()
    while day.day <= 12:
        day -= timedelta(days=1)
    return day
