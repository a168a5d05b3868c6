"""Intake's protobuf translation: what the store keeps reads back as the same report."""

from __future__ import annotations

import pytest
from intake_builders import NOW, report
from recovery.events.v1 import common_pb2
from recovery.intake.v1 import intake_pb2

from services.common.money import Money
from services.intake.adapters import wire
from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.model import (
    Area,
    Avoidability,
    Channel,
    CostItem,
    CostKind,
    CustomerRequest,
    Impact,
    RemedyKind,
    RiskTag,
    Source,
)
from services.intake.domain.validation import accepted, validate_report


def test_a_full_report_round_trips_through_its_message():
    full = report(
        source=Source.SURVEY,
        reported_costs=(CostItem(CostKind.TOWING, Money(15000, "EUR"), "tow to the garage", True, "TOW-778/25"),),
        stated_impacts=frozenset({Impact.TIME_LOST, Impact.SAFETY}),
        impact_details="stuck on the motorway at night",
        customer_request=CustomerRequest(RemedyKind.REFUND, Money(20000, "EUR"), "refund the repair"),
        avoidability=Avoidability.AVOIDABLE,
        area=Area("workshop", "r1", "team-a", "e-5", "VNO"),
        risk_tags=frozenset({RiskTag.HIGH_TURNOVER}),
        order_value=Money(0, "EUR"),  # zero is a real amount: it must not come back as "none"
        customer_value=Money(120000, "EUR"),
        survey_score=0,  # likewise a real score
        customer_timezone="Europe/Vilnius",
        preferred_channel=Channel.SMS,
    )
    assert accepted(wire.command_from_event(wire.report_to_proto(full))) == full


def test_unspecified_values_decode_as_missing_and_are_refused_by_validation():
    message = wire.report_to_proto(report())
    message.ClearField("category")
    message.ClearField("occurred_at")
    command = wire.command_from_event(message)
    assert command.category is None and command.occurred_at is None
    with pytest.raises(InvalidFailureReport) as refused:
        validate_report(command, now=NOW)
    assert {v.field for v in refused.value.violations} == {"category", "occurred_at"}


def test_a_frontline_request_carries_each_cost_s_receipt_reference():
    request = intake_pb2.ReportFailureRequest(
        request_id="req-1",
        customer_id="cust-1",
        reported_costs=[
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_TAXI,
                amount=common_pb2.Money(amount_minor=4200, currency="EUR"),
                has_receipt=True,
                receipt_reference="TAXI-0042",
            ),
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_MEAL, amount=common_pb2.Money(amount_minor=900, currency="EUR")
            ),
        ],
    )
    command = wire.command_from_request(request, reporter="e-1")
    assert [c.receipt_reference for c in command.reported_costs] == ["TAXI-0042", ""]
