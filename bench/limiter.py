"""The carrier rate limit's throughput when the worker's event loop is busy.

    python -m bench.limiter --rate 200 --json limiter.json

A worker's carrier requests all pass one ``RequestSpacer`` per carrier, in an event loop
that also runs every activity and heartbeat of the worker. This holds 500 requests
waiting at ``--rate`` and, beside them, keeps the loop busy with callbacks of
``--busy-ms`` each (0, 5 and 20 of them per loop pass), and reports the requests/s let
through at each load: what the limit really allows a worker as busy as the
10,000-balance herd's (BENCHMARKS.md). Bounded: ``--seconds`` per load, a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import report
from carriers.ratelimit import RequestSpacer
from temporal_client import exit_with

LOADS = (0, 5, 20)
WAITING = 500


async def let_go(
    spacer: RequestSpacer,
    seconds: float,
    busy_callbacks: int,
    busy_ms: float = 1.0,
    waiting: int = WAITING,
) -> list[float]:
    """When each of ``waiting`` requests looping on ``spacer`` was let go over ``seconds``,
    with ``busy_callbacks`` callbacks of ``busy_ms`` each in every pass of the loop."""
    stop = asyncio.Event()
    sent: list[float] = []

    async def request() -> None:
        while not stop.is_set():
            await spacer.wait()
            sent.append(time.monotonic())

    async def busy() -> None:
        while not stop.is_set():
            until = time.perf_counter() + busy_ms / 1000
            while time.perf_counter() < until:
                pass
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(busy()) for _ in range(busy_callbacks)]
    tasks += [asyncio.create_task(request()) for _ in range(waiting)]
    await asyncio.sleep(seconds)
    stop.set()
    counted = list(sent)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counted


async def let_through(rate: float, busy_callbacks: int, busy_ms: float, seconds: float) -> float:
    """Requests/s the spacer lets go with ``busy_callbacks`` busy callbacks per loop pass."""
    sent = await let_go(RequestSpacer(rate), seconds, busy_callbacks, busy_ms)
    return round(len(sent) / seconds, 1)


async def measure(args: argparse.Namespace) -> dict[str, object]:
    through = {
        str(load): await let_through(args.rate, load, args.busy_ms, args.seconds) for load in LOADS
    }
    return {
        "rate_limit_per_second": args.rate,
        "busy_ms_per_callback": args.busy_ms,
        "let_through_per_second_by_busy_callbacks": through,
        "fraction_of_limit_at_busiest": round(through[str(LOADS[-1])] / args.rate, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="limit, requests/s")
    parser.add_argument("--busy-ms", type=float, default=1.0, help="length of one busy callback")
    parser.add_argument("--seconds", type=float, default=3.0, help="per load")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.busy_ms < 0 or not 0 < args.seconds <= 60:
        parser.error("--rate must be positive, --busy-ms not negative, --seconds in (0, 60]")
    return report(asyncio.run(measure(args)), args.json)


if __name__ == "__main__":
    exit_with(main)
