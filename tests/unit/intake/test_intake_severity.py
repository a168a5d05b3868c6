from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from intake_builders import policy, report

from services.intake.domain.classify import avoidability, money_at_stake, severity
from services.intake.domain.model import Avoidability, Category, CostItem, CostKind, Impact, Money, Severity

POLICY = policy()


def eur(amount: int) -> CostItem:
    return CostItem(kind=CostKind.TAXI, amount=Money(amount, "EUR"))


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        (Category.LATE_DELIVERY, Severity.MINOR),
        (Category.BILLING_ERROR, Severity.MINOR),
        (Category.CANCELLATION, Severity.MODERATE),
        (Category.DAMAGED_ITEM, Severity.MODERATE),
        (Category.WRONG_ITEM, Severity.MINOR),
        (Category.SERVICE_QUALITY, Severity.MINOR),
        (Category.NO_SHOW, Severity.MAJOR),
        (Category.OTHER, Severity.MINOR),
    ],
)
def test_category_sets_the_base_severity(category, expected):
    level, reasons = severity(report(category=category), POLICY)
    assert level is expected
    assert [r.code for r in reasons] == ["category_base"]


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (0, Severity.MINOR),
        (9_999, Severity.MINOR),
        (10_000, Severity.MODERATE),
        (10_001, Severity.MODERATE),
        (49_999, Severity.MODERATE),
        (50_000, Severity.MAJOR),
        (50_001, Severity.MAJOR),
        (499_999, Severity.MAJOR),
        (500_000, Severity.CRITICAL),
        (500_001, Severity.CRITICAL),
    ],
)
def test_money_at_stake_thresholds_at_below_and_above(amount, expected):
    level, _ = severity(report(reported_costs=(eur(amount),)), POLICY)
    assert level is expected


def test_money_rule_gives_its_reason():
    _, reasons = severity(report(reported_costs=(eur(50_000),)), POLICY)
    assert [r.code for r in reasons] == ["category_base", "money_at_stake"]
    assert "threshold for major is 50000" in reasons[1].detail


def test_costs_are_summed_per_currency_with_the_order_value():
    costs = (eur(6_000), eur(4_000), CostItem(CostKind.HOTEL, Money(99_999_999, "JPY")))
    r = report(reported_costs=costs, order_value=Money(40_000, "EUR"))
    assert money_at_stake(r, POLICY) == {"EUR": 50_000, "JPY": 99_999_999}
    # JPY has no thresholds in this policy: it raises nothing; EUR reaches major.
    assert severity(r, POLICY)[0] is Severity.MAJOR


def test_order_value_ignored_when_policy_says_so():
    r = report(order_value=Money(500_000, "EUR"))
    assert severity(r, POLICY)[0] is Severity.CRITICAL
    assert severity(r, replace(POLICY, include_order_value=False))[0] is Severity.MINOR


def test_currency_without_thresholds_raises_nothing():
    r = report(reported_costs=(CostItem(CostKind.TAXI, Money(10**12, "USD")),))
    assert severity(r, POLICY) == (Severity.MINOR, severity(report(), POLICY)[1])


@pytest.mark.parametrize(
    ("impact", "expected", "code"),
    [
        (Impact.INCONVENIENCE, Severity.MINOR, None),
        (Impact.TIME_LOST, Severity.MINOR, None),
        (Impact.FINANCIAL_LOSS, Severity.MODERATE, "financial_loss_impact"),
        (Impact.MISSED_IMPORTANT_EVENT, Severity.MAJOR, "missed_important_event_impact"),
        (Impact.SAFETY, Severity.CRITICAL, "safety_impact"),
    ],
)
def test_stated_impact_raises_severity(impact, expected, code):
    level, reasons = severity(report(stated_impacts=frozenset({impact})), POLICY)
    assert level is expected
    assert [r.code for r in reasons][1:] == ([code] if code else [])


def test_highest_rule_wins_and_every_fired_rule_is_a_reason():
    r = report(
        category=Category.CANCELLATION,
        reported_costs=(eur(60_000),),
        stated_impacts=frozenset({Impact.SAFETY, Impact.MISSED_IMPORTANT_EVENT}),
    )
    level, reasons = severity(r, POLICY)
    assert level is Severity.CRITICAL
    assert [x.code for x in reasons] == [
        "category_base",
        "money_at_stake",
        "missed_important_event_impact",
        "safety_impact",
    ]


def test_rules_never_lower_the_base():
    r = report(category=Category.NO_SHOW, stated_impacts=frozenset({Impact.FINANCIAL_LOSS}))
    assert severity(r, POLICY)[0] is Severity.MAJOR


def test_severities_are_ordered():
    assert Severity.MINOR < Severity.MODERATE < Severity.MAJOR < Severity.CRITICAL
    assert max(Severity) is Severity.CRITICAL


@pytest.mark.parametrize(
    ("given_value", "avoidable", "code"),
    [
        (Avoidability.AVOIDABLE, True, "within_company_control"),
        (Avoidability.UNAVOIDABLE, False, "outside_company_control"),
        (None, False, "avoidability_unknown"),
    ],
)
def test_avoidability(given_value, avoidable, code):
    result, reason = avoidability(report(avoidability=given_value))
    assert (result, reason.code) == (avoidable, code)


amounts = st.integers(min_value=0, max_value=10**12)


@given(
    costs=st.lists(amounts, max_size=5),
    extra=amounts,
    category=st.sampled_from(Category),
    impacts=st.frozensets(st.sampled_from(Impact)),
    order_value=st.none() | amounts,
)
def test_more_money_at_stake_never_lowers_severity(costs, extra, category, impacts, order_value):
    r = report(
        category=category,
        stated_impacts=impacts,
        reported_costs=tuple(eur(a) for a in costs),
        order_value=None if order_value is None else Money(order_value, "EUR"),
    )
    more = replace(r, reported_costs=(*r.reported_costs, eur(extra)))
    assert severity(more, POLICY)[0] >= severity(r, POLICY)[0]
