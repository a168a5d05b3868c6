"""The empowerment policy file: the shipped one loads; a bad one is refused with every bad key named."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.escalation.domain.errors import PolicyError
from services.escalation.domain.model import Outlook, Severity, SlaClock
from services.escalation.domain.policy import load_policy, parse_duration
from tests.unit.escalation.escalation_builders import POLICY_TEXT


def test_the_shipped_policy_loads():
    p = load_policy(POLICY_TEXT)
    assert p.tiers == ("agent", "senior_agent", "team_lead", "manager", "director")
    assert p.sla_budget(SlaClock.ACKNOWLEDGE, Severity.CRITICAL, Outlook.AT_RISK) == timedelta(minutes=30)
    assert p.sla_budget(SlaClock.RESOLVE, None, None) == timedelta(hours=24)  # unknown: moderate, recoverable
    assert p.calendar.timezone == "Europe/Vilnius"
    assert p.tier_above("agent") == "senior_agent"
    assert p.tier_above("director") is None


def test_every_bad_key_is_named_at_once():
    bad = (
        POLICY_TEXT.replace('currency = "EUR"', 'currency = "EUE"')
        .replace("per_case = 5000", "per_case = -1")
        .replace("voucher = 5000", "vouchr = 5000", 1)
        .replace('critical = "30m"', 'critical = "soon"', 1)
        .replace('mon = ["08:00-12:00", "13:00-18:00"]', 'mon = ["12:00-08:00", "13:00-18:00"]')
        .replace('timezone = "Europe/Vilnius"', 'timezone = "Mars/Olympus"')
        .replace("max_transfers = 2", "max_transfer = 2")
    )
    with pytest.raises(PolicyError) as refused:
        load_policy(bad)
    named = {v.field for v in refused.value.violations}
    assert {
        "currency",
        "roles.agent.per_case",
        "roles.agent.remedies.vouchr",
        "sla.acknowledge.at_risk.critical",
        "calendar.hours.mon[0]",
        "calendar.timezone",
        "max_transfer",
    } <= named


def test_missing_tables_are_required():
    with pytest.raises(PolicyError) as refused:
        load_policy('version = "1"\ncurrency = "EUR"\ntiers = ["agent"]\n')
    named = {v.field for v in refused.value.violations}
    assert {"roles", "roles.agent", "sla", "calendar"} <= named


def test_overlapping_periods_are_refused():
    bad = POLICY_TEXT.replace('tue = ["08:00-12:00", "13:00-18:00"]', 'tue = ["08:00-12:00", "11:00-18:00"]')
    with pytest.raises(PolicyError, match=r"calendar.hours.tue\[1\]"):
        load_policy(bad)


def test_not_toml_is_refused():
    with pytest.raises(PolicyError, match="TOML"):
        load_policy("version = ")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("4h", 14400), ("0h", None), ("4d", None)])
def test_durations(text, seconds):
    got = parse_duration(text)
    assert (got.total_seconds() if got else None) == seconds
