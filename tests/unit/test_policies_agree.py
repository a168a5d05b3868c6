"""The services' policies agree where one's output is another's input: every currency compensation prices
can be authorised by escalation (its limits hold in it at a configured rate), and every playbook a supervisor
may declare is one compensation prices, in every shipped copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.compensation.domain.policy import load_policy as load_compensation
from services.escalation.domain.policy import load_policy as load_escalation

ROOT = Path(__file__).parents[2]
PAIRS = [
    (ROOT / "services/compensation/policy.toml", ROOT / "services/escalation/policy.toml"),
    (ROOT / "deploy/k8s/base/policies/compensation.toml", ROOT / "deploy/k8s/base/policies/escalation.toml"),
]


@pytest.mark.parametrize(("compensation", "escalation"), PAIRS, ids=["services", "k8s"])
def test_every_priced_currency_has_limits(compensation: Path, escalation: Path):
    priced = set(load_compensation(compensation.read_text()).currencies)
    authorisable = set(load_escalation(escalation.read_text()).currencies)
    assert priced <= authorisable, f"{sorted(priced - authorisable)} priced but no rate in {escalation.name}"


@pytest.mark.parametrize(("compensation", "escalation"), PAIRS, ids=["services", "k8s"])
def test_every_declarable_playbook_is_one_compensation_prices(compensation: Path, escalation: Path):
    priced = set(load_compensation(compensation.read_text()).playbooks)
    declarable = set(load_escalation(escalation.read_text()).playbooks)
    assert declarable <= priced, f"{sorted(declarable - priced)} declarable but not in {compensation.name}"
