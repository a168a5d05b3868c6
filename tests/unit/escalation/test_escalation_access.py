"""Resource-level authorisation: agents act on their own cases, supervisors on their team's."""

from __future__ import annotations

import pytest

from services.escalation.domain import access
from services.escalation.domain.errors import Forbidden
from services.escalation.domain.model import Actor, CaseState
from tests.unit.escalation.escalation_builders import case


@pytest.mark.parametrize(
    ("actor", "allowed"),
    [
        (Actor.employee("e-1", "agent", "care"), True),  # the owner
        (Actor.employee("e-2", "agent", "care"), False),  # a colleague
        (Actor.employee("e-2", "senior_agent", "care"), False),
        (Actor.employee("e-9", "team_lead", "care"), True),  # their team's lead
        (Actor.employee("e-9", "team_lead", "billing"), False),
        (Actor.employee("e-8", "manager", "care"), True),
    ],
)
def test_who_may_act_on_a_case(actor, allowed):
    assert access.may_act(case(), actor) is allowed
    if not allowed:
        with pytest.raises(Forbidden):
            access.require_act(case(), actor)


def test_only_the_owner_uses_their_own_authority():
    access.require_owner(case(), Actor.employee("e-1", "agent", "care"))
    with pytest.raises(Forbidden):
        access.require_owner(case(), Actor.employee("e-9", "team_lead", "care"))


def test_queued_cases_are_visible_and_claimable_by_their_team_only():
    queued = case(CaseState.QUEUED)
    assert access.may_view(queued, Actor.employee("e-2", "agent", "care"))
    assert not access.may_view(queued, Actor.employee("e-2", "agent", "billing"))
    access.require_claim(queued, Actor.employee("e-2", "agent", "care"))
    with pytest.raises(Forbidden):
        access.require_claim(queued, Actor.employee("e-2", "agent", "billing"))


def test_an_approver_routed_to_sees_the_case():
    assert access.may_view(case(), Actor.employee("e-5", "agent", "care"), routed_to_actor=True)


def test_a_colleague_whose_report_merged_sees_the_case_but_may_not_act_on_it():
    colleague = Actor.employee("e-9", "agent", "billing")
    assert not access.may_view(case(), colleague)
    assert access.may_view(case(), colleague, reported_it=True)
    with pytest.raises(Forbidden):
        access.require_act(case(), colleague)
