"""One ledger, no double pay, over the real broker and Postgres: a cost merged in twice is repaid once, a split
offer's two authorisations are both spent, a re-quote after an authorisation offers only the difference, a
redelivered authorisation is counted once, and a repeat failure on a compensated reference goes to review."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry
from recovery.compensation.v1 import compensation_pb2
from recovery.events.v1 import common_pb2, events_pb2

from services.common.db import Database
from services.common.wire import time_to_proto
from services.compensation.adapters import wire
from services.compensation.adapters.metrics import CompensationMetrics
from services.compensation.adapters.policies import PolicyBook
from services.compensation.service_layer import handlers
from tests.integration.compensation.conftest import (
    agent,
    case_opened,
    eur,
    metric,
    new_id,
    now,
    offers_for,
    publish,
    rows,
    sla_breached,
)
from tests.integration.conftest import eventually

CASE_OPENED = "recovery.case-opened.v1"
OFFER_AUTHORIZED = "recovery.offer-authorized.v1"
REIMBURSEMENT, VOUCHER = common_pb2.REMEDY_KIND_REIMBURSEMENT, common_pb2.REMEDY_KIND_VOUCHER


def taxi(amount: int, ref: str = "T-1") -> common_pb2.CostItem:
    return common_pb2.CostItem(
        kind=common_pb2.COST_KIND_TAXI, amount=eur(amount), description="taxi home", has_receipt=True,
        receipt_reference=ref,
    )  # fmt: skip


def line(kind: int, amount: int, cost_kind: int = 0) -> common_pb2.OfferLineItem:
    return common_pb2.OfferLineItem(kind=kind, amount=eur(amount), cost_kind=cost_kind)


def authorized(offer: events_pb2.OfferProposed, lines, **fields) -> events_pb2.OfferAuthorized:
    base = {
        "customer_id": offer.customer_id,
        "case_id": offer.case_id,
        "offer_id": offer.offer_id,
        "offer_version": offer.version,
        "tier": common_pb2.AUTHORIZATION_TIER_OWNER,
        "amount": eur(sum(li.amount.amount_minor for li in lines)),
        "line_items": lines,
        "team": "front-desk",
        "authorized_at": time_to_proto(now()),
    }
    return events_pb2.OfferAuthorized(**(base | fields))


def amended(opened: events_pb2.CaseOpened, revision: int, costs) -> events_pb2.CaseAmended:
    """Intake merged a second report of the same failure: the snapshot lists every report's costs."""
    failure_id = new_id("failure")
    return events_pb2.CaseAmended(
        customer_id=opened.customer_id,
        case_id=opened.case_id,
        revision=revision,
        merged_failure_id=failure_id,
        merged_failure=events_pb2.FailureReported(
            customer_id=opened.customer_id, occurred_at=opened.occurred_at, reference=opened.reference
        ),
        failure_ids=[*opened.failure_ids, failure_id],
        category=opened.category,
        reference=opened.reference,
        classification=opened.classification,
        history=opened.history,
        reported_costs=costs,
        order_value=opened.order_value,
        customer_value=opened.customer_value,
        amended_at=time_to_proto(now()),
    )


def money_lines(offer) -> list[tuple[int, int, int]]:
    return [(li.kind, li.cost_kind, li.amount.amount_minor) for li in offer.line_items if li.amount.amount_minor]


async def spend_of(compensation, case_id: str, *, count: int) -> list[tuple]:
    async def recorded():
        found = await rows(
            compensation,
            """SELECT authorization_id, offer_id, part, amount_minor, lines::text FROM spend WHERE case_id = $1
               ORDER BY authorized_at, authorization_id""",
            case_id,
        )
        return found if len(found) >= count else None

    return await eventually(recorded)


async def test_a_taxi_merged_in_twice_is_reimbursed_once(stack, compensation, publisher):
    customer, case = new_id("cust"), new_id("case")
    opened = case_opened(customer, case, reference=new_id("order"), reported_costs=[taxi(4000)])
    await publish(publisher, CASE_OPENED, opened, source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    assert money_lines(first) == [(REIMBURSEMENT, common_pb2.COST_KIND_TAXI, 4000), (VOUCHER, 0, 1500)]

    # The second report of the same journey: intake's snapshot lists the taxi twice.
    await publish(publisher, "recovery.case-amended.v1", amended(opened, 2, [taxi(4000), taxi(4000)]), source="intake")
    second = (await offers_for(stack, customer, count=2))[1]
    assert second.requote_reason == common_pb2.REQUOTE_REASON_CASE_AMENDED
    assert money_lines(second) == [(REIMBURSEMENT, common_pb2.COST_KIND_TAXI, 4000), (VOUCHER, 0, 1500)]
    assert second.total == eur(5500)
    taxi_line = second.line_items[0]
    assert "duplicates dropped: reported cost 1 (same receipt reference 'T-1')" in taxi_line.internal_reason
    assert "duplicate" not in taxi_line.customer_explanation
    (unverified,) = await rows(compensation, "SELECT unverified_claims FROM cases WHERE case_id = $1", case)
    assert unverified == (0,)


async def test_a_reopening_after_an_authorisation_offers_only_the_difference(stack, compensation, publisher, stub):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case), source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    assert first.total == eur(1500) and not first.granted_before and first.granted_before_total == eur(0)
    await publish(publisher, OFFER_AUTHORIZED, authorized(first, list(first.line_items)))
    await spend_of(compensation, case, count=1)

    reopened = events_pb2.CaseReopened(
        customer_id=customer, case_id=case, reason="parcel never came", followup_id=new_id("followup"),
        reopened_at=time_to_proto(now()),
    )  # fmt: skip
    await publish(publisher, "recovery.case-reopened.v1", reopened)
    second = (await offers_for(stack, customer, count=2))[1]
    # One reopening: 15 EUR + 25% = 18.75, rounded up to 19 EUR; 15 EUR of it was granted already.
    assert second.requote_reason == common_pb2.REQUOTE_REASON_CASE_REOPENED
    assert money_lines(second) == [(VOUCHER, 0, 400)]
    assert second.total == eur(400)
    assert "1500 of 1900 granted before, 400 new" in second.line_items[0].internal_reason
    assert [(li.kind, li.amount.amount_minor, li.rule_id) for li in second.granted_before] == [
        (VOUCHER, 1500, "granted_before.voucher")
    ]
    assert second.granted_before_total == eur(1500)

    stored = await stub.GetOffer(
        compensation_pb2.GetOfferRequest(offer_id=second.offer_id), metadata=agent(compensation)
    )
    assert stored.offer.total == eur(400)
    assert list(stored.offer.granted_before) == list(second.granted_before)  # staff see what was granted before
    assert stored.offer.granted_before_total == second.granted_before_total
    # The offer recomputes exactly from its stored inputs, grants included.
    again = await _recompute(compensation, second.offer_id)
    assert wire.offer_to_event(again) == second


async def test_a_split_offers_two_authorisations_are_both_spent_and_both_deducted(stack, compensation, publisher):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case, reported_costs=[taxi(4000)]), source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    assert first.total == eur(5500)
    owner = authorized(
        first,
        [line(REIMBURSEMENT, 3000, common_pb2.COST_KIND_TAXI)],
        authorization_id=f"{first.offer_id}:owner",
        part=common_pb2.AUTHORIZATION_PART_OWNER_SHARE,
    )
    remainder = authorized(
        first,
        [line(REIMBURSEMENT, 1000, common_pb2.COST_KIND_TAXI), line(VOUCHER, 1500)],
        authorization_id=f"{first.offer_id}:remainder",
        part=common_pb2.AUTHORIZATION_PART_REMAINDER,
        approval_id=new_id("approval"),
    )
    remainder.authorized_at.seconds += 60  # approved a minute after the owner's share
    await publish(publisher, OFFER_AUTHORIZED, owner)
    await publish(publisher, OFFER_AUTHORIZED, remainder)

    spent = await spend_of(compensation, case, count=2)
    assert [row[:4] for row in spent] == [
        (owner.authorization_id, first.offer_id, "owner_share", 3000),
        (remainder.authorization_id, first.offer_id, "remainder", 2500),
    ]
    assert json.loads(spent[1][4]) == [
        {"kind": "reimbursement", "cost_kind": "taxi", "amount_minor": 1000},
        {"kind": "voucher", "cost_kind": None, "amount_minor": 1500},
    ]

    await publish(publisher, "recovery.sla-breached.v1", sla_breached(customer, case))
    second = (await offers_for(stack, customer, count=2))[1]
    # Due now: the taxi 40 EUR and 19 EUR goodwill; granted: the taxi in two parts and 15 EUR goodwill.
    assert money_lines(second) == [(VOUCHER, 0, 400)]
    assert [(li.kind, li.cost_kind, li.amount.amount_minor) for li in second.granted_before] == [
        (REIMBURSEMENT, common_pb2.COST_KIND_TAXI, 4000),
        (VOUCHER, 0, 1500),
    ]
    assert second.granted_before_total == eur(5500)


async def test_a_redelivered_authorisation_is_spent_once_and_counted_as_a_duplicate(stack, compensation, publisher):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case), source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    event = authorized(first, list(first.line_items), authorization_id=new_id("auth"))
    before = metric(compensation, "recovery_compensation_duplicates_ignored_total", kind="offer_authorized")
    await publish(publisher, OFFER_AUTHORIZED, event)
    await publish(publisher, OFFER_AUTHORIZED, event)  # redelivered under another event id: the inbox lets it in

    async def counted():
        return metric(compensation, "recovery_compensation_duplicates_ignored_total", kind="offer_authorized") >= (
            before + 1
        )

    assert await eventually(counted)
    spent = await spend_of(compensation, case, count=1)
    assert [row[:4] for row in spent] == [(event.authorization_id, first.offer_id, "whole", 1500)]


async def test_a_repeat_failure_on_a_compensated_reference_is_flagged_for_review(stack, compensation, publisher):
    customer, reference = new_id("cust"), new_id("order")
    earlier, later = new_id("case"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, earlier, reference=reference), source="intake")
    (first,) = await offers_for(stack, customer, count=1)
    assert not first.needs_review
    await publish(publisher, OFFER_AUTHORIZED, authorized(first, list(first.line_items)))
    await spend_of(compensation, earlier, count=1)

    await publish(publisher, CASE_OPENED, case_opened(customer, later, reference=reference), source="intake")
    repeat = (await offers_for(stack, customer, count=2))[1]
    assert repeat.case_id == later and repeat.needs_review
    assert [r.code for r in repeat.review_reasons] == ["repeat_reference"]
    assert earlier in repeat.review_reasons[0].detail
    assert repeat.total == eur(1500)  # flagged, not cut: a human decides whether to pay again

    other = new_id("case")  # the same customer on another order is paid as usual
    await publish(publisher, CASE_OPENED, case_opened(customer, other, reference=new_id("order")), source="intake")
    assert not (await offers_for(stack, customer, count=3))[2].needs_review


async def _recompute(compensation, offer_id: str):
    settings = compensation.settings
    db = await Database.connect(settings.database_url, schema=settings.schema, max_size=2)
    try:
        book = await PolicyBook.open(settings.policy_file, db=db)
        deps = handlers.Deps(policies=book, metrics=CompensationMetrics(CollectorRegistry()))
        async with db.transaction() as conn:
            return await handlers.recompute(conn, offer_id, deps=deps)
    finally:
        await db.close()
