"""Table tests for each remedy rule of the shipped policy (amounts worked out by hand from policy.toml)."""

from __future__ import annotations

import pytest

from services.compensation.domain.model import (
    Avoidability,
    Category,
    CostKind,
    CustomerHistory,
    Money,
    Reason,
    RemedyKind,
    Severity,
)
from tests.unit.compensation.compensation_builders import (
    NOW,
    cost,
    eur,
    facts,
    goodwill,
    hours,
    offer,
    with_policy,
)


def money_lines(o):
    return [(line.kind, line.amount.amount_minor, line.rule_id) for line in o.line_items if line.amount.amount_minor]


# Moderate late delivery of a 100 EUR order: base 1500, room min(30000, max(50% of 10000, floor 500)) = 5000.
@pytest.mark.parametrize(
    ("changes", "expected", "why"),
    [
        ({}, 1500, "base for moderate, no adjustment"),
        ({"severity": Severity.MINOR}, 500, "base for minor"),
        ({"severity": Severity.MAJOR}, 4000, "base for major"),
        ({"severity": Severity.CRITICAL}, 5000, "critical base 10000 cut to 50% of the 100 EUR order"),
        ({"severity": Severity.CRITICAL, "order_value": eur(100_000)}, 10000, "critical base within the room"),
        ({"customer_value": eur(100_000)}, 1700, "silver tier +10%: 1650 rounded up to whole euros"),
        ({"customer_value": eur(500_000)}, 1900, "gold tier +25%: 1875 rounded up"),
        ({"prior_failure_count": 2}, 2300, "two prior failures +50%: 2250 rounded up"),
        ({"prior_failure_count": 9}, 3000, "priors counted up to 4: +100%"),
        ({"avoidability": Avoidability.AVOIDABLE}, 2000, "avoidable +30%: 1950 rounded up"),
        ({"avoidability": None}, 1500, "avoidability unknown: no adjustment"),
        ({"failure_at": NOW - hours(34)}, 1600, "10 h past the 24 h grace, +0.5%/h: 1575 rounded up"),
        ({"failure_at": NOW - hours(24)}, 1500, "within the grace: nothing"),
        ({"failure_at": NOW - hours(500)}, 2300, "waiting capped at +50%"),
        ({"sla_breaches": 1}, 1900, "one SLA breach of the recovery +25%"),
        ({"sla_breaches": 9}, 3000, "breaches counted up to 4"),
        ({"reopen_count": 1}, 1900, "one reopening +25%"),
        ({"avoidability": Avoidability.AVOIDABLE, "prior_failure_count": 1}, 2400, "added, one scaling: 1.55x"),
        ({"order_value": eur(2_000), "severity": Severity.MAJOR}, 1000, "cut to 50% of a 20 EUR order"),
        ({"order_value": eur(600)}, 500, "the order share never goes below the floor"),
        ({"order_value": None, "customer_value": None, "severity": Severity.CRITICAL}, 10000, "no order: case cap"),
    ],
)
def test_the_gesture_follows_severity_and_each_adjustment(changes, expected, why):
    o = offer(facts(**changes))
    assert goodwill(o) == expected, why
    gesture = next(line for line in o.line_items if line.kind is RemedyKind.VOUCHER)
    assert gesture.rule_id == f"goodwill.base.{(changes.get('severity') or Severity.MODERATE).value}"


def test_the_case_cap_holds_when_every_adjustment_piles_up():
    o = offer(
        facts(
            severity=Severity.CRITICAL,
            order_value=eur(10_000_000),
            customer_value=eur(900_000),
            prior_failure_count=4,
            avoidability=Avoidability.AVOIDABLE,
            sla_breaches=4,
        )
    )
    assert goodwill(o) == 30000  # 10000 * 3.55 = 35500 without the cap


def test_the_floor_lifts_a_tiny_gesture_and_does_not_apply_without_a_real_failure():
    cheap = with_policy("[goodwill.base.EUR]\nminor = 500", "[goodwill.base.EUR]\nminor = 100")
    assert goodwill(offer(facts(severity=Severity.MINOR), policy=cheap)) == 500
    unclassified = offer(facts(severity=None))
    assert goodwill(unclassified) == 0
    assert [line.kind for line in unclassified.line_items] == [RemedyKind.APOLOGY_NOTE]


@pytest.mark.parametrize(
    ("item", "amount", "needs_receipt", "rule"),
    [
        (cost(CostKind.TAXI, 4000), 4000, True, "reimbursement.taxi"),
        (cost(CostKind.TAXI, 4000, receipt=True), 4000, False, "reimbursement.taxi"),
        (cost(CostKind.MEAL, 2000), 2000, False, "reimbursement.meal"),
        (cost(CostKind.MEAL, 2500), 2500, False, "reimbursement.meal"),  # at the threshold: not above it
        (cost(CostKind.MEAL, 9000, receipt=True), 5000, False, "reimbursement.meal"),
        (cost(CostKind.HOTEL, 45000), 30000, True, "reimbursement.hotel"),
        (cost(None, 12000, receipt=True), 10000, False, "reimbursement.other"),
    ],
)
def test_each_reported_cost_is_repaid_up_to_its_kind_cap(item, amount, needs_receipt, rule):
    o = offer(facts(reported_costs=(item,)))
    line = o.line_items[0]
    assert (line.kind, line.amount.amount_minor, line.needs_receipt, line.rule_id) == (
        RemedyKind.REIMBURSEMENT,
        amount,
        needs_receipt,
        rule,
    )
    assert line.cost_kind is (item.kind or CostKind.OTHER)
    assert goodwill(o) == 1500  # reimbursements sit beside the gesture, not inside its cap


def test_a_cost_in_another_currency_is_not_converted_but_sent_for_review():
    foreign = cost(CostKind.TAXI, 4000)
    o = offer(facts(reported_costs=(foreign.__class__(CostKind.TAXI, Money(4000, "GBP")),)))
    assert all(line.kind is not RemedyKind.REIMBURSEMENT for line in o.line_items)
    assert o.needs_review and o.review_reasons[0].code == "cost_currency_mismatch"


@pytest.mark.parametrize(
    ("changes", "statutory"),
    [
        ({"order_value": eur(10_000)}, 25000),
        ({"order_value": eur(40_000)}, 40000),
        ({"order_value": eur(90_000)}, 60000),
        ({"order_value": None, "customer_value": None}, 25000),
        ({"avoidability": Avoidability.UNAVOIDABLE}, 0),  # extraordinary circumstances
        ({"severity": Severity.MINOR}, 0),  # below the rule's minimum severity
        ({"category": Category.LATE_DELIVERY}, 0),  # the regulation covers cancellations only
    ],
)
def test_statutory_compensation_follows_its_table(changes, statutory):
    base = {"category": Category.CANCELLATION, "avoidability": Avoidability.AVOIDABLE}
    o = offer(facts(**(base | changes)))
    lines = [line for line in o.line_items if line.kind is RemedyKind.STATUTORY_COMPENSATION]
    assert sum(line.amount.amount_minor for line in lines) == statutory
    assert all(line.rule_id == "statutory.air_passenger_rights.cancellation" for line in lines)


def test_statutory_lines_are_not_cut_by_the_goodwill_caps():
    o = offer(facts(category=Category.CANCELLATION, avoidability=Avoidability.AVOIDABLE, order_value=eur(2_000)))
    assert o.amount_of(RemedyKind.STATUTORY_COMPENSATION) == 25000
    assert goodwill(o) == 1000  # the goodwill is cut to 50% of the 20 EUR order; the statutory line is not


def test_the_apology_note_is_always_the_last_line_and_costs_nothing():
    for f in (facts(), facts(severity=None), facts(order_value=Money(100, "USD"))):
        last = offer(f).line_items[-1]
        assert (last.kind, last.amount.amount_minor, last.rule_id) == (RemedyKind.APOLOGY_NOTE, 0, "apology.always")


def test_a_case_in_a_currency_the_policy_does_not_price_gets_the_apology_and_a_review():
    o = offer(facts(order_value=Money(10_000, "USD"), customer_value=None))
    assert [line.kind for line in o.line_items] == [RemedyKind.APOLOGY_NOTE]
    assert o.total == Money(0, "USD")
    assert o.review_reasons == (Reason("currency_not_priced", "the policy has no amounts in USD"),)


@pytest.mark.parametrize(("elsewhere", "here", "flagged"), [(0, 1, False), (3, 1, False), (4, 1, True), (5, 0, True)])
def test_many_unverified_claims_in_the_window_send_the_offer_for_review(elsewhere, here, flagged):
    costs = tuple(cost(CostKind.TAXI, 1000) for _ in range(here))
    o = offer(facts(reported_costs=costs), history=CustomerHistory(unverified_claims_in_window=elsewhere))
    assert o.needs_review is flagged
    if flagged:
        assert o.review_reasons[0].code == "unverified_claims"
    assert goodwill(o) == 1500  # the guard flags; it does not change the amounts


@pytest.mark.parametrize(
    ("team", "spent", "exceeded"),
    [
        ("front-desk", 3_000_000 - 1500, False),  # exactly at the budget: not over it
        ("front-desk", 3_000_000 - 1499, True),
        ("night-shift", 2_000_000 - 1500, False),  # a team without its own budget has the default
        ("night-shift", 2_000_000, True),
    ],
)
def test_the_budget_flag_compares_the_team_spend_plus_the_offer_with_the_budget(team, spent, exceeded):
    o = offer(facts(owning_team=team), spent=spent)
    assert o.total.amount_minor == 1500
    assert o.budget_exceeded is exceeded
