"""The transition table: every legal move, and every other (state, command) refused with a STATE violation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.escalation.domain import commands as c
from services.escalation.domain import lifecycle
from services.escalation.domain.errors import IllegalTransition
from services.escalation.domain.model import Actor, CaseState, CustomerDecision
from tests.unit.escalation.escalation_builders import NOW, case

S = CaseState
OWNER = Actor.employee("e-1", "agent", "care")
LEAD = Actor.employee("e-9", "team_lead", "care")

COMMANDS = {
    c.ClaimCase: c.ClaimCase(by=Actor.employee("e-2", "agent", "care")),
    c.AcknowledgeCase: c.AcknowledgeCase(by=OWNER),
    c.ProposeOffer: c.ProposeOffer(offer_id="o-1"),
    c.AuthorizeOffer: c.AuthorizeOffer(by=OWNER),
    c.RequestApproval: c.RequestApproval(by=OWNER),
    c.DecideApproval: c.DecideApproval(by=LEAD, approved=True),
    c.PresentOffer: c.PresentOffer(by=OWNER),
    c.RecordCustomerDecision: c.RecordCustomerDecision(by=OWNER, decision=CustomerDecision.ACCEPTED),
    c.TransferCase: c.TransferCase(by=OWNER, to_employee_id="e-3", to_team="", reason="specialist"),
    c.ResolveCase: c.ResolveCase(by=OWNER),
    c.ReopenCase: c.ReopenCase(by=OWNER, reason="not satisfied"),
}

EXPECTED = {
    (S.QUEUED, c.ClaimCase): S.OPEN,
    (S.OPEN, c.AcknowledgeCase): S.ACKNOWLEDGED,
    (S.ACKNOWLEDGED, c.AcknowledgeCase): S.ACKNOWLEDGED,
    (S.WAITING_ON_CUSTOMER, c.AcknowledgeCase): S.WAITING_ON_CUSTOMER,
    (S.OFFER_PENDING, c.AcknowledgeCase): S.OFFER_PENDING,
    (S.AWAITING_APPROVAL, c.AcknowledgeCase): S.AWAITING_APPROVAL,
    (S.OFFER_READY, c.AcknowledgeCase): S.OFFER_READY,
    (S.REOPENED, c.AcknowledgeCase): S.ACKNOWLEDGED,
    (S.QUEUED, c.ProposeOffer): S.QUEUED,
    **{
        (s, c.ProposeOffer): S.OFFER_PENDING
        for s in (
            S.OPEN,
            S.ACKNOWLEDGED,
            S.OFFER_PENDING,
            S.OFFER_READY,
            S.WAITING_ON_CUSTOMER,
            S.REOPENED,
        )
    },
    (S.AWAITING_APPROVAL, c.ProposeOffer): S.AWAITING_APPROVAL,  # the approval follows the re-quote
    (S.OFFER_PENDING, c.AuthorizeOffer): S.OFFER_READY,
    (S.OFFER_PENDING, c.RequestApproval): S.AWAITING_APPROVAL,
    (S.AWAITING_APPROVAL, c.DecideApproval): S.OFFER_READY,
    (S.QUEUED, c.DecideApproval): S.QUEUED,  # decided before anyone claimed the case
    (S.OFFER_READY, c.PresentOffer): S.WAITING_ON_CUSTOMER,
    (S.OFFER_READY, c.RecordCustomerDecision): S.OFFER_READY,
    (S.WAITING_ON_CUSTOMER, c.RecordCustomerDecision): S.OFFER_READY,
    **{(s, c.TransferCase): (S.OPEN if s is S.QUEUED else s) for s in S if s is not S.RESOLVED},
    **{
        (s, c.ResolveCase): S.RESOLVED
        for s in (S.OPEN, S.ACKNOWLEDGED, S.OFFER_PENDING, S.OFFER_READY, S.WAITING_ON_CUSTOMER, S.REOPENED)
    },
    (S.RESOLVED, c.ReopenCase): S.REOPENED,
}


@pytest.mark.parametrize(("state", "command_type"), sorted(EXPECTED, key=lambda k: (k[0].value, k[1].__name__)))
def test_legal_transitions_reach_the_expected_state(state, command_type):
    transition = lifecycle.apply(case(state), COMMANDS[command_type], NOW)
    assert transition.case.state is EXPECTED[(state, command_type)]
    assert transition.events, "every transition says what happened"


def test_the_table_holds_exactly_the_expected_transitions():
    # The system's own moves on a queued case: refused to people, so not in EXPECTED's owner-driven table.
    assert set(lifecycle.TABLE) == set(EXPECTED) | {(S.QUEUED, c.AuthorizeOffer), (S.QUEUED, c.RequestApproval)}


def _id(v):
    return getattr(v, "__name__", getattr(v, "value", v))


ILLEGAL = [(s, t) for s in S for t in COMMANDS if (s, t) not in lifecycle.TABLE]


@pytest.mark.parametrize(
    ("state", "command_type"), ILLEGAL, ids=lambda v: getattr(v, "__name__", getattr(v, "value", v))
)
def test_every_other_pair_is_refused_with_a_state_violation(state, command_type):
    with pytest.raises(IllegalTransition) as refused:
        lifecycle.apply(case(state), COMMANDS[command_type], NOW)
    (violation,) = refused.value.violations
    assert violation.type == "STATE"
    assert violation.subject == "case/c-1"
    assert state.value in violation.description


def test_claim_makes_the_claimer_owner():
    claimed = lifecycle.apply(case(S.QUEUED), COMMANDS[c.ClaimCase], NOW).case
    assert (claimed.owner_employee_id, claimed.owner_role) == ("e-2", "agent")


@pytest.mark.parametrize(
    ("offer_id", "authorized", "state"),
    [("", False, S.OPEN), ("o-1", False, S.OFFER_PENDING), ("o-1", True, S.OFFER_READY)],
)
def test_an_offer_that_waited_in_the_queue_is_in_play_once_the_case_is_claimed(offer_id, authorized, state):
    claim = c.ClaimCase(by=Actor.employee("e-2", "agent", "care"), offer_authorized=authorized)
    assert lifecycle.apply(case(S.QUEUED, current_offer_id=offer_id), claim, NOW).case.state is state


def test_a_transfer_forgets_the_owners_role_until_the_new_owner_acts():
    moved = lifecycle.apply(case(S.OPEN, owner_role="agent"), COMMANDS[c.TransferCase], NOW).case
    assert (moved.owner_employee_id, moved.owner_role) == ("e-3", "")


def test_only_the_system_authorises_an_offer_on_a_queued_case():
    assert lifecycle.apply(case(S.QUEUED), c.AuthorizeOffer(by=Actor.system()), NOW).case.state is S.QUEUED
    with pytest.raises(IllegalTransition):
        lifecycle.apply(case(S.QUEUED), c.AuthorizeOffer(by=OWNER), NOW)


def test_only_the_system_sends_a_queued_cases_offer_up_and_the_claimer_inherits_the_request():
    queued = case(S.QUEUED, current_offer_id="o-1")
    sent = lifecycle.apply(queued, c.RequestApproval(by=Actor.system()), NOW).case
    assert sent.state is S.QUEUED
    with pytest.raises(IllegalTransition, match="claim it first"):
        lifecycle.apply(queued, c.RequestApproval(by=OWNER), NOW)
    pending = case(S.QUEUED, current_offer_id="o-1", pending_approval_id="a-1")
    claim = c.ClaimCase(by=Actor.employee("e-2", "agent", "care"))
    assert lifecycle.apply(pending, claim, NOW).case.state is S.AWAITING_APPROVAL
    assert lifecycle.apply(pending, COMMANDS[c.TransferCase], NOW).case.state is S.AWAITING_APPROVAL
    to_queue = c.TransferCase(by=LEAD, to_employee_id="", to_team="billing", reason="their product")
    with pytest.raises(IllegalTransition, match="approval is in flight"):
        lifecycle.apply(pending, to_queue, NOW)
    decided = lifecycle.apply(pending, c.DecideApproval(by=LEAD, approved=True), NOW).case
    assert (decided.state, decided.pending_approval_id) == (S.QUEUED, "")


def test_a_second_acknowledgement_changes_nothing_in_the_lifecycle():
    acknowledged = case(S.OFFER_PENDING, acknowledged_at=NOW)
    later = NOW + timedelta(days=1)
    transition = lifecycle.apply(acknowledged, COMMANDS[c.AcknowledgeCase], later)
    assert transition.case == acknowledged  # the first acknowledgement's time stands; the SLA clock stopped then
    assert transition.events == ()


def test_rejection_returns_to_work_and_clears_the_pending_approval():
    waiting = case(S.AWAITING_APPROVAL, acknowledged_at=NOW, pending_approval_id="a-1")
    after = lifecycle.apply(waiting, c.DecideApproval(by=LEAD, approved=False), NOW).case
    assert after.state is S.ACKNOWLEDGED
    assert after.pending_approval_id == ""
    assert (
        lifecycle.apply(case(S.AWAITING_APPROVAL), c.DecideApproval(by=LEAD, approved=False), NOW).case.state is S.OPEN
    )


@pytest.mark.parametrize("decision", [CustomerDecision.DECLINED, CustomerDecision.COUNTERED])
def test_a_declined_or_countered_offer_goes_back_to_work(decision):
    after = lifecycle.apply(
        case(S.WAITING_ON_CUSTOMER, acknowledged_at=NOW), c.RecordCustomerDecision(by=OWNER, decision=decision), NOW
    )
    assert after.case.state is S.ACKNOWLEDGED


def test_transfers_need_a_reason_and_are_counted():
    with pytest.raises(IllegalTransition, match="reason"):
        lifecycle.apply(case(S.OPEN), c.TransferCase(by=OWNER, to_employee_id="e-3", to_team="", reason=" "), NOW)
    moved = lifecycle.apply(case(S.OPEN, transfer_count=1), COMMANDS[c.TransferCase], NOW).case
    assert (moved.owner_employee_id, moved.transfer_count) == ("e-3", 2)


def test_a_transfer_to_the_queue_drops_the_owner_but_not_while_a_decision_is_in_flight():
    to_queue = c.TransferCase(by=OWNER, to_employee_id="", to_team="billing", reason="wrong team")
    queued = lifecycle.apply(case(S.ACKNOWLEDGED), to_queue, NOW).case
    assert (queued.state, queued.owner_employee_id, queued.team) == (S.QUEUED, "", "billing")
    with pytest.raises(IllegalTransition):
        lifecycle.apply(case(S.AWAITING_APPROVAL), to_queue, NOW)


def test_resolving_counts_resolutions():
    assert (
        lifecycle.apply(case(S.OFFER_READY, resolution_count=1), COMMANDS[c.ResolveCase], NOW).case.resolution_count
        == 2
    )
