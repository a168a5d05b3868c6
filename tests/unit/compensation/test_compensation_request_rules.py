"""Table tests for the customer's request: granted plus a small extra, or the closest allowed alternative."""

from __future__ import annotations

import pytest

from services.compensation.domain.model import Category, CustomerRequest, Money, RemedyKind, RequestOutcome
from tests.unit.compensation.compensation_builders import facts, goodwill, offer, request, words

V, R, AC, FU, G = (
    RemedyKind.VOUCHER,
    RemedyKind.REFUND,
    RemedyKind.ACCOUNT_CREDIT,
    RemedyKind.FREE_UPGRADE,
    RemedyKind.GIFT,
)


def money_lines(o):
    return [(line.kind, line.amount.amount_minor, line.rule_id) for line in o.line_items if line.amount.amount_minor]


# Moderate late delivery, 100 EUR order: gesture 1500, room 5000; extra = max(10% of the grant, 5 EUR).
@pytest.mark.parametrize(
    ("ask", "category", "outcome", "lines"),
    [
        (None, Category.LATE_DELIVERY, None, [(V, 1500, "goodwill.base.moderate")]),
        (
            request(text="something for my wasted day"),
            Category.LATE_DELIVERY,
            None,
            [(V, 1500, "goodwill.base.moderate")],
        ),
        (
            request(R, 2000),
            Category.LATE_DELIVERY,
            RequestOutcome.GRANTED,
            [(R, 2000, "request.granted"), (V, 500, "request.extra")],
        ),
        (
            request(R, 4000),
            Category.LATE_DELIVERY,
            RequestOutcome.GRANTED,
            [(R, 4000, "request.granted"), (V, 500, "request.extra")],
        ),
        (
            request(R, 4800),
            Category.LATE_DELIVERY,
            RequestOutcome.GRANTED,
            [(R, 4800, "request.granted"), (V, 200, "request.extra")],  # the extra fits in the room left
        ),
        (
            request(R, 500),
            Category.LATE_DELIVERY,
            RequestOutcome.GRANTED,
            [(R, 500, "request.granted"), (V, 1000, "request.extra")],  # topped up to the gesture
        ),
        (request(R, 8000), Category.LATE_DELIVERY, RequestOutcome.ALTERNATIVE_OFFERED, [(R, 5000, "request.capped")]),
        (
            request(AC),
            Category.LATE_DELIVERY,
            RequestOutcome.GRANTED,
            [(AC, 1500, "request.granted"), (V, 500, "request.extra")],
        ),
        (
            request(None, 2000),
            Category.LATE_DELIVERY,
            RequestOutcome.GRANTED,
            [(V, 2000, "request.granted"), (V, 500, "request.extra")],
        ),
        (
            request(FU, 3000),
            Category.LATE_DELIVERY,
            RequestOutcome.ALTERNATIVE_OFFERED,
            [(V, 3000, "request.alternative")],
        ),
        (request(FU), Category.LATE_DELIVERY, RequestOutcome.ALTERNATIVE_OFFERED, [(V, 1500, "request.alternative")]),
        (
            request(G, 900),
            Category.BILLING_ERROR,
            RequestOutcome.ALTERNATIVE_OFFERED,
            [(AC, 1500, "request.alternative")],
        ),
        (
            request(RemedyKind.APOLOGY_NOTE),
            Category.LATE_DELIVERY,
            RequestOutcome.GRANTED,
            [(V, 1500, "goodwill.base.moderate")],
        ),
        (
            request(RemedyKind.REIMBURSEMENT, 3000),
            Category.LATE_DELIVERY,
            RequestOutcome.ALTERNATIVE_OFFERED,
            [(V, 3000, "request.alternative")],
        ),
    ],
)
def test_the_customers_request_shapes_the_goodwill(ask, category, outcome, lines):
    # Billing errors prefer account credit (their first kind), so the gesture there is 1500 of it.
    o = offer(facts(customer_request=ask, category=category))
    assert o.request_outcome is outcome
    assert money_lines(o) == lines


def test_an_amount_in_another_currency_is_not_read_as_an_amount():
    ask = CustomerRequest(remedy_kind=None, amount=Money(2000, "GBP"), text="20 pounds")
    o = offer(facts(customer_request=ask))
    assert o.request_outcome is None and goodwill(o) == 1500


def test_a_refused_request_says_why_to_staff_and_to_the_customer():
    o = offer(facts(customer_request=request(FU, 3000)))
    line = o.line_items[0]
    assert "free_upgrade is not offered for late_delivery; closest allowed is voucher" in line.internal_reason
    assert words(line) == "We cannot offer this in your case: a free upgrade. We offer this instead: a voucher."
