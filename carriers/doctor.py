"""The carrier doctor: checks a carrier client's documented assumptions against the
configured account, before going live and whenever the carrier may have changed.

    python -m carriers.doctor telna|webbing|esimgo [--iccid ICCID]

Settings come from the environment as the worker's do (``TELNA__*``, ``WEBBING__*``,
``ESIMGO__*``, ``CARRIER_TIMEOUT_SECONDS``). Only reads and harmless probes are sent: nothing is
ordered, activated or terminated. One line per assumption named in the client
(``carriers.telna.NOT_PUBLIC`` and ``RECORD_READINGS``; ``carriers.webbing.WIRE``;
``carriers.esimgo.WIRE``):
``confirmed``, ``contradicted`` or ``not checked``, the name, and what was seen; then a
summary. ``--iccid`` adds the checks that read an eSIM's packages (Telna), its device
record (Webbing) or its bundles (eSIM Go).

Exit status: 0 nothing contradicted, 1 something contradicted, 2 the doctor could not
run (bad usage, missing or invalid settings, carrier unreachable or refusing the
credentials), with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

import httpx
from pydantic import ValidationError

from carriers import doctor_esimgo, doctor_telna, doctor_webbing
from carriers.verdicts import CannotCheck, Verdict
from config import Settings

Diagnose = Callable[
    [Settings, str | None, httpx.AsyncBaseTransport | None],
    Coroutine[Any, Any, list[tuple[str, Verdict]]],
]
DOCTORS: dict[str, Diagnose] = {
    "telna": doctor_telna.diagnose,
    "webbing": doctor_webbing.diagnose,
    "esimgo": doctor_esimgo.diagnose,
}
USAGE = "python -m carriers.doctor {esimgo,telna,webbing} [--iccid ICCID]"


class UsageError(Exception):
    """The command line is not one the doctor takes."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (usage: {USAGE})")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m carriers.doctor", description=__doc__.splitlines()[0])
    p.add_argument("carrier", choices=sorted(DOCTORS))
    p.add_argument(
        "--iccid", help="an eSIM of the account whose packages, device or bundles are read too"
    )
    return p


def main(
    argv: Sequence[str] | None = None,
    settings: Settings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """Runs the doctor; ``settings`` (else the environment's) and ``transport`` serve tests."""
    try:
        args = parser().parse_args(argv)
        if settings is None:
            settings = Settings()
        verdicts = asyncio.run(DOCTORS[args.carrier](settings, args.iccid, transport))
    except (UsageError, CannotCheck) as exc:
        return _fail(str(exc))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "__".join(str(part) for part in first["loc"]).upper()
        return _fail(f"setting {where}: {first['msg']}")
    sys.stdout.write(report(args.carrier, verdicts))
    return 1 if any(v.outcome == "contradicted" for _, v in verdicts) else 0


def report(carrier: str, verdicts: list[tuple[str, Verdict]]) -> str:
    """One line per assumption, then the summary."""
    width = max(len(name) for name, _ in verdicts)
    lines = [f"{v.outcome:<12}  {name:<{width}}  {v.why}" for name, v in verdicts]
    counts = {o: sum(v.outcome == o for _, v in verdicts) for o in _OUTCOMES}
    summary = ", ".join(f"{n} {o}" for o, n in counts.items())
    return "\n".join([*lines, f"{carrier}: {summary}"]) + "\n"


_OUTCOMES = ("confirmed", "contradicted", "not checked")


def _fail(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
