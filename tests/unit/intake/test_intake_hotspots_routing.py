"""Hot-spot counting, routing of queued cases and combining a merged case's failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from intake_builders import NOW, policy, report

from services.common.money import Money
from services.intake.domain.hotspots import Occurrence, WindowKey, dimension_values, tally, window_start
from services.intake.domain.model import (
    Area,
    Avoidability,
    Category,
    CostItem,
    CostKind,
    CustomerRequest,
    HotspotDimension,
    Impact,
    RiskTag,
)
from services.intake.domain.policy import HotspotWindow
from services.intake.domain.rules import combine, owning_team

POLICY = policy()


def occurrence(at=NOW, category=Category.LATE_DELIVERY, **area) -> Occurrence:
    return Occurrence(occurred_at=at, category=category, area=Area(**area))


def test_a_failure_counts_in_every_dimension_it_has_a_value_for():
    pairs = dimension_values(occurrence(component="checkout", team="t1"))
    assert pairs == (
        (HotspotDimension.CATEGORY, "late_delivery"),
        (HotspotDimension.COMPONENT, "checkout"),
        (HotspotDimension.TEAM, "t1"),
        (HotspotDimension.HOUR_OF_DAY, "12"),
    )


def test_a_failure_of_an_incident_counts_for_the_incident_too():
    incident = Occurrence(occurred_at=NOW, category=Category.CANCELLATION, area=Area(), incident_id="flight-LO281")
    assert (HotspotDimension.INCIDENT, "flight-LO281") in dimension_values(incident)
    counted = tally([incident, incident], POLICY)
    assert counted[WindowKey("incident", "flight-LO281", window_start(NOW, timedelta(hours=1)))] == 2


def test_hour_of_day_is_the_customers_local_hour_and_the_utc_hour_when_their_zone_is_unknown():
    at = datetime(2025, 6, 1, 23, 30, tzinfo=UTC) + timedelta(hours=2)  # 01:30 UTC next day
    assert (HotspotDimension.HOUR_OF_DAY, "1") in dimension_values(occurrence(at=at))
    hours = {
        zone: dict(dimension_values(Occurrence(at, Category.LATE_DELIVERY, Area(), timezone=zone)))[
            HotspotDimension.HOUR_OF_DAY
        ]
        for zone in ("Europe/Vilnius", "Europe/Warsaw", "America/New_York", "Mars/Base", "")
    }
    assert hours == {"Europe/Vilnius": "4", "Europe/Warsaw": "3", "America/New_York": "21", "Mars/Base": "1", "": "1"}


def test_a_failure_counts_at_its_location_and_in_each_of_its_risk_tags():
    tagged = Occurrence(
        NOW, Category.SERVICE_QUALITY, Area(location="WAW-T1"), risk_tags=("high_turnover", "new_product")
    )
    pairs = dimension_values(tagged)
    assert (HotspotDimension.LOCATION, "WAW-T1") in pairs
    assert [v for d, v in pairs if d is HotspotDimension.RISK_TAG] == ["high_turnover", "new_product"]
    counted = tally([tagged] * 3, POLICY)
    start = window_start(NOW, timedelta(hours=1))
    assert counted[WindowKey("risk_tag", "new_product", start)] == 3
    assert counted[WindowKey("location", "WAW-T1", start)] == 3


@pytest.mark.parametrize(
    ("at", "size", "start"),
    [
        (datetime(2025, 6, 1, 12, 59, 59, tzinfo=UTC), timedelta(hours=1), datetime(2025, 6, 1, 12, tzinfo=UTC)),
        (datetime(2025, 6, 1, 13, 0, tzinfo=UTC), timedelta(hours=1), datetime(2025, 6, 1, 13, tzinfo=UTC)),
        (datetime(2025, 6, 1, 12, 14, tzinfo=UTC), timedelta(minutes=10), datetime(2025, 6, 1, 12, 10, tzinfo=UTC)),
        (datetime(2025, 6, 1, 23, 0, tzinfo=UTC), timedelta(days=1), datetime(2025, 6, 1, tzinfo=UTC)),
    ],
)
def test_windows_are_aligned_to_the_epoch(at, size, start):
    assert window_start(at, size) == start


def test_tally_counts_per_dimension_value_and_window():
    p = policy(hotspot_windows={d: HotspotWindow(timedelta(hours=1), 24) for d in HotspotDimension})
    counts = tally(
        [
            occurrence(component="checkout"),
            occurrence(at=NOW + timedelta(minutes=30), component="checkout"),
            occurrence(at=NOW + timedelta(hours=1), component="checkout"),
        ],
        p,
    )
    hour = datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert counts[WindowKey("component", "checkout", hour)] == 2
    assert counts[WindowKey("component", "checkout", hour + timedelta(hours=1))] == 1
    assert counts[WindowKey("category", "late_delivery", hour)] == 2


def test_frontline_cases_belong_to_the_reporters_team_and_queued_ones_to_the_category_route():
    assert owning_team(report(), reporter_team="front-1", policy=POLICY) == "front-1"
    assert owning_team(report(category=Category.BILLING_ERROR), reporter_team="", policy=POLICY) == "billing-care"
    assert owning_team(report(category=Category.NO_SHOW), reporter_team="", policy=POLICY) == "care"


def eur(amount: int) -> Money:
    return Money(amount, "EUR")


def test_combining_keeps_the_first_identity_adds_costs_and_takes_the_latest_request():
    first = report(
        reported_costs=(CostItem(CostKind.TAXI, eur(3000)),),
        stated_impacts=frozenset({Impact.TIME_LOST}),
        avoidability=Avoidability.UNAVOIDABLE,
        reported_by_employee_id="e-1",
        risk_tags=frozenset({RiskTag.NEW_PRODUCT}),
    )
    second = report(
        source_event_id="evt-2",
        category=Category.DAMAGED_ITEM,
        occurred_at=NOW + timedelta(hours=3),
        reported_costs=(CostItem(CostKind.HOTEL, eur(9000)),),
        stated_impacts=frozenset({Impact.FINANCIAL_LOSS}),
        avoidability=Avoidability.AVOIDABLE,
        customer_request=CustomerRequest(amount=eur(5000), text="refund please"),
        customer_timezone="Europe/Rome",
    )
    merged = combine([first, second])
    assert merged.category is Category.LATE_DELIVERY and merged.occurred_at == NOW
    assert [c.amount.amount_minor for c in merged.reported_costs] == [3000, 9000]
    assert merged.stated_impacts == {Impact.TIME_LOST, Impact.FINANCIAL_LOSS}
    assert merged.avoidability is Avoidability.AVOIDABLE  # one avoidable failure makes the case avoidable
    assert merged.customer_request == CustomerRequest(amount=eur(5000), text="refund please")
    assert merged.customer_timezone == "Europe/Rome"
    assert merged.reported_by_employee_id == "e-1"
    assert merged.risk_tags == {RiskTag.NEW_PRODUCT}


def test_combining_unknown_avoidability_stays_unknown():
    assert combine([report(), report(source_event_id="evt-2")]).avoidability is None
    mixed = combine([report(), report(source_event_id="evt-2", avoidability=Avoidability.UNAVOIDABLE)])
    assert mixed.avoidability is Avoidability.UNAVOIDABLE
