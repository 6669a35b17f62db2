"""The policy rule the API checks (models.payloads) is the one a workflow applies."""

from __future__ import annotations

import itertools

from models.payloads import Policy, policy_problem
from workflows import timing


def test_the_api_and_the_workflow_refuse_the_same_policies_for_the_same_reasons() -> None:
    leads = (None, 1.0, 10.0, 60.0, 1800.0, 7200.0)
    margins = (None, 0.5, 5.0, 15.0, 59.0, 600.0)
    validities = (1, 20, 30, 120, 3600, 86_400)
    for lead, margin, validity in itertools.product(leads, margins, validities):
        if lead is not None and margin is not None and margin >= lead:
            continue  # refused by Policy itself
        policy = Policy(lead_seconds=lead, margin_seconds=margin)
        assert policy_problem(policy, validity) == timing.policy_problem(policy, validity)
