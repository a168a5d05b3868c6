"""Empowerment: owner limits, tier routing at and around each limit, period limits, approvers, delegation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition
from services.escalation.domain import authority
from services.escalation.domain.errors import Forbidden, LimitExceeded
from services.escalation.domain.model import Actor, ApprovalReason, Delegation, RemedyKind, Usage
from services.escalation.domain.policy import Automation
from tests.unit.escalation.escalation_builders import NOW, eur, offer, policy

V = RemedyKind.VOUCHER
OWNER = Actor.employee("e-1", "agent", "care")


def _route(amount: int, kind: RemedyKind = V, role: str = "agent", usage: Usage | None = None):
    p = policy()
    return authority.route(
        p,
        owner_role=role,
        owner_limits=p.limits_for(employee_id="e-1", role=role),
        offer=offer((kind, amount)),
        usage=usage or Usage(),
    )


@pytest.mark.parametrize(
    ("amount", "tier"),
    [
        (5001, "senior_agent"),
        (15000, "senior_agent"),
        (15001, "team_lead"),
        (50000, "team_lead"),
        (50001, "manager"),
        (200000, "manager"),
        (200001, "director"),
        (1000000, "director"),
        (1000001, "director"),  # nobody covers it: the top tier decides (and may modify it down)
    ],
)
def test_route_goes_to_the_lowest_tier_whose_limits_cover_the_amount(amount, tier):
    routed = _route(amount)
    assert routed.approver_role == tier
    assert ApprovalReason.ABOVE_CASE_LIMIT in routed.reasons


def test_route_starts_above_the_owner_not_at_the_manager():
    assert _route(20000, role="senior_agent").approver_role == "team_lead"
    assert _route(60000, role="team_lead").approver_role == "manager"


def test_a_remedy_kind_cap_routes_even_below_the_case_limit():
    routed = _route(2001, kind=RemedyKind.REFUND)  # agents: no cash refund above 20 EUR
    assert routed.approver_role == "senior_agent"
    assert routed.reasons == (ApprovalReason.REMEDY_KIND_NOT_ALLOWED,)
    assert _route(100, kind=RemedyKind.REPLACEMENT).approver_role == "team_lead"  # not allowed below team lead


def test_within_limits_a_request_is_the_owners_choice():
    assert _route(5000).reasons == (ApprovalReason.OWNER_REQUESTED,)


def test_period_usage_is_a_reason_to_route():
    routed = _route(3000, usage=Usage(today=18000))
    assert routed.reasons == (ApprovalReason.ABOVE_PERIOD_LIMIT,)


@pytest.mark.parametrize(("amount", "ok"), [(4999, True), (5000, True), (5001, False)])
def test_owner_may_authorise_up_to_the_per_case_limit(amount, ok):
    p = policy()
    limits = p.limits_for(employee_id="e-1", role="agent")
    if ok:
        assert authority.check_owner_may_authorise(limits, owner=OWNER, offer=offer((V, amount)), usage=Usage())
    else:
        with pytest.raises(LimitExceeded) as refused:
            authority.check_owner_may_authorise(limits, owner=OWNER, offer=offer((V, amount)), usage=Usage())
        assert refused.value.violations[0].type == "LIMIT"
        assert refused.value.violations[0].subject == "employee/e-1"


@pytest.mark.parametrize(
    ("usage", "ok"),
    [
        (Usage(today=15000), True),  # 15000 + 5000 = the daily limit exactly
        (Usage(today=15001), False),
        (Usage(this_month=195000), True),
        (Usage(this_month=195001), False),
    ],
)
def test_period_limits_hold_at_the_boundary(usage, ok):
    limits = policy().limits_for(employee_id="e-1", role="agent")
    missing = authority.period_shortfalls(limits, eur(5000), usage)
    assert (not missing) is ok


@pytest.mark.parametrize(
    ("amount", "usage", "flag", "covered"),
    [
        (5000, Usage(), {}, True),
        (5001, Usage(), {}, False),  # above the per-case limit
        (5000, Usage(today=15001), {}, False),  # the day's limit would break
        (100, Usage(), {"budget_exceeded": True}, False),  # flagged offers always go to approval
        (100, Usage(), {"needs_review": True}, False),
    ],
)
def test_the_owner_covers_an_offer_at_once_only_when_every_limit_holds_and_nothing_flags_it(
    amount, usage, flag, covered
):
    limits = policy().limits_for(employee_id="e-1", role="agent")
    assert authority.owner_covers(limits, offer=offer((V, amount), **flag), usage=usage) is covered
    assert authority.owner_covers(None, offer=offer((V, 1)), usage=Usage()) is False  # a role without limits


def test_flagged_offers_always_go_to_approval():
    limits = policy().limits_for(employee_id="e-1", role="agent")
    for flagged in (offer(budget_exceeded=True), offer(needs_review=True)):
        with pytest.raises(FailedPrecondition) as refused:
            authority.check_owner_may_authorise(limits, owner=OWNER, offer=flagged, usage=Usage())
        assert refused.value.violations[0].type == "REVIEW"
    routed = authority.route(
        policy(), owner_role="agent", owner_limits=limits, offer=offer(budget_exceeded=True), usage=Usage()
    )
    assert routed == authority.Route("senior_agent", (ApprovalReason.BUDGET_EXCEEDED,))


def test_employee_overrides_replace_the_role_defaults():
    p = policy(employees={"e-7": {"per_case": 8000, "capacity": 3}})
    limits = p.limits_for(employee_id="e-7", role="agent")
    assert (limits.per_case, limits.per_day, limits.employee_override) == (8000, 20000, True)
    assert p.capacity_for("e-7") == 3
    assert p.capacity_for("e-1") == 25


def test_another_currency_is_covered_by_nobody():
    limits = policy().limits_for(employee_id="e-1", role="director")
    from services.common.money import Money

    assert authority.case_shortfalls(limits, Money(1, "PLN"), ())


@pytest.mark.parametrize(
    ("system_detected", "amount", "kind", "flagged", "enabled", "expected"),
    [
        (True, 3000, V, False, True, True),
        (True, 3001, V, False, True, False),
        (False, 100, V, False, True, False),
        (True, 100, RemedyKind.REFUND, False, True, False),
        (True, 100, V, True, True, False),
        (True, 100, V, False, False, False),
    ],
)
def test_system_automation_within_its_limit(system_detected, amount, kind, flagged, enabled, expected):
    p = policy()
    p = policy(automation=Automation(enabled=enabled, limit=p.automation.limit, remedies=p.automation.remedies))
    o = offer((kind, amount), needs_review=flagged)
    assert authority.system_may_authorise(p, system_detected=system_detected, offer=o) is expected


def _decide(decider: Actor, *, delegations=(), requesters=frozenset({"e-1"}), role="team_lead", team="care", at=NOW):
    return authority.approver_authority(
        policy(),
        decider=decider,
        approver_role=role,
        approver_team=team,
        requester_ids=requesters,
        delegations=tuple(delegations),
        now=at,
    )


def test_an_approver_of_the_routed_tier_and_team_decides_with_their_own_authority():
    got = _decide(Actor.employee("e-9", "team_lead", "care"))
    assert (got.employee_id, got.limits.role, got.delegated_by) == ("e-9", "team_lead", "")


def test_a_higher_tier_of_the_team_decides_with_their_own_authority():
    got = _decide(Actor.employee("e-9", "manager", "care"))
    assert (got.employee_id, got.limits.role) == ("e-9", "manager")


def test_the_top_tier_of_the_team_decides_but_not_of_another_team():
    assert _decide(Actor.employee("e-9", "director", "care")).limits.role == "director"
    with pytest.raises(Forbidden):
        _decide(Actor.employee("e-9", "director", "head-office"))


def test_lower_tiers_and_other_teams_below_the_top_may_not_decide():
    with pytest.raises(Forbidden):
        _decide(Actor.employee("e-9", "senior_agent", "care"))
    with pytest.raises(Forbidden):
        _decide(Actor.employee("e-9", "team_lead", "billing"))
    with pytest.raises(Forbidden):
        _decide(Actor.employee("e-9", "manager", "billing"))
    with pytest.raises(Forbidden):
        _decide(Actor.employee("e-9", "auditor", "care"))  # not a tier at all


def test_a_delegate_of_a_higher_tier_may_decide():
    got = _decide(Actor.employee("e-5", "agent", "care"), delegations=[_delegation(role="manager")])
    assert (got.employee_id, got.delegated_by, got.limits.role) == ("e-9", "e-9", "manager")


def test_nobody_approves_their_own_request():
    with pytest.raises(Forbidden, match="own request"):
        _decide(Actor.employee("e-1", "team_lead", "care"))


def _delegation(delegator="e-9", delegate="e-5", role="team_lead", start=NOW - timedelta(hours=1), hours=24):
    return Delegation("d-1", delegator, delegate, role, "care", start, start + timedelta(hours=hours))


@pytest.mark.parametrize(
    ("at", "ok"),
    [
        (NOW - timedelta(hours=1), True),  # the window's start is inside
        (NOW + timedelta(hours=22, minutes=59), True),
        (NOW + timedelta(hours=23), False),  # the end is outside
        (NOW - timedelta(hours=1, seconds=1), False),
    ],
)
def test_a_delegate_uses_the_delegators_authority_within_the_window(at, ok):
    decider = Actor.employee("e-5", "agent", "care")
    if ok:
        got = _decide(decider, delegations=[_delegation()], at=at)
        assert (got.employee_id, got.delegated_by, got.limits.role) == ("e-9", "e-9", "team_lead")
    else:
        with pytest.raises(Forbidden):
            _decide(decider, delegations=[_delegation()], at=at)


def test_delegation_does_not_cascade():
    # e-9 (team lead) lent authority to e-5 (agent); e-5 lending on to e-6 lends only e-5's own role.
    onward = _delegation(delegator="e-5", delegate="e-6", role="agent")
    with pytest.raises(Forbidden):
        _decide(Actor.employee("e-6", "agent", "care"), delegations=[_delegation(), onward])


def test_a_delegate_cannot_approve_the_delegators_own_request():
    with pytest.raises(Forbidden, match="own request"):
        _decide(Actor.employee("e-5", "agent", "care"), delegations=[_delegation()], requesters=frozenset({"e-9"}))


def test_approver_limits_are_checked_with_period_usage():
    limits = policy().limits_for(employee_id="e-9", role="team_lead")
    authority.check_within(limits, subject="employee/e-9", total=eur(50000), lines=(), usage=Usage(today=150000))
    with pytest.raises(LimitExceeded, match="per-day"):
        authority.check_within(limits, subject="employee/e-9", total=eur(50000), lines=(), usage=Usage(today=150001))


def test_reduce_lines_sums_to_the_approved_amount():
    lines = offer((V, 7000), (RemedyKind.REIMBURSEMENT, 3000)).lines
    reduced = authority.reduce_lines(lines, eur(5001))
    assert sum(line.amount.amount_minor for line in reduced) == 5001
    assert [line.kind for line in reduced] == [V, RemedyKind.REIMBURSEMENT]


def test_overdue_requests_escalate_one_tier_and_stop_at_the_top():
    p = policy()
    assert authority.escalated_role(p, "team_lead") == "manager"
    assert authority.escalated_role(p, "director") == "director"


@given(
    amount=st.integers(min_value=0, max_value=2_000_000), owner=st.sampled_from(["agent", "senior_agent", "team_lead"])
)
def test_route_is_the_lowest_covering_tier_above_the_owner(amount, owner):
    p = policy()
    routed = authority.route(
        p,
        owner_role=owner,
        owner_limits=p.limits_for(employee_id="e-1", role=owner),
        offer=offer((V, amount)),
        usage=Usage(),
    )
    above = p.tiers[p.rank(owner) + 1 :]
    assert routed.approver_role in above
    covering = [t for t in above if not authority.case_shortfalls(p.roles[t], eur(amount), offer((V, amount)).lines)]
    assert routed.approver_role == (covering[0] if covering else p.tiers[-1])
