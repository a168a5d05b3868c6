"""One ledger, no double pay: duplicate costs repaid once, re-quotes pay only the difference, repeat references
reviewed (amounts worked out by hand from the shipped policy.toml)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.compensation.domain.model import CostKind, CustomerHistory, LineItem, Money, RemedyKind
from services.compensation.domain.offer import (
    bucket_of,
    compute_offer,
    deduct_granted,
    distinct_costs,
    summarise_granted,
    unverified_claims,
)
from tests.unit.compensation.compensation_builders import NOW, POLICY, cost, facts, goodwill, granted, offer, words
from tests.unit.compensation.test_compensation_properties import case_facts

REIMBURSEMENT, VOUCHER, APOLOGY = RemedyKind.REIMBURSEMENT, RemedyKind.VOUCHER, RemedyKind.APOLOGY_NOTE


def reimbursed(o) -> list[tuple[CostKind | None, int]]:
    return [(line.cost_kind, line.amount.amount_minor) for line in o.line_items if line.kind is REIMBURSEMENT]


# ------------------------------------------------------------------------------------ duplicate costs


@pytest.mark.parametrize(
    ("costs", "expected", "why"),
    [
        ((cost(CostKind.TAXI, 4000, ref="T-1"), cost(CostKind.TAXI, 4000, ref="T-1")), [4000], "same receipt"),
        ((cost(CostKind.TAXI, 1200), cost(CostKind.TAXI, 1200)), [1200], "same kind and amount, no receipt number"),
        ((cost(CostKind.TAXI, 1200, ref="X-9"), cost(CostKind.OTHER, 1500, ref=" x-9")), [1200], "one receipt"),
        ((cost(None, 700), cost(CostKind.OTHER, 700)), [700], "an unset kind reads as other"),
        ((cost(CostKind.TAXI, 1200), cost(CostKind.TAXI, 1300)), [1200, 1300], "two taxis"),
        ((cost(CostKind.TAXI, 1200), cost(CostKind.MEAL, 1200)), [1200, 1200], "a taxi and a meal"),
        (
            (cost(CostKind.TAXI, 0, ref="R"), cost(CostKind.TAXI, 1200, ref="R")),
            [1200],
            "a zero report swallows nothing",
        ),
        ((cost(CostKind.TAXI, 900),) * 3, [900], "three reports of one taxi"),
    ],
)
def test_two_reports_of_one_cost_are_repaid_once(costs, expected, why):
    assert [amount for _, amount in reimbursed(offer(facts(reported_costs=costs)))] == expected, why


def test_the_dropped_duplicate_is_told_to_staff_not_to_the_customer():
    costs = (cost(CostKind.TAXI, 4000, ref="T-1", receipt=True), cost(CostKind.TAXI, 4000, ref="T-1", receipt=True))
    (line,) = [line for line in offer(facts(reported_costs=costs)).line_items if line.kind is REIMBURSEMENT]
    assert "duplicates dropped: reported cost 1 (same receipt reference 'T-1')" in line.internal_reason
    assert words(line) == "We repay what our mistake cost you: taxi, €40.00."


def test_being_one_cost_is_transitive_and_the_first_report_stands_for_it():
    costs = (
        cost(CostKind.TAXI, 3000, ref="R1", receipt=True),
        cost(CostKind.MEAL, 1000),
        cost(CostKind.MEAL, 1000, ref="r1"),  # the taxi's receipt and the meal's kind and amount: all one
    )
    (one,) = distinct_costs(costs)
    assert (one.index, one.cost.amount.amount_minor, one.cost.kind) == (0, 3000, CostKind.TAXI)
    assert one.duplicates == (
        (1, "linked to it by another report of the same cost"),
        (2, "same receipt reference 'r1'"),
    )


def test_a_receipt_on_any_report_of_a_cost_counts():
    costs = (cost(CostKind.TAXI, 3000), cost(CostKind.TAXI, 3000, receipt=True, ref="T-7"))
    (one,) = distinct_costs(costs)
    assert one.cost.has_receipt and one.cost.receipt_reference == "T-7"
    (line,) = [line for line in offer(facts(reported_costs=costs)).line_items if line.kind is REIMBURSEMENT]
    assert not line.needs_receipt  # 30 EUR is above the threshold, but the customer did send the receipt


def test_a_duplicate_in_another_currency_is_one_review_reason_not_two():
    gbp = replace(cost(CostKind.TAXI, 1200), amount=Money(1200, "GBP"))
    o = offer(facts(reported_costs=(gbp, gbp)))
    assert [r.code for r in o.review_reasons] == ["cost_currency_mismatch"]
    assert reimbursed(o) == []


def test_the_abuse_guard_counts_distinct_costs():
    twice = (cost(CostKind.TAXI, 1000), cost(CostKind.TAXI, 1000))
    assert unverified_claims(facts(reported_costs=twice)) == 1
    assert not offer(facts(reported_costs=twice), history=CustomerHistory(unverified_claims_in_window=3)).needs_review
    flagged = offer(facts(reported_costs=twice), history=CustomerHistory(unverified_claims_in_window=4))
    assert [r.code for r in flagged.review_reasons] == ["unverified_claims"]
    assert "5 costs without receipt" in flagged.review_reasons[0].detail


def _greedy_distinct_sum(costs, currency: str) -> int:
    """An independent oracle: repay a cost unless an earlier one has its receipt reference or kind and amount."""
    seen: set[tuple] = set()
    total = 0
    for c in costs:
        if c.amount.currency != currency or c.amount.amount_minor <= 0:
            continue
        keys = {("k", c.kind or CostKind.OTHER, c.amount.amount_minor)}
        if c.receipt_reference.strip():
            keys.add(("r", c.receipt_reference.strip().casefold()))
        if not keys & seen:
            total += c.amount.amount_minor
        seen |= keys
    return total


@given(case_facts())
def test_reimbursement_never_exceeds_the_sum_of_distinct_costs(f):
    o = offer(f)
    assert o.amount_of(REIMBURSEMENT) <= _greedy_distinct_sum(f.reported_costs, o.total.currency)


@given(case_facts())
def test_reporting_every_cost_twice_repays_what_reporting_it_once_does(f):
    once = offer(f)
    twice = offer(replace(f, reported_costs=f.reported_costs + f.reported_costs))
    assert reimbursed(twice) == reimbursed(once)
    assert twice.total == once.total
    assert unverified_claims(replace(f, reported_costs=f.reported_costs * 2)) == unverified_claims(f)


# ------------------------------------------------------------------------------------ granted before


def test_a_requote_offers_only_what_is_new_and_says_what_was_granted():
    o = offer(facts(sla_breaches=1), given=(granted(VOUCHER, 1500),))  # due 1900 (15 EUR + 25%, rounded up)
    assert [(line.kind, line.amount.amount_minor) for line in o.line_items] == [(VOUCHER, 400), (APOLOGY, 0)]
    assert "1500 of 1900 granted before, 400 new" in o.line_items[0].internal_reason
    assert o.total == Money(400, "EUR")
    (before,) = o.granted_before
    assert (before.kind, before.amount, before.rule_id) == (VOUCHER, Money(1500, "EUR"), "granted_before.voucher")
    assert o.granted_before_total == Money(1500, "EUR")


def test_a_first_offer_has_nothing_granted_before():
    o = offer()
    assert o.granted_before == () and o.granted_before_total == Money(0, "EUR")


def test_reimbursements_are_deducted_per_cost_kind():
    costs = (
        cost(CostKind.TAXI, 3000, receipt=True),
        cost(CostKind.TAXI, 2000),
        cost(CostKind.HOTEL, 9000, receipt=True),
    )
    o = offer(facts(reported_costs=costs), given=(granted(REIMBURSEMENT, 4000, CostKind.TAXI),))
    assert reimbursed(o) == [(CostKind.TAXI, 1000), (CostKind.HOTEL, 9000)]  # 5000 taxi due, 4000 of it given
    assert [line.rule_id for line in o.granted_before] == ["granted_before.reimbursement.taxi"]
    assert goodwill(o) == 1500  # a taxi granted is not taken off the goodwill


def test_a_bucket_granted_more_than_now_due_claws_nothing_back_and_charges_no_other_bucket():
    costs = (cost(CostKind.MEAL, 800),)
    o = offer(facts(reported_costs=costs), given=(granted(VOUCHER, 3000),))
    assert [(line.kind, line.amount.amount_minor) for line in o.line_items] == [(REIMBURSEMENT, 800), (APOLOGY, 0)]
    assert o.total == Money(800, "EUR") and o.granted_before_total == Money(3000, "EUR")


def test_what_several_authorisations_granted_is_summed_per_bucket():
    given_lines = (granted(VOUCHER, 1000), granted(REIMBURSEMENT, 500, CostKind.MEAL), granted(VOUCHER, 500))
    before = summarise_granted(given_lines, "EUR")
    assert [(line.kind, line.cost_kind, line.amount.amount_minor) for line in before] == [
        (VOUCHER, None, 1500),
        (REIMBURSEMENT, CostKind.MEAL, 500),
    ]
    assert summarise_granted((granted(APOLOGY, 0),), "EUR") == ()


def test_a_grant_in_another_currency_is_not_deducted_and_sends_the_offer_for_review():
    o = offer(given=(granted(VOUCHER, 1500, currency="GBP"),))
    assert o.amount_of(VOUCHER) == 1500 and o.granted_before == ()
    assert [r.code for r in o.review_reasons] == ["granted_currency_mismatch"]
    assert "GBP" in o.review_reasons[0].detail


def test_the_budget_is_checked_against_what_is_new():
    given_lines = (granted(VOUCHER, 1500),)
    spent = 3_000_000 - 400  # the front desk's budget leaves room for the 4 EUR difference, not for 19 EUR
    assert not offer(facts(sla_breaches=1), given=given_lines, spent=spent).budget_exceeded
    assert offer(facts(sla_breaches=1), spent=spent).budget_exceeded


def test_recomputing_with_the_same_grants_gives_the_same_offer():
    args = {"facts": facts(sla_breaches=2), "history": CustomerHistory(), "policy": POLICY, "now": NOW}
    given_lines = (granted(VOUCHER, 1500), granted(REIMBURSEMENT, 0, CostKind.TAXI))
    assert compute_offer(**args, granted=given_lines) == compute_offer(**args, granted=list(given_lines))


def _line(kind: RemedyKind, amount: int, cost_kind: CostKind | None = None) -> LineItem:
    return LineItem(kind, Money(amount, "EUR"), "rule", "why", "explanation", cost_kind=cost_kind)


KINDS = st.sampled_from([VOUCHER, REIMBURSEMENT, RemedyKind.REFUND])
COST_KINDS = st.none() | st.sampled_from([CostKind.TAXI, CostKind.MEAL])
lines_strategy = st.lists(st.builds(_line, KINDS, st.integers(1, 5000), COST_KINDS), max_size=6)
granted_strategy = st.lists(st.builds(granted, KINDS, st.integers(0, 8000), COST_KINDS), max_size=6)


def _by_bucket(lines) -> dict:
    sums: dict = defaultdict(int)
    for line in lines:
        sums[bucket_of(line.kind, line.cost_kind)] += line.amount.amount_minor
    return sums


@given(lines_strategy, granted_strategy)
def test_deduction_leaves_each_bucket_what_is_due_beyond_its_grant_never_less_than_zero(lines, given_lines):
    new, before = deduct_granted(lines, given_lines, "EUR")
    due, got, grant = _by_bucket(lines), _by_bucket(new), _by_bucket(given_lines)
    for bucket in due.keys() | got.keys():
        assert got.get(bucket, 0) == max(due.get(bucket, 0) - grant.get(bucket, 0), 0)
    assert all(line.amount.amount_minor > 0 for line in new)
    assert _by_bucket(before) == {b: amount for b, amount in grant.items() if amount > 0}


# ------------------------------------------------------------------------------------ repeat reference


def test_a_repeat_failure_on_an_already_compensated_reference_is_reviewed_not_paid_again_automatically():
    o = offer(history=CustomerHistory(repeat_reference_cases=("case-0",)))
    assert o.needs_review
    (reason,) = o.review_reasons
    assert reason.code == "repeat_reference"
    assert "case(s) case-0 within 30 days" in reason.detail
    assert goodwill(o) == 1500  # flagged, not changed: a human decides


def test_no_repeat_case_no_review():
    assert not offer(history=CustomerHistory(repeat_reference_cases=())).needs_review
