"""Protobuf <-> domain for compensation: facts and offers round-trip; what-if facts are validated."""

from __future__ import annotations

from dataclasses import replace

import pytest
from recovery.compensation.v1 import compensation_pb2
from recovery.events.v1 import common_pb2, events_pb2

from services.compensation.adapters import texts, wire
from services.compensation.domain.errors import InvalidCaseFacts
from services.compensation.domain.model import AuthorizationPart, Avoidability, CostKind, RemedyKind, RequoteReason
from tests.unit.compensation.compensation_builders import NOW, cost, facts, granted, hours, offer, request


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
    asked = request(RemedyKind.REFUND, 2000)
    computed = offer(facts(customer_request=asked, reported_costs=(cost(CostKind.MEAL, 900),)))
    o = replace(
        texts.localise(computed, "pl"),
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
    assert event.locale == "pl"
    meal = event.line_items[0].customer_text
    assert (meal.template_id, dict(meal.params), meal.locale) == (
        "offer.reimbursement",
        {"cost": "cost_kind.meal", "amount": "9.00 EUR"},
        "pl",
    )
    assert (
        meal.text
        == event.line_items[0].customer_explanation
        == ("Zwracamy koszt, który ponieśli Państwo przez nasz błąd: posiłki, 9,00\xa0€.")
    )
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


def _authorized(**fields) -> events_pb2.OfferAuthorized:
    base = {
        "customer_id": "cust-1",
        "case_id": "case-1",
        "offer_id": "offer-1",
        "amount": common_pb2.Money(amount_minor=5000, currency="EUR"),
        "line_items": [
            common_pb2.OfferLineItem(
                kind=common_pb2.REMEDY_KIND_REIMBURSEMENT,
                cost_kind=common_pb2.COST_KIND_TAXI,
                amount=common_pb2.Money(amount_minor=5000, currency="EUR"),
            )
        ],
        "team": "front-desk",
    }
    return events_pb2.OfferAuthorized(**(base | fields))


def test_an_authorisation_carries_its_id_and_part():
    command = wire.authorization_command(
        _authorized(authorization_id="auth-2", part=common_pb2.AUTHORIZATION_PART_REMAINDER), at=NOW
    )
    assert (command.authorization_id, command.offer_id, command.part) == (
        "auth-2",
        "offer-1",
        AuthorizationPart.REMAINDER,
    )
    assert command.line_items[0].cost_kind is CostKind.TAXI
    assert command.authorized_at == NOW  # unset on the wire: the event time


def test_an_authorisation_from_before_the_split_is_the_whole_offer_keyed_by_its_offer_id():
    command = wire.authorization_command(_authorized(), at=NOW)
    assert (command.authorization_id, command.part) == ("offer-1", AuthorizationPart.WHOLE)


def test_an_offer_proposed_says_what_was_granted_before():
    o = offer(facts(sla_breaches=1), given=(granted(RemedyKind.VOUCHER, 1500),))
    event = wire.offer_to_event(o)
    assert [(li.kind, li.amount.amount_minor, li.rule_id) for li in event.granted_before] == [
        (common_pb2.REMEDY_KIND_VOUCHER, 1500, "granted_before.voucher")
    ]
    assert event.granted_before_total == common_pb2.Money(amount_minor=1500, currency="EUR")
    assert event.total.amount_minor == 400


def test_a_first_offer_proposed_has_a_zero_granted_before_total():
    event = wire.offer_to_event(offer())
    assert list(event.granted_before) == []
    assert event.granted_before_total == common_pb2.Money(amount_minor=0, currency="EUR")


def test_receipt_references_survive_the_stored_facts():
    f = facts(reported_costs=(cost(CostKind.TAXI, 4000, ref="T-1"),))
    back = wire.facts_from_proto(wire.facts_to_proto(f, at=NOW), at=NOW, case_id=f.case_id)
    assert back.reported_costs[0].receipt_reference == "T-1"


def test_a_case_opened_and_amended_carry_the_reference():
    opened = events_pb2.CaseOpened(customer_id="cust-1", case_id="case-1", reference="ORD-7")
    amended = events_pb2.CaseAmended(customer_id="cust-1", case_id="case-1", reference="ORD-7", revision=2)
    assert wire.open_command(opened, at=NOW).facts.reference == "ORD-7"
    assert wire.amend_command(amended, at=NOW).facts.reference == "ORD-7"
