"""The frontline's own remedy, checked before compensation re-quotes (pure): every bad field named at once, a
gesture above any authority refused, a swap only before anything was authorised."""

from __future__ import annotations

import pytest

from services.common.vocabulary import CostItem, PersonalGesture, ReceiptReceived, RemedySwap
from services.escalation.domain import adjustments
from services.escalation.domain.authority import most_per_case
from services.escalation.domain.errors import IllegalTransition, InvalidCommand, LimitExceeded
from services.escalation.domain.model import CaseState, CostKind, Money, OfferAdjustment, RemedyKind
from tests.unit.escalation.escalation_builders import case, eur
from tests.unit.escalation.escalation_builders import policy as escalation_policy

S = CaseState
MOST = eur(100_000)  # the top tier's per-case limit


def check(adjustment: OfferAdjustment, *, state=S.OFFER_READY, reason="the customer asked", authorized=False, due=()):
    adjustments.check(
        case(state),
        adjustment,
        reason=reason,
        currency="EUR",
        authorized=authorized,
        receipts_due=frozenset(due),
        most_per_case=MOST,
    )


def gesture(amount: int = 1_500, *, reason: str = "a spoilt birthday", description: str = "flowers", currency="EUR"):
    return PersonalGesture(description=description, amount=Money(amount, currency), reason=reason)


def fields(error: InvalidCommand) -> dict[str, str]:
    return {v.field: v.description for v in error.violations}


def test_a_gesture_a_swap_a_late_cost_and_a_receipt_within_the_rules_pass():
    check(
        OfferAdjustment(
            swaps=(RemedySwap(RemedyKind.VOUCHER, RemedyKind.REFUND),),
            gestures=(gesture(),),
            late_costs=(CostItem(CostKind.TAXI, eur(2_000)),),
            receipts=(ReceiptReceived(CostKind.HOTEL, "R-1"),),
        ),
        state=S.OFFER_PENDING,
        due={CostKind.HOTEL},
    )


def test_every_bad_field_is_named_at_once():
    with pytest.raises(InvalidCommand) as caught:
        check(
            OfferAdjustment(
                swaps=(RemedySwap(RemedyKind.STATUTORY_COMPENSATION, RemedyKind.VOUCHER),),
                gestures=(gesture(0, reason=" ", description=""), gesture(currency="PLN")),
                late_costs=(CostItem(None, eur(-5)),),
                receipts=(ReceiptReceived(CostKind.MEAL),),
            ),
            reason="",
            state=S.OFFER_PENDING,
        )
    assert fields(caught.value) == {
        "reason": "required: why the offer is adjusted (the audit trail says it)",
        "adjustment.swaps[0].from_kind": "statutory_compensation: not a goodwill kind",
        "adjustment.gestures[0].description": "required: what the customer gets",
        "adjustment.gestures[0].reason": "required: a gesture needs a reason",
        "adjustment.gestures[0].amount.amount_minor": "0: must be more than zero",
        "adjustment.gestures[1].amount.currency": "PLN: the offer is in EUR",
        "adjustment.late_costs[0].kind": "required: which cost",
        "adjustment.late_costs[0].amount.amount_minor": "-5: must be more than zero",
        "adjustment.receipts[0].cost_kind": "meal: no repayment of it waits for a receipt",
    }


def test_nothing_to_change_is_refused():
    with pytest.raises(InvalidCommand) as caught:
        check(OfferAdjustment())
    assert set(fields(caught.value)) == {"adjustment"}


def test_a_gesture_above_what_any_authority_may_grant_is_refused():
    with pytest.raises(LimitExceeded, match="above what any authority may grant per case"):
        check(OfferAdjustment(gestures=(gesture(100_001),)))


def test_a_swap_after_an_authorisation_would_pay_twice_and_is_refused():
    with pytest.raises(IllegalTransition, match="a swap would pay both kinds"):
        check(OfferAdjustment(swaps=(RemedySwap(RemedyKind.VOUCHER, RemedyKind.REFUND),)), authorized=True)
    check(OfferAdjustment(gestures=(gesture(),)), authorized=True)  # a gesture adds: fine


@pytest.mark.parametrize("state", [S.AWAITING_APPROVAL, S.RESOLVED, S.OPEN, S.QUEUED])
def test_the_offer_is_adjusted_only_while_it_is_in_the_owners_hands(state):
    with pytest.raises(IllegalTransition, match="cannot be adjusted now"):
        check(OfferAdjustment(gestures=(gesture(),)), state=state)


def test_the_audit_says_what_changed():
    said = adjustments.describe(
        OfferAdjustment(
            swaps=(RemedySwap(RemedyKind.VOUCHER, RemedyKind.REFUND),),
            gestures=(gesture(),),
            receipts=(ReceiptReceived(CostKind.HOTEL),),
        )
    )
    assert said == "swap voucher -> refund; gesture 'flowers' 1500 EUR: a spoilt birthday; receipt for hotel received"


def test_the_most_any_authority_grants_per_case_is_the_top_tiers_in_the_offers_currency():
    policy = escalation_policy()
    top = policy.limits_for(employee_id="", role=policy.tiers[-1])
    assert most_per_case(policy, "EUR") == Money(top.per_case, "EUR")
    assert most_per_case(policy, "PLN").amount_minor > top.per_case  # about four zloty to the euro
    assert most_per_case(policy, "JPY") is None  # no rate: nobody authorises in it
