"""What an answer means and who may cancel a follow-up (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.texts import CustomerText
from services.followup.config import DEFAULT_POLICY
from services.followup.domain.access import may_cancel
from services.followup.domain.errors import InvalidFeedback, PolicyError
from services.followup.domain.feedback import asks_reopen, failure_event_id, validate_feedback, with_verdict
from services.followup.domain.model import Feedback, Followup, FollowupKind, FollowupStatus, Source
from services.followup.domain.policy import load_policy

AT = datetime(2026, 5, 4, 12, tzinfo=UTC)


def answer(**changes) -> Feedback:
    base = dict(
        source=Source.SURVEY,
        feedback_id="fb-1",
        customer_id="cust-1",
        case_id="case-1",
        followup_id="",
        score=7,
        satisfied=True,
        comment="",
        received_at=AT,
    )
    return Feedback(**(base | changes))


def followup(owner: str = "emp-1") -> Followup:
    return Followup(
        followup_id="f-1",
        case_id="case-1",
        customer_id="cust-1",
        kind=FollowupKind.CHECK_IN,
        occasion="resolution:1",
        status=FollowupStatus.PENDING,
        due_at=AT,
        original_due_at=AT,
        channel=None,
        owner_employee_id=owner,
        customer_timezone="",
        severity=None,
        outlook=None,
        text=CustomerText("followup.check_in", locale="en", text="hi"),
        action_id="",
        action_description="",
        contact=True,
        scheduled_at=AT,
    )


def test_only_an_explicit_no_asks_for_a_reopen():
    assert asks_reopen(answer(satisfied=False))
    assert not asks_reopen(answer(satisfied=True))
    assert not asks_reopen(answer(satisfied=None, score=0))  # unset is never read as "no"


@pytest.mark.parametrize(
    ("score", "satisfied", "verdict"),
    [(6, None, False), (7, None, True), (10, None, True), (0, None, False), (2, True, True), (9, False, False),
     (None, None, None)],
)  # fmt: skip
def test_a_score_without_a_verdict_is_judged_by_the_policys_threshold_and_a_stated_verdict_wins(
    score, satisfied, verdict
):
    judged = with_verdict(answer(score=score, satisfied=satisfied), negative_below=7)
    assert judged.satisfied is verdict
    assert asks_reopen(judged) is (verdict is False)


def test_a_threshold_of_zero_never_reads_a_score_as_dissatisfied():
    assert with_verdict(answer(score=0, satisfied=None), negative_below=0).satisfied is True


def test_the_policys_threshold_is_checked():
    shipped = DEFAULT_POLICY.read_text()
    assert load_policy(shipped).negative_below == 7
    with pytest.raises(PolicyError, match=r"feedback\.negative_below: must be at most 11"):
        load_policy(shipped.replace("negative_below = 7", "negative_below = 12"))


def test_the_failure_report_id_is_the_same_for_the_same_answer():
    assert failure_event_id(answer()) == failure_event_id(answer(comment="again")) == "feedback:survey:fb-1"
    assert failure_event_id(answer(source=Source.FRONTLINE)) != failure_event_id(answer())


def test_every_bad_field_is_named():
    with pytest.raises(InvalidFeedback) as caught:
        validate_feedback(answer(case_id="", score=11, satisfied=None, comment="x" * 4001), satisfied_required=True)
    assert {v.field for v in caught.value.violations} == {"case_id", "score", "satisfied", "comment"}
    assert validate_feedback(answer(satisfied=None), satisfied_required=False).satisfied is None


def test_agents_cancel_only_their_own_follow_ups_and_leads_those_of_their_own_team():
    def cancel(role, employee_id, team="care", **kw):
        return may_cancel(role=role, employee_id=employee_id, team=team, followup=followup(**kw), case_team="care")

    assert cancel("agent", "emp-1")
    assert not cancel("senior_agent", "emp-2")
    assert not cancel("agent", "", owner="")
    for role in ("team_lead", "manager", "director"):
        assert cancel(role, "emp-9")
        assert not cancel(role, "emp-9", team="billing")  # another team's case
        assert not cancel(role, "emp-9", team="")
    assert not cancel("customer", "emp-1")
