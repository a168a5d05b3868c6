"""The frontline's own remedy in the offer (pure): swaps within the category's kinds, personal gestures under the
policy's gesture cap, late costs and receipts through the usual repayment rules."""

from __future__ import annotations

from services.compensation.domain.model import (
    CostKind,
    OfferAdjustment,
    PersonalGesture,
    ReceiptReceived,
    RemedyKind,
    RemedySwap,
)
from services.compensation.domain.offer import adjusted
from tests.unit.compensation.compensation_builders import cost, eur, facts, granted, offer, words

VOUCHER, REFUND, GIFT = RemedyKind.VOUCHER, RemedyKind.REFUND, RemedyKind.GIFT


def flowers(amount: int = 1_500, reason: str = "her wedding day was spoilt") -> PersonalGesture:
    return PersonalGesture(description="a bouquet of flowers", amount=eur(amount), reason=reason, employee_id="e-1")


def kinds(o) -> list[tuple[RemedyKind, int]]:
    return [(line.kind, line.amount.amount_minor) for line in o.line_items]


def test_a_swap_offers_the_gesture_in_the_kind_the_customer_prefers():
    before = offer()
    swapped = offer(adjusted(facts(), OfferAdjustment(swaps=(RemedySwap(VOUCHER, REFUND),))))
    assert kinds(before)[0][0] is VOUCHER
    assert kinds(swapped)[0] == (REFUND, kinds(before)[0][1])  # the same amount, the kind they asked for
    assert swapped.total == before.total
    line = swapped.line_items[0]
    assert words(line) == "As you preferred, we give it to you as a refund."
    assert "swapped from voucher to refund at the frontline" in line.internal_reason


def test_a_swap_to_a_kind_the_category_does_not_offer_is_kept_and_staff_see_why():
    upgrade = offer(adjusted(facts(), OfferAdjustment(swaps=(RemedySwap(VOUCHER, RemedyKind.FREE_UPGRADE),))))
    assert kinds(upgrade)[0][0] is VOUCHER  # late deliveries are not put right with upgrades
    assert "not offered for late_delivery: kept" in upgrade.line_items[0].internal_reason


def test_a_later_swap_of_the_same_kind_replaces_the_earlier_one():
    first = adjusted(facts(), OfferAdjustment(swaps=(RemedySwap(VOUCHER, REFUND),)))
    second = adjusted(first, OfferAdjustment(swaps=(RemedySwap(VOUCHER, RemedyKind.ACCOUNT_CREDIT),)))
    assert second.swaps == (RemedySwap(VOUCHER, RemedyKind.ACCOUNT_CREDIT),)


def test_a_personal_gesture_is_a_line_of_its_own_with_the_employees_words_and_reason():
    o = offer(adjusted(facts(), OfferAdjustment(gestures=(flowers(),))))
    line = next(line for line in o.line_items if line.rule_id == "frontline.gesture")
    assert (line.kind, line.amount) == (GIFT, eur(1_500))
    assert words(line) == "And a small gesture from us, personally: a bouquet of flowers."
    assert words(line, "pl") == "I mały osobisty gest od nas: a bouquet of flowers."
    assert line.internal_reason == "personal gesture by e-1: her wedding day was spoilt"
    assert o.total.amount_minor == offer().total.amount_minor + 1_500


def test_gestures_together_stay_under_the_policys_gesture_cap():
    o = offer(adjusted(facts(), OfferAdjustment(gestures=(flowers(4_000), flowers(3_000)))))  # cap: 50 EUR
    gestures = [line for line in o.line_items if line.rule_id == "frontline.gesture"]
    assert [g.amount.amount_minor for g in gestures] == [4_000, 1_000]
    assert "cut to the gesture cap (2000 not given)" in gestures[1].internal_reason


def test_a_late_cost_is_repaid_like_any_reported_cost_and_a_receipt_clears_its_wait():
    late = adjusted(facts(), OfferAdjustment(late_costs=(cost(CostKind.TAXI, 4_000),)))
    waiting = next(line for line in offer(late).line_items if line.kind is RemedyKind.REIMBURSEMENT)
    assert (waiting.amount, waiting.needs_receipt) == (eur(4_000), True)  # above the 25 EUR receipt threshold
    shown = adjusted(late, OfferAdjustment(receipts=(ReceiptReceived(CostKind.TAXI, "R-77"),)))
    assert shown.reported_costs[0].has_receipt and shown.reported_costs[0].receipt_reference == "R-77"
    paid = next(line for line in offer(shown).line_items if line.kind is RemedyKind.REIMBURSEMENT)
    assert (paid.amount, paid.needs_receipt) == (eur(4_000), False)


def test_a_receipt_for_a_repayment_granted_before_clears_its_wait_though_nothing_new_is_offered():
    late = adjusted(facts(), OfferAdjustment(late_costs=(cost(CostKind.TAXI, 4_000),)))
    given = (granted(RemedyKind.REIMBURSEMENT, 4_000, CostKind.TAXI),)
    before = offer(late, given=given)
    assert [line.needs_receipt for line in before.granted_before] == [True]
    shown = adjusted(late, OfferAdjustment(receipts=(ReceiptReceived(CostKind.TAXI, "R-77"),)))
    after = offer(shown, given=given)
    assert not any(line.kind is RemedyKind.REIMBURSEMENT for line in after.line_items)  # paid once, not twice
    assert [line.needs_receipt for line in after.granted_before] == [False]
