"""Compensation over the real broker and Postgres: cases in, offers out, re-quotes, the spend ledger."""

from __future__ import annotations

from recovery.compensation.v1 import compensation_pb2
from recovery.events.v1 import common_pb2, events_pb2

from services.common.deadletter import DEADLETTER_TOPIC, REASON
from services.common.wire import time_to_proto
from tests.integration.compensation.conftest import (
    agent,
    case_opened,
    eur,
    metric,
    new_id,
    now,
    offer_records,
    offers_for,
    publish,
    rows,
    sla_breached,
)
from tests.integration.conftest import eventually, read_topic

CASE_OPENED = "recovery.case-opened.v1"


async def current_offers(stub, compensation, case_id: str, *, include_superseded: bool = False):
    request = compensation_pb2.ListOffersRequest(case_id=case_id, include_superseded=include_superseded)
    return list((await stub.ListOffers(request, metadata=agent(compensation))).offers)


async def test_a_case_opened_gives_exactly_one_current_offer(stack, compensation, publisher, stub):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case), source="intake")
    records = await offer_records(stack, customer, count=1, settle=1.0)
    assert len(records) == 1
    offer = events_pb2.OfferProposed.FromString(records[0].value)
    headers = dict(records[0].headers)
    assert headers["ce_id"].decode() == f"offer-proposed:{offer.offer_id}"
    assert (offer.case_id, offer.version, offer.policy_version) == (case, 1, "2026.4")
    assert offer.requote_reason == common_pb2.REQUOTE_REASON_UNSPECIFIED and not offer.supersedes_offer_id
    assert offer.total == eur(1500)
    kinds = [line.kind for line in offer.line_items]
    assert kinds == [common_pb2.REMEDY_KIND_VOUCHER, common_pb2.REMEDY_KIND_APOLOGY_NOTE]
    assert offer.line_items[0].rule_id == "goodwill.base.moderate"
    listed = await current_offers(stub, compensation, case)
    assert [o.offer_id for o in listed] == [offer.offer_id]
    assert metric(compensation, "recovery_compensation_offers_proposed_total", severity="moderate") >= 1


async def test_a_polish_case_is_explained_in_polish_in_zloty_and_a_re_quote_stays_polish(
    stack, compensation, publisher, stub
):
    customer, case = new_id("cust"), new_id("case")
    opened = case_opened(customer, case, locale="pl")
    opened.order_value.CopyFrom(common_pb2.Money(amount_minor=20_000, currency="PLN"))
    taxi_fare = common_pb2.Money(amount_minor=4_250, currency="PLN")
    taxi = common_pb2.CostItem(kind=common_pb2.COST_KIND_TAXI, amount=taxi_fare, has_receipt=True)
    opened.reported_costs.append(taxi)
    await publish(publisher, CASE_OPENED, opened, source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    assert first.locale == "pl" and first.total.currency == "PLN"
    taxi = first.line_items[0]
    assert taxi.customer_explanation == "Zwracamy koszt, który ponieśli Państwo przez nasz błąd: taksówka, 42,50\xa0zł."
    assert (taxi.customer_text.template_id, taxi.customer_text.locale) == ("offer.reimbursement", "pl")
    assert dict(taxi.customer_text.params) == {"amount": "42.50 PLN", "cost": "cost_kind.taxi"}
    assert taxi.internal_reason.startswith("reported 4250 PLN")  # staff keep their own words
    await publish(publisher, "recovery.sla-breached.v1", sla_breached(customer, case))
    second = (await offers_for(stack, customer, count=2))[1]
    gesture = next(line for line in second.line_items if line.rule_id.startswith("goodwill."))
    assert gesture.customer_explanation.endswith("i za to, że musieli Państwo na nas czekać.")
    stored = (await current_offers(stub, compensation, case))[0]
    assert stored.locale == "pl" and list(stored.line_items) == list(second.line_items)


async def test_a_case_in_a_language_nobody_speaks_here_is_dead_lettered_by_name(stack, compensation, publisher):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case, locale="klingon"), source="intake")

    def mine(records):
        return [r for r in records if r.key == customer.encode()]

    (dead,) = mine(await read_topic(stack.kafka, DEADLETTER_TOPIC, until=mine, timeout=40))
    assert dict(dead.headers)[REASON].decode().startswith("locale: 'klingon' is not a supported locale")


async def test_a_duplicate_case_opened_gives_no_second_offer(stack, compensation, publisher, stub):
    customer, case = new_id("cust"), new_id("case")
    event = case_opened(customer, case)
    await publish(publisher, CASE_OPENED, event, source="intake")
    await publish(publisher, CASE_OPENED, event, source="intake")  # same case, another ce_id
    offers = await offers_for(stack, customer, count=1, settle=3.0)
    assert len(offers) == 1
    assert len(await current_offers(stub, compensation, case, include_superseded=True)) == 1
    assert metric(compensation, "recovery_compensation_duplicates_ignored_total", kind="case_opened") >= 1


async def test_an_sla_breach_raises_the_offer_with_a_reason(stack, compensation, publisher, stub):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case), source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    breach = sla_breached(customer, case)
    await publish(publisher, "recovery.sla-breached.v1", breach)
    await publish(publisher, "recovery.sla-breached.v1", breach)  # the same missed deadline again: counted once
    offers = await offers_for(stack, customer, count=2, settle=2.0)
    assert len(offers) == 2
    second = offers[1]
    assert second.version == 2 and second.supersedes_offer_id == first.offer_id
    assert second.requote_reason == common_pb2.REQUOTE_REASON_SLA_BREACHED
    assert second.requote_detail.startswith("acknowledge SLA breached at ")
    assert second.total.amount_minor > first.total.amount_minor  # 15 EUR + 25% = 18.75, rounded up to 19
    assert second.total == eur(1900)
    assert "1 SLA breach(es) +2500 bp" in second.line_items[0].internal_reason
    assert "making you wait" in second.line_items[0].customer_explanation
    current = await current_offers(stub, compensation, case)
    assert [o.offer_id for o in current] == [second.offer_id]
    old = await stub.GetOffer(compensation_pb2.GetOfferRequest(offer_id=first.offer_id), metadata=agent(compensation))
    assert old.offer.superseded_by_offer_id == second.offer_id
    assert metric(compensation, "recovery_compensation_requotes_total", reason="sla_breached") >= 1


async def test_a_counter_and_a_reopening_requote_the_case(stack, compensation, publisher):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case), source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    counter = events_pb2.CustomerCountered(
        customer_id=customer,
        case_id=case,
        offer_id=first.offer_id,
        offer_version=1,
        request=common_pb2.CustomerRequest(remedy_kind=common_pb2.REMEDY_KIND_REFUND, amount=eur(3000)),
        countered_at=time_to_proto(now()),
    )
    await publish(publisher, "recovery.customer-countered.v1", counter)
    offers = await offers_for(stack, customer, count=2)
    countered = offers[1]
    assert countered.requote_reason == common_pb2.REQUOTE_REASON_CUSTOMER_COUNTERED
    assert countered.request_outcome == common_pb2.REQUEST_OUTCOME_GRANTED
    assert [(li.kind, li.amount.amount_minor) for li in countered.line_items[:2]] == [
        (common_pb2.REMEDY_KIND_REFUND, 3000),
        (common_pb2.REMEDY_KIND_VOUCHER, 500),
    ]
    reopened = events_pb2.CaseReopened(
        customer_id=customer, case_id=case, reason="customer still unhappy", reopened_at=time_to_proto(now())
    )
    await publish(publisher, "recovery.case-reopened.v1", reopened)
    offers = await offers_for(stack, customer, count=3)
    assert offers[2].requote_reason == common_pb2.REQUOTE_REASON_CASE_REOPENED
    assert offers[2].requote_detail == "case reopened: customer still unhappy"
    assert offers[2].supersedes_offer_id == countered.offer_id


async def test_authorised_spend_flags_the_next_offer_over_the_team_budget(stack, compensation, publisher, stub):
    customer, team = new_id("cust"), "tight-team"  # the test policy gives this team 50 EUR a month
    authorized = events_pb2.OfferAuthorized(
        customer_id=new_id("cust"),
        case_id=new_id("case"),
        offer_id=new_id("offer"),
        offer_version=1,
        amount=eur(4000),
        line_items=[common_pb2.OfferLineItem(kind=common_pb2.REMEDY_KIND_REFUND, amount=eur(4000))],
        team=team,
        authorized_at=time_to_proto(now()),
    )
    before = metric(compensation, "recovery_compensation_value_authorized_minor_total", kind="refund", currency="EUR")
    authorized.customer_id = customer
    await publish(publisher, "recovery.offer-authorized.v1", authorized)
    await publish(publisher, "recovery.offer-authorized.v1", authorized)  # redelivered: recorded once

    async def recorded():
        labels = {"kind": "refund", "currency": "EUR"}
        return metric(compensation, "recovery_compensation_value_authorized_minor_total", **labels) >= before + 4000

    assert await eventually(recorded)
    case = new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case, owning_team=team), source="intake")
    (offer,) = await offers_for(stack, customer, count=1)
    assert offer.total == eur(1500) and offer.budget_exceeded  # 40 + 15 EUR > 50 EUR
    stored = await stub.GetOffer(
        compensation_pb2.GetOfferRequest(offer_id=offer.offer_id), metadata=agent(compensation)
    )
    assert stored.offer.budget_exceeded
    # Recorded once although delivered twice (other suites may authorise refunds on the shared topic too).
    spend = await rows(
        compensation, "SELECT offer_id, team, amount_minor FROM spend WHERE offer_id = $1", authorized.offer_id
    )
    assert spend == [(authorized.offer_id, team, 4000)]
    assert metric(compensation, "recovery_compensation_offers_budget_exceeded_total") >= 1


async def test_the_frontlines_adjustment_is_requoted_once_within_the_policy(stack, compensation, publisher):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case), source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    gesture_kind = first.line_items[0].kind
    adjustment = common_pb2.OfferAdjustment(
        swaps=[common_pb2.RemedySwap(from_kind=gesture_kind, to_kind=common_pb2.REMEDY_KIND_REFUND)],
        gestures=[
            common_pb2.PersonalGesture(
                description="una bottiglia di vino", amount=eur(9_000), reason="anniversary dinner", employee_id="e-7"
            )
        ],
        late_costs=[common_pb2.CostItem(kind=common_pb2.COST_KIND_TAXI, amount=eur(1_200))],
    )
    adjusted = events_pb2.OfferAdjusted(
        customer_id=customer,
        case_id=case,
        offer_id=first.offer_id,
        offer_version=1,
        adjustment_id=new_id("adj"),
        adjustment=adjustment,
        reason="she prefers her money back",
        adjusted_by=common_pb2.Actor(kind=common_pb2.ACTOR_KIND_EMPLOYEE, employee_id="e-7", role="agent"),
        adjusted_at=time_to_proto(now()),
    )
    await publish(publisher, "recovery.offer-adjusted.v1", adjusted, source="escalation")
    await publish(publisher, "recovery.offer-adjusted.v1", adjusted, source="escalation")  # republished: once
    offers = await offers_for(stack, customer, count=2, settle=2.0)
    assert len(offers) == 2
    second = offers[1]
    assert second.requote_reason == common_pb2.REQUOTE_REASON_FRONTLINE_ADJUSTED
    assert second.requote_detail.endswith(f"by e-7 of offer {first.offer_id}: she prefers her money back")
    kinds = [(li.kind, li.rule_id) for li in second.line_items]
    assert (common_pb2.REMEDY_KIND_REFUND, first.line_items[0].rule_id) in kinds  # the gesture, in her kind
    assert gesture_kind not in [k for k, _ in kinds]
    taxi = next(li for li in second.line_items if li.kind == common_pb2.REMEDY_KIND_REIMBURSEMENT)
    assert taxi.amount.amount_minor == 1_200 and not taxi.needs_receipt  # below the receipt threshold
    wine = next(li for li in second.line_items if li.rule_id == "frontline.gesture")
    # Within the policy's gesture cap (50 EUR): cut, and staff see why.
    assert (wine.kind, wine.amount.amount_minor) == (common_pb2.REMEDY_KIND_GIFT, 5_000)
    assert "cut to the gesture cap (4000 not given)" in wine.internal_reason
    assert wine.customer_explanation.endswith("una bottiglia di vino.")
