"""Intake's protobuf translation: what the store keeps reads back as the same report."""

from __future__ import annotations

import pytest
from intake_builders import NOW, report
from recovery.events.v1 import common_pb2, events_pb2
from recovery.intake.v1 import intake_pb2

from services.common.money import Money
from services.common.wire import time_to_proto
from services.intake.adapters import wire
from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.model import (
    Area,
    AuthorizationPart,
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


def authorized(**fields) -> events_pb2.OfferAuthorized:
    base = {
        "customer_id": "cust-1",
        "case_id": "case-1",
        "offer_id": "offer-1",
        "offer_version": 2,
        "amount": common_pb2.Money(amount_minor=5000, currency="EUR"),
        "authorized_at": time_to_proto(NOW),
    }
    return events_pb2.OfferAuthorized(**(base | fields))


def test_an_authorisation_is_recorded_under_its_own_id_with_its_part():
    command = wire.compensation_from_event(
        authorized(authorization_id="auth-7", part=common_pb2.AUTHORIZATION_PART_REMAINDER), at=NOW
    )
    assert (command.authorization_id, command.part, command.offer_id) == (
        "auth-7",
        AuthorizationPart.REMAINDER,
        "offer-1",
    )
    assert command.amount == Money(5000, "EUR") and command.authorized_at == NOW


def test_an_authorisation_from_a_producer_before_the_split_is_the_whole_offer_under_its_offer_id():
    command = wire.compensation_from_event(authorized(), at=NOW)
    assert (command.authorization_id, command.part) == ("offer-1", AuthorizationPart.WHOLE)
