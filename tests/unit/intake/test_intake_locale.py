"""The language a case speaks: the report's, else the market's (time zone, then currency), else the default."""

from __future__ import annotations

import pytest
from intake_builders import NOW, POLICY_TEXT, raw_report, report
from test_intake_acceptance import decide

from services.common.money import Money
from services.intake.domain.errors import InvalidFailureReport, PolicyError
from services.intake.domain.policy import load_policy
from services.intake.domain.rules import case_locale
from services.intake.domain.validation import validate_report

MARKETS = (
    POLICY_TEXT
    + """
[locale]
default = "en"
[locale.by_timezone]
"Europe/Warsaw" = "pl"
"Europe/Rome" = "it"
[locale.by_currency]
PLN = "pl"
"""
)


def test_the_report_names_the_language_else_the_market_does_else_the_default():
    policy = load_policy(MARKETS)
    assert case_locale(report(locale="lt", customer_timezone="Europe/Warsaw"), policy) == "lt"
    assert case_locale(report(customer_timezone="Europe/Rome", order_value=Money(100, "PLN")), policy) == "it"
    assert case_locale(report(customer_timezone="Asia/Tokyo", order_value=Money(100, "PLN")), policy) == "pl"
    assert case_locale(report(customer_value=Money(100, "PLN")), policy) == "pl"
    assert case_locale(report(order_value=Money(100, "EUR")), policy) == "en"


def test_a_region_is_accepted_and_dropped_and_any_other_language_is_refused_by_name():
    assert validate_report(raw_report(locale="pl-PL"), now=NOW).locale == "pl"
    assert validate_report(raw_report(locale=""), now=NOW).locale == ""
    with pytest.raises(InvalidFailureReport) as caught:
        validate_report(raw_report(locale="de-DE"), now=NOW)
    assert {v.field: v.description for v in caught.value.violations} == {
        "locale": "'de-DE' is not a supported locale: use one of en, it, lt, pl (a region may follow)"
    }


def test_a_later_failure_that_names_a_language_changes_the_cases():
    opened, amended = decide([report(), report(source_event_id="evt-2", locale="it")])[0]
    assert opened.event.locale == "en"
    assert amended.event.locale == "it"


def test_a_bad_market_table_is_refused_naming_each_key():
    bad = POLICY_TEXT + '\n[locale]\ndefault = "de"\n[locale.by_currency]\nXXX = "pl"\nPLN = "klingon"\n'
    with pytest.raises(PolicyError) as caught:
        load_policy(bad)
    fields = {v.field for v in caught.value.violations}
    assert fields == {"locale.default", "locale.by_currency.XXX", "locale.by_currency.PLN"}
