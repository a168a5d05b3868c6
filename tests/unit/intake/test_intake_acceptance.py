"""A batch of reports decided in pure code: duplicates, merges and new cases, each seeing the ones before it."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from intake_builders import NOW, policy, report

from services.common.money import Money
from services.intake.domain.acceptance import (
    Amended,
    CustomerState,
    Duplicate,
    Granted,
    KnownCase,
    KnownFailure,
    Opened,
    accept,
)
from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.model import Reporter, Source

POLICY = policy()


def ids():
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


def decide(reports, states=None, seen=None):
    """Decide ``reports`` in order the way the service layer does, folding each decision into its state."""
    states = states if states is not None else {}
    seen = seen if seen is not None else {}
    new_id = ids()
    decisions = []
    for r in reports:
        state = states.setdefault(r.customer_id, CustomerState(customer_id=r.customer_id))
        decision = accept(r, state=state, seen=seen, policy=POLICY, now=NOW, reporter=Reporter(), new_id=new_id)
        state.record(decision)
        decisions.append(decision)
    return decisions, states


def test_a_first_report_opens_a_case_with_an_empty_history():
    [decision], _ = decide([report()])
    assert isinstance(decision, Opened)
    assert decision.event.history.prior_case_count == 0 and decision.event.history.prior_failure_times == ()


def test_the_same_source_event_twice_in_one_batch_is_one_failure():
    first, second = decide([report(), report()])[0]
    assert isinstance(first, Opened)
    assert second == Duplicate(failure_id=first.event.failure_id, case_id=first.event.case_id)


def test_a_source_event_id_already_used_for_another_customer_is_refused():
    with pytest.raises(InvalidFailureReport, match="source_event_id"):
        decide([report(), report(customer_id="cust-2")])


def test_a_second_report_on_the_same_reference_joins_the_case_opened_earlier_in_the_batch():
    opened, amended = decide([report(), report(source_event_id="evt-2", occurred_at=NOW - timedelta(hours=1))])[0]
    assert isinstance(amended, Amended)
    assert amended.event.case_id == opened.event.case_id
    assert amended.event.revision == 2
    assert amended.event.failure_ids == ("id-3", opened.event.failure_id)  # oldest failure first
    assert amended.event.case_report.occurred_at == NOW - timedelta(hours=1)
    # One incident seen twice: the case's own failures are not the customer's history.
    assert amended.event.history.prior_failure_times == ()


def test_a_later_report_of_the_same_customer_sees_the_earlier_case_in_its_history():
    first, second = decide([report(), report(source_event_id="evt-2", reference="order-2")])[0]
    assert isinstance(second, Opened)
    assert second.event.history.prior_case_count == 1
    assert second.event.history.prior_failure_times == (NOW,)
    assert first.event.case_id != second.event.case_id


def test_reports_outside_the_merge_window_open_their_own_case():
    later = report(source_event_id="evt-2", occurred_at=NOW - timedelta(hours=49))
    decisions, _ = decide([report(), later])
    assert all(isinstance(d, Opened) for d in decisions)


def test_a_resolved_case_is_not_joined_but_a_related_followup_failure_joins_it_whatever_its_status():
    case = KnownCase("case-old", "cust-1", "order-1", True, NOW - timedelta(hours=2), NOW - timedelta(hours=2), 3)
    state = CustomerState(customer_id="cust-1", cases={case.case_id: case})
    [plain], _ = decide([report()], states={"cust-1": state})
    assert isinstance(plain, Opened)
    state = CustomerState(customer_id="cust-1", cases={case.case_id: case})
    failed_recovery = report(source=Source.FOLLOWUP, source_event_id="fb-1", related_case_id="case-old")
    [joined], _ = decide([failed_recovery], states={"cust-1": state})
    assert isinstance(joined, Amended) and joined.event.case_id == "case-old" and joined.event.revision == 4


def test_history_leaves_out_what_is_older_than_the_lookbacks():
    state = CustomerState(
        customer_id="cust-1",
        cases={
            "c-new": KnownCase("c-new", "cust-1", "x", True, NOW - timedelta(days=10), NOW - timedelta(days=10), 1),
            "c-old": KnownCase("c-old", "cust-1", "y", True, NOW - timedelta(days=91), NOW - timedelta(days=91), 1),
        },
        failures={
            "f-new": KnownFailure("f-new", "c-new", "cust-1", NOW - timedelta(days=10), NOW - timedelta(days=10)),
            "f-old": KnownFailure("f-old", "c-old", "cust-1", NOW - timedelta(days=366), NOW - timedelta(days=91)),
        },
        granted=[
            Granted("c-new", Money(500, "EUR"), NOW - timedelta(days=9)),
            Granted("c-new", Money(250, "EUR"), NOW - timedelta(days=8)),
            Granted("c-old", Money(900, "PLN"), NOW - timedelta(days=91)),
        ],
    )
    history = state.history(now=NOW, policy=POLICY)
    assert history.prior_case_count == 1
    assert history.prior_failure_times == (NOW - timedelta(days=10),)
    assert history.compensation_received == (Money(750, "EUR"),)
    assert state.history(now=NOW, policy=POLICY, exclude_case_id="c-new").compensation_received == ()
