from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from intake_builders import NOW, raw_report

from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.model import Area, CostItem, CostKind, CustomerRequest, Money, Source
from services.intake.domain.validation import DEFAULT_LIMITS, validate_report


def violations(raw):
    with pytest.raises(InvalidFailureReport) as caught:
        validate_report(raw, now=NOW)
    return {v.field: v.description for v in caught.value.violations}


def test_valid_report_passes():
    r = validate_report(raw_report(), now=NOW)
    assert (r.customer_id, r.source, r.source_event_id) == ("cust-1", Source.DELIVERY_TRACKING, "evt-1")


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"source": None}, "source"),
        ({"source_event_id": ""}, "source_event_id"),
        ({"category": None}, "category"),
        ({"occurred_at": None}, "occurred_at"),
        ({"occurred_at": datetime(2025, 6, 1)}, "occurred_at"),
        ({"source": Source.FRONTLINE, "source_event_id": ""}, "reported_by_employee_id"),
        ({"source": Source.FOLLOWUP}, "related_case_id"),
        ({"survey_score": 11}, "survey_score"),
        ({"survey_score": -1}, "survey_score"),
    ],
)
def test_each_required_field(changes, path):
    assert set(violations(raw_report(**changes))) == {path}


def test_frontline_needs_no_source_event_id():
    raw = raw_report(source=Source.FRONTLINE, source_event_id="", reported_by_employee_id="emp-1")
    assert validate_report(raw, now=NOW).source_event_id == ""


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"customer_id": "c" * 129}, "customer_id"),
        ({"source_event_id": "e" * 129}, "source_event_id"),
        ({"reference": "r" * 129}, "reference"),
        ({"description": "d" * 4001}, "description"),
        ({"impact_details": "i" * 2001}, "impact_details"),
        ({"area": Area(team="t" * 129)}, "area.team"),
        ({"customer_request": CustomerRequest(text="x" * 2001)}, "customer_request.text"),
        ({"reported_costs": (CostItem(CostKind.TAXI, Money(1, "EUR"), "d" * 501),)}, "reported_costs[0].description"),
    ],
)
def test_overlong_strings(changes, path):
    found = violations(raw_report(**changes))
    assert set(found) == {path}
    assert "at most" in found[path]


def test_strings_at_the_limit_pass():
    validate_report(raw_report(customer_id="c" * 128, description="d" * 4000), now=NOW)


def test_occurred_at_within_clock_skew_passes_and_beyond_is_refused():
    validate_report(raw_report(occurred_at=NOW + timedelta(minutes=10)), now=NOW)
    found = violations(raw_report(occurred_at=NOW + timedelta(minutes=10, seconds=1)))
    assert "future" in found["occurred_at"]


def test_far_future_and_too_old_are_refused():
    assert "future" in violations(raw_report(occurred_at=NOW + timedelta(days=365)))["occurred_at"]
    assert "old" in violations(raw_report(occurred_at=NOW - timedelta(days=6 * 365)))["occurred_at"]
    validate_report(raw_report(occurred_at=NOW - timedelta(days=4 * 365)), now=NOW)


def cost(amount, currency="EUR"):
    return CostItem(kind=CostKind.TAXI, amount=Money(amount, currency))


@pytest.mark.parametrize(
    ("money", "path"),
    [
        (Money(-1, "EUR"), "order_value.amount_minor"),
        (Money(10**12 + 1, "EUR"), "order_value.amount_minor"),
        (Money(1.5, "EUR"), "order_value.amount_minor"),
        (Money(True, "EUR"), "order_value.amount_minor"),
        (Money(100, "XXX"), "order_value.currency"),
        (Money(100, "eur"), "order_value.currency"),
    ],
)
def test_bad_money(money, path):
    assert set(violations(raw_report(order_value=money))) == {path}


def test_money_limits_pass():
    validate_report(raw_report(order_value=Money(0, "EUR"), customer_value=Money(10**12, "JPY")), now=NOW)


def test_cost_item_paths_are_indexed():
    found = violations(raw_report(reported_costs=(cost(1), cost(-5), cost(3, "ZZZ"))))
    assert set(found) == {"reported_costs[1].amount.amount_minor", "reported_costs[2].amount.currency"}


def test_customer_request_amount_is_checked():
    found = violations(raw_report(customer_request=CustomerRequest(amount=Money(-1, "EUR"))))
    assert set(found) == {"customer_request.amount.amount_minor"}


def test_too_many_cost_items():
    found = violations(raw_report(reported_costs=tuple(cost(1) for _ in range(DEFAULT_LIMITS.max_cost_items + 1))))
    assert set(found) == {"reported_costs"}


def test_all_violations_are_collected_at_once():
    raw = replace(
        raw_report(),
        customer_id="",
        category=None,
        description="d" * 5000,
        occurred_at=NOW + timedelta(days=2),
        reported_costs=(cost(-1, "ABC"),),
    )
    with pytest.raises(InvalidFailureReport) as caught:
        validate_report(raw, now=NOW)
    assert {v.field for v in caught.value.violations} == {
        "customer_id",
        "category",
        "description",
        "occurred_at",
        "reported_costs[0].amount.amount_minor",
        "reported_costs[0].amount.currency",
    }
    assert "customer_id: is required" in caught.value.message


def receipted(reference: str) -> CostItem:
    return CostItem(kind=CostKind.HOTEL, amount=Money(12900, "EUR"), has_receipt=True, receipt_reference=reference)


def test_a_receipt_reference_is_kept_and_none_is_fine():
    costs = (receipted("INV-2025/0042 Hotel Ameliä"), receipted(""), receipted("r" * 100))
    accepted_costs = validate_report(raw_report(reported_costs=costs), now=NOW).reported_costs
    assert [c.receipt_reference for c in accepted_costs] == ["INV-2025/0042 Hotel Ameliä", "", "r" * 100]


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ("r" * 101, ["at most 100 characters, got 101", "'rrrr"]),
        ("INV-1\nINV-2", ["printable", r"'INV-1\nINV-2'"]),
        ("INV-\x001", ["printable", r"'INV-\x001'"]),
        ("INV-\u200b1", ["printable", r"'INV-\u200b1'"]),
    ],
)
def test_a_bad_receipt_reference_is_refused_naming_its_path_and_value(reference, words):
    found = violations(raw_report(reported_costs=(receipted("ok-1"), receipted(reference))))
    assert set(found) == {"reported_costs[1].receipt_reference"}
    assert all(word in found["reported_costs[1].receipt_reference"] for word in words)


def test_a_long_unprintable_receipt_reference_is_refused_twice_and_shown_cut_short():
    with pytest.raises(InvalidFailureReport) as caught:
        validate_report(raw_report(reported_costs=(receipted("\t" + "r" * 500),)), now=NOW)
    found = caught.value.violations
    assert {v.field for v in found} == {"reported_costs[0].receipt_reference"}
    assert ["got 501" in v.description for v in found] == [True, False]
    assert all(v.description.endswith("'\\trrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr'...") for v in found)


def test_an_incident_id_is_printable_and_short_or_refused_naming_it():
    incident = "flight-LO123-2026-12-01"
    assert validate_report(raw_report(incident_id=incident), now=NOW).incident_id == incident
    for bad in ("x" * 101, "flight\nLO123"):
        with pytest.raises(InvalidFailureReport) as refused:
            validate_report(raw_report(incident_id=bad), now=NOW)
        assert [v.field for v in refused.value.violations] == ["incident_id"]
