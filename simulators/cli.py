"""The command line both simulators share: ``python -m simulators.{telna,webbing}``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import uvicorn
from fastapi import FastAPI

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One readable line on stderr, exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def tcp_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def parser(module: str, description: str, port_setting: str) -> OneLineParser:
    """The flags every simulator takes; a simulator adds its own before parsing."""
    p = OneLineParser(prog=f"python -m simulators.{module}", description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=tcp_port, default=None, help=f"default: {port_setting}")
    p.add_argument("--state-file", type=Path, help="JSON file keeping state across runs")
    p.add_argument("--seed", type=int, help="seed of latencies and faults")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    return p


def serve(
    p: OneLineParser, args: argparse.Namespace, build: Callable[[], FastAPI], default_port: int
) -> int:
    """Build the app (a bad configuration is one line, exit 2) and serve it until stopped."""
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    try:
        app = build()
    except ValueError as exc:
        p.error(str(exc))
    port = args.port if args.port is not None else default_port
    uvicorn.run(app, host=args.host, port=port, log_level=args.log_level)
    return 0
