"""Protobuf <-> domain for compensation: facts and offers round-trip; what-if facts are validated."""

from __future__ import annotations

from dataclasses import replace

import pytest
from recovery.compensation.v1 import compensation_pb2
from recovery.events.v1 import common_pb2

from services.compensation.adapters import wire
from services.compensation.domain.errors import InvalidCaseFacts
from services.compensation.domain.model import Avoidability, CostKind, RemedyKind, RequoteReason
from tests.unit.compensation.compensation_builders import NOW, cost, facts, hours, offer, request


def test_facts_round_trip_through_the_wire():
    f = facts(
        failure_at=NOW - hours(30),
        avoidability=Avoidability.AVOIDABLE,
        reported_costs=(cost(CostKind.TAXI, 4000, receipt=True),),
        customer_request=request(RemedyKind.REFUND, 2000, text="my money back"),
        prior_failure_count=2,
        sla_breaches=1,
        reopen_count=1,
    )
    back = wire.facts_from_proto(wire.facts_to_proto(f, at=NOW), at=NOW, case_id=f.case_id)
    assert back == f


def test_an_offer_round_trips_and_becomes_its_event():
    o = replace(
        offer(facts(customer_request=request(RemedyKind.REFUND, 2000), reported_costs=(cost(CostKind.MEAL, 900),))),
        offer_id="offer-2",
        version=2,
        supersedes_offer_id="offer-1",
        requote_reason=RequoteReason.SLA_BREACHED,
        requote_detail="resolve SLA breached",
    )
    assert wire.offer_from_proto(wire.offer_to_proto(o)) == o
    event = wire.offer_to_event(o)
    assert (event.offer_id, event.version, event.supersedes_offer_id) == ("offer-2", 2, "offer-1")
    assert event.requote_reason == common_pb2.REQUOTE_REASON_SLA_BREACHED
    assert event.request_outcome == common_pb2.REQUEST_OUTCOME_GRANTED
    assert event.total.amount_minor == sum(li.amount.amount_minor for li in event.line_items)
    assert event.line_items[0].cost_kind == common_pb2.COST_KIND_MEAL


def test_what_if_facts_are_refused_with_every_bad_field():
    bad = compensation_pb2.CaseFacts(
        reported_costs=[common_pb2.CostItem(amount=common_pb2.Money(amount_minor=-1, currency="EUX"))],
        order_value=common_pb2.Money(amount_minor=5, currency="ZZZ"),
    )
    with pytest.raises(InvalidCaseFacts) as error:
        wire.check_facts(bad)
    fields = {v.field for v in error.value.violations}
    assert fields == {
        "facts.customer_id",
        "facts.category",
        "facts.severity",
        "facts.reported_costs[0].amount.currency",
        "facts.reported_costs[0].amount.amount_minor",
        "facts.order_value.currency",
    }
