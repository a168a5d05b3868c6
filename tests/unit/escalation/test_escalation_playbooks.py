"""Plan B, pure: who may declare an incident, and which playbook offers its declaration pre-approves."""

from __future__ import annotations

import pytest

from services.escalation.domain import authority
from services.escalation.domain.errors import Forbidden, InvalidCommand, PolicyError
from services.escalation.domain.model import Actor, Declaration, Money, OfferLine, RemedyKind
from services.escalation.domain.policy import load_policy
from tests.unit.escalation.escalation_builders import NOW, POLICY_TEXT, offer, policy

LEAD = Actor.employee("lead-1", "team_lead", "care")


def declaration(**changes) -> Declaration:
    values = {
        "incident_id": "flight-LO123",
        "playbook_id": "cancelled_flight",
        "declared_by": "lead-1",
        "declared_by_role": "team_lead",
        "declared_by_team": "care",
        "reason": "storm",
        "limits_policy_version": "p",
        "declared_at": NOW,
    }
    return Declaration(**(values | changes))


def playbook_offer(*lines, **changes):
    lines = lines or ((RemedyKind.VOUCHER, 1500), (RemedyKind.REIMBURSEMENT, 12000))
    return offer(*lines, **({"playbook_id": "cancelled_flight"} | changes))


def test_a_playbook_offer_within_the_declarers_limits_is_pre_approved_with_them():
    limits = authority.playbook_limits(policy(), declaration(), playbook_offer())
    assert limits is not None and limits.role == "team_lead" and limits.per_case == 50000


@pytest.mark.parametrize(
    "why, the_offer, the_declaration",
    [
        (
            "a normal offer (the customer needed more than the playbook)",
            offer((RemedyKind.VOUCHER, 1500)),
            declaration(),
        ),
        ("another playbook than the declared one", playbook_offer(playbook_id="double_billing"), declaration()),
        ("the abuse guard asks for a review", playbook_offer(needs_review=True), declaration()),
        ("above the declarer's per-case limit", playbook_offer((RemedyKind.REIMBURSEMENT, 50001)), declaration()),
        ("a remedy above its cap for the declarer", playbook_offer((RemedyKind.GIFT, 10001)), declaration()),
        (
            "a remedy the declarer may not grant",
            playbook_offer((RemedyKind.STATUTORY_COMPENSATION, 60001)),
            declaration(),
        ),
        (
            "the incident's total past the declarer's month",
            playbook_offer(),
            declaration(authorized_base_minor=1_990_000),
        ),
        ("no declaration", playbook_offer(), None),
    ],
)
def test_the_normal_path_takes_what_the_declaration_does_not_cover(why, the_offer, the_declaration):
    assert authority.playbook_limits(policy(), the_declaration, the_offer) is None, why


def test_a_team_budget_flag_does_not_stop_a_pre_approved_offer():
    # The declarer decided the incident's spend ahead; the abuse guard still wants its review (above).
    assert authority.playbook_limits(policy(), declaration(), playbook_offer(budget_exceeded=True)) is not None


def test_another_currency_is_checked_at_the_policys_rate():
    lines = (OfferLine(RemedyKind.VOUCHER, Money(200000, "PLN")),)  # 470 EUR at 0.235: within 500 EUR
    pln = offer(playbook_id="cancelled_flight", lines=lines, total=Money(200000, "PLN"))
    assert authority.playbook_limits(policy(), declaration(), pln) is not None
    more = offer(playbook_id="cancelled_flight", lines=lines, total=Money(220000, "PLN"))  # 517 EUR
    assert authority.playbook_limits(policy(), declaration(), more) is None


def test_only_the_policys_declarer_roles_declare_and_only_its_playbooks():
    assert authority.check_may_declare(policy(), by=LEAD, playbook_id="cancelled_flight").per_case == 50000
    with pytest.raises(Forbidden, match=r"'agent' may not declare.*team_lead"):
        authority.check_may_declare(policy(), by=Actor.employee("a-1", "agent", "care"), playbook_id="cancelled_flight")
    with pytest.raises(InvalidCommand) as unknown:
        authority.check_may_declare(policy(), by=LEAD, playbook_id="hurricane")
    assert "playbook_id" in str(unknown.value) and "'hurricane'" in str(unknown.value)


def test_the_policy_refuses_a_declarer_role_that_is_not_a_tier():
    with pytest.raises(PolicyError, match=r"incidents.declarer_roles.*'pilot' is not a tier"):
        load_policy(POLICY_TEXT.replace('declarer_roles = ["team_lead"', 'declarer_roles = ["pilot", "team_lead"'))
