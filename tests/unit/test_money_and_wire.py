"""The shared money type and the generic protobuf translation."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from recovery.events.v1 import common_pb2, events_pb2

from services.common.db import is_transient
from services.common.errors import InvalidInput
from services.common.money import KNOWN_CURRENCIES, MINOR_DIGITS, Money, scale, totals
from services.common.wire import (
    duration_from_proto,
    duration_to_proto,
    enum_from_proto,
    enum_to_proto,
    enums_from_proto,
    money_from_proto,
    money_to_proto,
    nul_fields,
    time_from_proto,
    time_to_proto,
)


class Severity(enum.Enum):
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"  # MODERATE deliberately missing: a domain may know fewer values than the wire


@pytest.mark.parametrize(
    ("amount", "bps", "expected"),
    [(1000, 15000, 1500), (1, 5000, 1), (1, 4999, 0), (3, 3333, 1), (-1, 5000, -1), (0, 99999, 0), (999, 0, 0)],
)
def test_scale_rounds_half_up_in_integers(amount, bps, expected):
    assert scale(amount, bps) == expected


@given(st.integers(-(10**15), 10**15), st.integers(0, 10**6))
def test_scale_is_within_half_a_minor_unit_of_the_exact_product(amount, bps):
    exact_times_2 = 2 * amount * bps  # compared in integers, never floats
    assert abs(2 * 10_000 * scale(amount, bps) - exact_times_2) <= 10_000


def test_money_adds_only_within_one_currency():
    assert Money(100, "EUR") + Money(50, "EUR") == Money(150, "EUR")
    assert Money(100, "EUR") - Money(150, "EUR") == Money(-50, "EUR")
    with pytest.raises(ValueError, match="cannot combine EUR with PLN"):
        _ = Money(1, "EUR") + Money(1, "PLN")
    assert totals([Money(1, "EUR"), Money(2, "PLN"), Money(3, "EUR")]) == {"EUR": 4, "PLN": 2}


def test_known_currencies_have_their_iso_minor_digits():
    assert KNOWN_CURRENCIES == set(MINOR_DIGITS)
    assert (MINOR_DIGITS["EUR"], MINOR_DIGITS["JPY"], MINOR_DIGITS["ISK"]) == (2, 0, 0)


def test_enums_map_by_name_and_unknown_or_unspecified_values_are_none():
    assert enum_from_proto(common_pb2.Severity, common_pb2.SEVERITY_MAJOR, Severity) is Severity.MAJOR
    assert enum_from_proto(common_pb2.Severity, common_pb2.SEVERITY_UNSPECIFIED, Severity) is None
    assert enum_from_proto(common_pb2.Severity, common_pb2.SEVERITY_MODERATE, Severity) is None
    assert enum_from_proto(common_pb2.Severity, 97, Severity) is None  # a newer publisher's value
    assert enum_to_proto(common_pb2.Severity, Severity.CRITICAL) == common_pb2.SEVERITY_CRITICAL
    assert enum_to_proto(common_pb2.Severity, None) == common_pb2.SEVERITY_UNSPECIFIED
    numbers = [common_pb2.SEVERITY_MINOR, 0, 97, common_pb2.SEVERITY_MAJOR]
    assert enums_from_proto(common_pb2.Severity, numbers, Severity) == (Severity.MINOR, Severity.MAJOR)


def test_unset_money_and_times_are_none_and_set_ones_round_trip():
    message = events_pb2.CaseOpened()
    assert money_from_proto(message, "order_value") is None
    assert time_from_proto(message, "opened_at") is None
    message.order_value.CopyFrom(money_to_proto(Money(0, "EUR")))  # zero is a real amount, not "unset"
    assert money_from_proto(message, "order_value") == Money(0, "EUR")
    at = datetime(2025, 3, 30, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    message.opened_at.CopyFrom(time_to_proto(at))
    assert time_from_proto(message, "opened_at") == at and time_from_proto(message, "opened_at").tzinfo == UTC
    with pytest.raises(ValueError, match="naive"):
        time_to_proto(datetime(2025, 1, 1))
    summary = common_pb2.HistorySummary(failure_lookback=duration_to_proto(timedelta(days=365)))
    assert duration_from_proto(summary, "failure_lookback") == timedelta(days=365)
    assert duration_from_proto(summary, "case_lookback") is None


def test_a_timestamp_outside_the_protobuf_range_is_invalid_input_naming_its_field():
    for seconds, nanos in ((-62_135_596_801, 0), (253_402_300_800, 0), (0, -1), (0, 1_000_000_000)):
        message = events_pb2.FailureReported(occurred_at={"seconds": seconds, "nanos": nanos})
        with pytest.raises(InvalidInput) as refused:
            time_from_proto(message, "occurred_at")
        assert [v.field for v in refused.value.violations] == ["occurred_at"]
    edge = events_pb2.FailureReported(occurred_at={"seconds": -62_135_596_800})
    assert time_from_proto(edge, "occurred_at") == datetime(1, 1, 1, tzinfo=UTC)


def test_nul_fields_finds_nul_characters_at_any_depth():
    message = events_pb2.CaseOpened(
        customer_id="ok",
        description="bad\x00",
        area=common_pb2.Area(team="t\x00"),
        reported_costs=[common_pb2.CostItem(description="fine"), common_pb2.CostItem(description="\x00")],
    )
    assert sorted(nul_fields(message)) == ["area.team", "description", "reported_costs[1].description"]
    assert nul_fields(events_pb2.CaseOpened(customer_id="clean")) == []


def test_an_argument_asyncpg_cannot_encode_is_not_a_transient_outage():
    assert not is_transient(asyncpg.exceptions.DataError("value out of int64 range"))
    assert is_transient(ConnectionResetError())
