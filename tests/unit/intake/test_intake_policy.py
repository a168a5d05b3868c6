from datetime import timedelta
from pathlib import Path

import pytest
from intake_builders import POLICY_TEXT

from services.common.errors import InvalidInput
from services.intake.domain.errors import PolicyError
from services.intake.domain.model import Category, HotspotDimension, Impact, Severity
from services.intake.domain.policy import HotspotWindow, load_policy

SHIPPED = Path(__file__).resolve().parents[3] / "services" / "intake" / "policy.toml"


def test_shipped_policy_loads():
    policy = load_policy(SHIPPED.read_text())
    assert policy.version
    assert set(policy.base_severity) == set(Category)
    assert policy.impact_severity[Impact.SAFETY] is Severity.CRITICAL
    assert policy.merge_window == timedelta(hours=48)
    assert policy.repeat_window == timedelta(days=365)


def test_valid_policy_loads_with_every_value():
    policy = load_policy(POLICY_TEXT)
    assert policy.version == "test.1"
    assert policy.base_severity[Category.NO_SHOW] is Severity.MAJOR
    assert policy.money_thresholds["EUR"].major == 50000
    assert (policy.hotspot_factor_bps, policy.hotspot_min_count) == (30000, 5)


def test_optional_sections_take_defaults():
    text = POLICY_TEXT.split("[severity.impact]")[0] + '[routing]\ndefault_team = "care"\n'
    policy = load_policy(text)
    assert policy.merge_window == timedelta(hours=48)
    assert policy.repeat_window == timedelta(days=365)
    assert policy.case_lookback == timedelta(days=90)
    assert policy.hotspot_factor_bps == 30000
    assert dict(policy.impact_severity) == {}
    assert dict(policy.team_by_category) == {}
    assert policy.hotspot_window(HotspotDimension.COMPONENT) == HotspotWindow(timedelta(hours=1), 24)
    # Hour of day is compared with the same hour on the days before, by default.
    assert policy.hotspot_window(HotspotDimension.HOUR_OF_DAY) == HotspotWindow(timedelta(days=1), 7)


def test_routing_is_required_so_system_detected_cases_land_in_a_real_queue():
    text = POLICY_TEXT.split("[severity.impact]")[0]
    assert "routing" in refused(text)


def test_hotspot_windows_are_set_for_all_and_overridden_per_dimension():
    text = POLICY_TEXT.replace(
        "min_count = 5",
        "min_count = 5\nwindow_minutes = 10\nbaseline_windows = 6\n[hotspot.dimension.team]\nwindow_minutes = 30",
    )
    policy = load_policy(text)
    assert policy.hotspot_window(HotspotDimension.CATEGORY) == HotspotWindow(timedelta(minutes=10), 6)
    assert policy.hotspot_window(HotspotDimension.HOUR_OF_DAY) == HotspotWindow(timedelta(minutes=10), 6)
    assert policy.hotspot_window(HotspotDimension.TEAM) == HotspotWindow(timedelta(minutes=30), 6)


@pytest.mark.parametrize(
    ("addition", "key"),
    [
        ("[hotspot.dimension.planet]\nwindow_minutes = 5", "hotspot.dimension.planet"),
        ("[hotspot.dimension.team]\nwindow_minutes = 0", "hotspot.dimension.team.window_minutes"),
        ("[hotspot.dimension.team]\nwindows = 3", "hotspot.dimension.team.windows"),
    ],
)
def test_bad_window_keys_are_named(addition, key):
    assert key in refused(POLICY_TEXT + "\n" + addition + "\n")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('billing_error = ""', "routing.category.billing_error"),
        ('spaceship = "x"', "routing.category.spaceship"),
        ("billing_error = 3", "routing.category.billing_error"),
    ],
)
def test_bad_routes_are_named(line, key):
    assert key in refused(POLICY_TEXT.replace('billing_error = "billing-care"', line))


def refused(text):
    with pytest.raises(PolicyError) as caught:
        load_policy(text)
    return {v.field: v.description for v in caught.value.violations}


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('version = "test.1"', "", "version"),
        ('version = "test.1"', "version = 3", "version"),
        ('version = "test.1"', 'version = ""', "version"),
        ('late_delivery = "minor"\n', "", "severity.base.late_delivery"),
        ('late_delivery = "minor"', 'late_delivery = "huge"', "severity.base.late_delivery"),
        ('late_delivery = "minor"', 'late_delivery = "minor"\nlost_luggage = "minor"', "severity.base.lost_luggage"),
        ('safety = "critical"', 'safety = "critical"\nboredom = "minor"', "severity.impact.boredom"),
        ("moderate = 10000", "moderate = -1", "severity.money.thresholds.EUR.moderate"),
        ("moderate = 10000", "moderate = 100.5", "severity.money.thresholds.EUR.moderate"),
        ("moderate = 10000", 'moderate = "100"', "severity.money.thresholds.EUR.moderate"),
        ("moderate = 10000\n", "", "severity.money.thresholds.EUR.moderate"),
        ("moderate = 10000", "moderate = 60000", "severity.money.thresholds.EUR"),
        ("[severity.money.thresholds.EUR]", "[severity.money.thresholds.XYZ]", "severity.money.thresholds.XYZ"),
        ("include_order_value = true", "include_order_value = 1", "severity.money.include_order_value"),
        ("repeat_window_days = 365", "repeat_window_days = 0", "outlook.repeat_window_days"),
        ("repeat_window_days = 365", "repeat_window_days = true", "outlook.repeat_window_days"),
        ("window_hours = 48", "window_hours = -1", "merge.window_hours"),
        ("window_hours = 48", "window_hour = 48", "merge.window_hour"),
        ("factor_bps = 30000", "factor_bps = 5000", "hotspot.factor_bps"),
        ("min_count = 5", "min_count = 0", "hotspot.min_count"),
    ],
)
def test_bad_policy_is_refused_naming_the_key(old, new, key):
    assert old in POLICY_TEXT
    found = refused(POLICY_TEXT.replace(old, new, 1))
    assert key in found
    with pytest.raises(PolicyError, match=key.replace(".", r"\.")):
        load_policy(POLICY_TEXT.replace(old, new, 1))


def test_missing_severity_section_is_refused():
    assert "severity" in refused('version = "x"\n')


def test_unknown_top_level_key_is_refused():
    assert "colour" in refused('colour = "blue"\n' + POLICY_TEXT)


def test_not_toml_is_refused():
    assert "<file>" in refused("version = ")


def test_every_problem_is_reported_at_once():
    text = POLICY_TEXT.replace('version = "test.1"', "").replace("window_hours = 48", "window_hours = -1")
    assert {"version", "merge.window_hours"} <= set(refused(text))


def test_policy_error_is_invalid_input():
    assert issubclass(PolicyError, InvalidInput)
