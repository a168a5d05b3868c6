from datetime import timedelta

import pytest
from intake_builders import NOW, policy, report

from services.intake.domain.classify import classify, outlook
from services.intake.domain.hotspots import is_hot_spot
from services.intake.domain.model import (
    Avoidability,
    CustomerHistory,
    Impact,
    OpenCaseSummary,
    Outlook,
    Severity,
    Source,
)
from services.intake.domain.rules import dedupe_key, should_merge

POLICY = policy()
FIRST = CustomerHistory()
REPEAT = CustomerHistory(prior_failure_times=(NOW - timedelta(days=30),))


def codes(reasons):
    return [r.code for r in reasons]


def test_all_clear_is_recoverable_with_no_reasons():
    assert outlook(Severity.MODERATE, False, FIRST, POLICY, NOW) == (Outlook.RECOVERABLE, ())


@pytest.mark.parametrize(
    ("level", "avoidable", "history", "code"),
    [
        (Severity.MINOR, False, REPEAT, "repeat_failure"),
        (Severity.MAJOR, False, FIRST, "big_failure"),
        (Severity.CRITICAL, False, FIRST, "big_failure"),
        (Severity.MINOR, True, FIRST, "avoidable_failure"),
    ],
)
def test_each_condition_alone_puts_the_case_at_risk(level, avoidable, history, code):
    result, reasons = outlook(level, avoidable, history, POLICY, NOW)
    assert result is Outlook.AT_RISK
    assert codes(reasons) == [code]


def test_all_failed_conditions_are_listed():
    result, reasons = outlook(Severity.CRITICAL, True, REPEAT, POLICY, NOW)
    assert result is Outlook.AT_RISK
    assert codes(reasons) == ["repeat_failure", "big_failure", "avoidable_failure"]


def test_failures_before_the_repeat_window_do_not_count():
    old = CustomerHistory(prior_failure_times=(NOW - timedelta(days=366),))
    assert outlook(Severity.MINOR, False, old, POLICY, NOW)[0] is Outlook.RECOVERABLE
    edge = CustomerHistory(prior_failure_times=(NOW - timedelta(days=365),))
    assert outlook(Severity.MINOR, False, edge, POLICY, NOW)[0] is Outlook.AT_RISK


def test_classify_combines_everything_with_the_policy_version():
    r = report(avoidability=Avoidability.AVOIDABLE, stated_impacts=frozenset({Impact.MISSED_IMPORTANT_EVENT}))
    c = classify(r, REPEAT, POLICY, now=NOW)
    assert (c.severity, c.avoidable, c.outlook, c.policy_version) == (Severity.MAJOR, True, Outlook.AT_RISK, "test.1")
    assert codes(c.outlook_reasons) == ["repeat_failure", "big_failure", "avoidable_failure"]


def case(**changes):
    values = {"case_id": "case-1", "customer_id": "cust-1", "reference": "order-1", "first_failure_at": NOW}
    return OpenCaseSummary(**(values | changes))


@pytest.mark.parametrize(
    ("offset", "merges"),
    [
        (timedelta(hours=0), True),
        (timedelta(hours=47, minutes=59), True),
        (timedelta(hours=48), True),
        (timedelta(hours=48, seconds=1), False),
        (-timedelta(hours=47), True),
        (-timedelta(hours=49), False),
    ],
)
def test_merge_inside_and_outside_the_window(offset, merges):
    assert should_merge(report(occurred_at=NOW + offset), case(), POLICY) is merges


def test_different_reference_never_merges():
    assert not should_merge(report(reference="order-2"), case(), POLICY)


def test_no_reference_never_merges_even_with_an_unreferenced_case():
    assert not should_merge(report(reference=""), case(reference=""), POLICY)


def test_different_customer_never_merges():
    assert not should_merge(report(customer_id="cust-2"), case(), POLICY)


def test_dedupe_key_is_source_and_event_id():
    assert dedupe_key(report()) == (Source.DELIVERY_TRACKING, "evt-1")
    assert dedupe_key(report(source=Source.FRONTLINE, source_event_id="")) is None


@pytest.mark.parametrize(
    ("count", "baseline_total", "baseline_windows", "hot"),
    # min_count 5, factor 3x: the baseline is the average per window (total / windows).
    [
        (4, 0, 24, False),
        (5, 0, 24, True),
        (30, 10, 1, False),
        (31, 10, 1, True),
        (30, 240, 24, False),
        (31, 240, 24, True),
    ],
)
def test_hot_spot_needs_min_count_and_the_factor(count, baseline_total, baseline_windows, hot):
    assert is_hot_spot(count, baseline_total, baseline_windows, policy=POLICY) is hot
