"""Keeps an engine moving in a running app: periodic advance and state-file persistence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from simulators.core import CarrierEngine

logger = logging.getLogger(__name__)


def load_snapshot(path: Path) -> dict[str, Any] | None:
    """The saved state, or None if there is none yet. A corrupt file raises ValueError."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"state file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"state file {path} does not hold a snapshot")
    return data


def save_snapshot(snapshot: dict[str, Any], path: Path) -> None:
    """Writes atomically, so a crash mid-write never leaves a torn state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(snapshot, separators=(",", ":")))
    os.replace(tmp, path)


@contextlib.asynccontextmanager
async def engine_running(
    engine: CarrierEngine,
    state_file: Path | None,
    *,
    tick_seconds: float = 0.1,
    save_every_seconds: float = 2.0,
) -> AsyncIterator[None]:
    """Advances the engine every tick; saves it when changed and once more at the end."""
    saved = engine.revision if state_file is not None and state_file.exists() else -1

    async def save() -> None:
        nonlocal saved
        if state_file is None or engine.revision == saved:
            return
        # The snapshot is fresh data, so it can be encoded and written off the loop.
        revision, snapshot = engine.revision, engine.to_snapshot()
        await asyncio.to_thread(save_snapshot, snapshot, state_file)
        saved = revision

    async def tick() -> None:
        last_save = time.monotonic()
        while True:
            await asyncio.sleep(tick_seconds)
            try:
                engine.advance()
                if time.monotonic() - last_save >= save_every_seconds:
                    last_save = time.monotonic()
                    await save()
            except Exception:
                logger.exception("simulator tick failed")

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        engine.advance()
        await save()
