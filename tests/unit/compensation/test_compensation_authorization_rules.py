"""What the spend ledger accepts of an authorisation and what it records as granted."""

from __future__ import annotations

from dataclasses import replace

from services.compensation.domain import commands
from services.compensation.domain.model import CostKind, GrantedLine, LineItem, Money, RemedyKind
from services.compensation.domain.offer import granted_of, granted_within
from services.compensation.service_layer.handlers import authorization_violations, repeat_reference_cases
from tests.unit.compensation.compensation_builders import NOW


def line(kind: RemedyKind, amount: int, cost_kind: CostKind | None = None, currency: str = "EUR") -> LineItem:
    return LineItem(kind, Money(amount, currency), "rule", "why", "explanation", cost_kind=cost_kind)


def authorization(**changes) -> commands.RecordAuthorization:
    base = commands.RecordAuthorization(
        authorization_id="auth-1",
        offer_id="offer-1",
        case_id="case-1",
        customer_id="cust-1",
        team="front-desk",
        amount=Money(2000, "EUR"),
        line_items=(line(RemedyKind.VOUCHER, 1500), line(RemedyKind.REIMBURSEMENT, 500, CostKind.MEAL)),
        authorized_at=NOW,
    )
    return replace(base, **changes)


def test_an_authorisation_whose_lines_sum_to_its_amount_is_accepted():
    assert authorization_violations(authorization()) == []


def test_an_authorisation_is_refused_naming_each_bad_field_and_value():
    bad = authorization(
        offer_id="",
        amount=Money(-5, "EUR"),
        line_items=(line(RemedyKind.VOUCHER, 1500, currency="GBP"), line(RemedyKind.REFUND, -1)),
    )
    found = {v.field: v.description for v in authorization_violations(bad)}
    assert found == {
        "offer_id": "is required",
        "amount.amount_minor": "must not be negative, got -5",
        "line_items[0].amount.currency": "is 'GBP', not the amount's 'EUR'",
        "line_items[1].amount.amount_minor": "must not be negative, got -1",
        "line_items": "sum to 1499 EUR, not the amount -5 EUR",
    }


def test_lines_that_do_not_add_up_to_the_amount_are_refused():
    found = authorization_violations(authorization(amount=Money(2500, "EUR")))
    assert [(v.field, v.description) for v in found] == [("line_items", "sum to 2000 EUR, not the amount 2500 EUR")]


def test_what_an_authorisation_granted_leaves_out_the_apology():
    lines = (line(RemedyKind.VOUCHER, 1500), line(RemedyKind.APOLOGY_NOTE, 0))
    assert granted_of(lines) == (GrantedLine(RemedyKind.VOUCHER, Money(1500, "EUR")),)


def test_a_grant_recorded_without_lines_takes_the_offers_lines_in_order_up_to_its_amount():
    offered = (
        line(RemedyKind.REIMBURSEMENT, 4000, CostKind.TAXI),
        line(RemedyKind.VOUCHER, 1500),
        line(RemedyKind.APOLOGY_NOTE, 0),
    )
    assert granted_within(offered, Money(4500, "EUR")) == (
        GrantedLine(RemedyKind.REIMBURSEMENT, Money(4000, "EUR"), CostKind.TAXI),
        GrantedLine(RemedyKind.VOUCHER, Money(500, "EUR")),
    )
    assert sum(g.amount.amount_minor for g in granted_within(offered, Money(9999, "EUR"))) == 5500
    assert granted_within(offered, Money(0, "EUR")) == ()


def test_the_repeat_guard_looks_at_other_cases_only_in_a_stable_order():
    assert repeat_reference_cases("case-2", {"case-3", "case-2", "case-1"}) == ("case-1", "case-3")
    assert repeat_reference_cases("case-2", {"case-2"}) == ()
