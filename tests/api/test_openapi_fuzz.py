"""Property-based fuzzing of the OpenAPI schema with schemathesis, bounded in examples.

The API runs in the end-to-end rig (dev server, worker, Telna-like simulator), so what the
fuzzer sends reaches Temporal and the carrier. Each operation gets schema-conforming and
schema-violating inputs, with random path parameters and with those of a real balance and
eSIM. No answer may be a 5xx, undocumented, or off its documented schema; schema-violating
input must be refused with a 4xx. Hypothesis runs in a thread, so the worker in the
test's event loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from services.enrolment import workflow_id
from tests.e2e.harness import OPERATOR_KEY, iccids, rig

EXAMPLES_PER_OPERATION = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
AUTH = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def _fuzz(url: str, fixed: dict[str, str]) -> list[str]:
    """Fuzz every operation; one line per operation and mode that failed."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    assert "GET /v1/spend" in {op.label for op in operations}
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        pinned = {name: value for name, value in fixed.items() if name in names}
        inputs = sum(len(part) for part in (operation.path_parameters, operation.query,
                                            operation.headers, operation.body))  # fmt: skip
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if inputs else [])
        for mode in modes:
            strategies = [operation.as_strategy(generation_mode=mode, headers=AUTH)]
            if pinned:
                strategies.append(
                    operation.as_strategy(
                        generation_mode=mode, headers=AUTH, path_parameters=pinned
                    )
                )

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=st.one_of(strategies))
            def check(case: Any) -> None:
                case.call_and_validate(checks=CHECKS, timeout=30)

            try:
                check()
            except (Exception, BaseExceptionGroup) as error:  # reported all at once, below
                failures.append(f"{operation.label} [{mode.value}]: {error}")
    return failures


@pytest.mark.timeout(240)  # the whole run's deadline; each request has its own (30 s)
async def test_fuzzing_the_schema_finds_no_5xx_and_no_schema_violation(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        await r.enrol(iccid, "telna-compressed-60s")
        balance = await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
        fixed = {"balance_id": balance.balance_id, "iccid": iccid}
        failures = await asyncio.to_thread(_fuzz, r.api_url, fixed)
        assert not failures, "\n\n".join(failures)
        with contextlib.suppress(RPCError):  # unless the fuzzer cancelled it already
            await r.client.get_workflow_handle(workflow_id(iccid)).terminate("fuzzing over")
