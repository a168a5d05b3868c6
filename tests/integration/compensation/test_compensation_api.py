"""Compensation's gRPC API over the real stack: what-if quotes, offers by id and by case, the policy."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from recovery.compensation.v1 import compensation_pb2
from recovery.events.v1 import common_pb2

from tests.integration.compensation.conftest import (
    agent,
    case_opened,
    eur,
    new_id,
    offers_for,
    publish,
    rows,
    sla_breached,
)

CASE_OPENED = "recovery.case-opened.v1"


def what_if(**fields) -> compensation_pb2.CaseFacts:
    base = {
        "customer_id": new_id("cust"),
        "category": common_pb2.CATEGORY_CANCELLATION,
        "severity": common_pb2.SEVERITY_MAJOR,
        "avoidability": common_pb2.AVOIDABILITY_AVOIDABLE,
        "order_value": eur(40_000),
        "reported_costs": [common_pb2.CostItem(kind=common_pb2.COST_KIND_HOTEL, amount=eur(12_900), has_receipt=True)],
        "waited": Duration(seconds=3600),
    }
    return compensation_pb2.CaseFacts(**(base | fields))


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    found = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found |= {v.field: v.description for v in bad.field_violations}
    return found


async def test_a_what_if_quote_on_facts_is_itemised_and_stores_nothing(compensation, stub):
    facts = what_if()
    response = await stub.QuoteOffer(compensation_pb2.QuoteOfferRequest(facts=facts), metadata=agent(compensation))
    offer = response.offer
    assert offer.offer_id == "" and offer.version == 0 and offer.policy_version == "2026.4"
    lines = [(li.kind, li.amount.amount_minor, li.rule_id) for li in offer.line_items]
    # major 40 EUR +30% avoidable = 52 EUR, within min(300, 50% of 400) = 200 EUR; statutory 400 EUR band.
    assert lines == [
        (common_pb2.REMEDY_KIND_REIMBURSEMENT, 12_900, "reimbursement.hotel"),
        (common_pb2.REMEDY_KIND_STATUTORY_COMPENSATION, 40_000, "statutory.air_passenger_rights.cancellation"),
        (common_pb2.REMEDY_KIND_VOUCHER, 5_200, "goodwill.base.major"),
        (common_pb2.REMEDY_KIND_APOLOGY_NOTE, 0, "apology.always"),
    ]
    assert offer.total == eur(58_100)
    assert await rows(compensation, "SELECT 1 FROM offers WHERE customer_id = $1", facts.customer_id) == []


async def test_a_what_if_on_a_stored_case_can_try_a_counter_proposal(stack, compensation, publisher, stub):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case), source="intake")
    await offers_for(stack, customer, count=1)
    ask = common_pb2.CustomerRequest(remedy_kind=common_pb2.REMEDY_KIND_FREE_UPGRADE, amount=eur(3000))
    request = compensation_pb2.QuoteOfferRequest(case_id=case, customer_request=ask)
    offer = (await stub.QuoteOffer(request, metadata=agent(compensation))).offer
    assert offer.request_outcome == common_pb2.REQUEST_OUTCOME_ALTERNATIVE_OFFERED
    assert (offer.line_items[0].kind, offer.line_items[0].amount.amount_minor) == (common_pb2.REMEDY_KIND_VOUCHER, 3000)
    stored = await rows(compensation, "SELECT count(*) FROM offers WHERE case_id = $1", case)
    assert stored == [(1,)]  # the what-if stored nothing


async def test_bad_quotes_are_refused_with_the_fields_named(compensation, stub):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.QuoteOffer(compensation_pb2.QuoteOfferRequest(), metadata=agent(compensation))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error.value) == {"subject": "one of case_id or facts is required"}
    bad = what_if(customer_id="", order_value=common_pb2.Money(amount_minor=-5, currency="EUR"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.QuoteOffer(compensation_pb2.QuoteOfferRequest(facts=bad), metadata=agent(compensation))
    assert violations(error.value) == {
        "facts.customer_id": "is required",
        "facts.order_value.amount_minor": "must not be negative",
    }
    for request in (
        compensation_pb2.QuoteOfferRequest(case_id=new_id("case")),
        compensation_pb2.QuoteOfferRequest(facts=what_if(), policy_version="1999.1"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.QuoteOffer(request, metadata=agent(compensation))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_offers_are_listed_newest_first_page_by_page(stack, compensation, publisher, stub):
    customer, case = new_id("cust"), new_id("case")
    await publish(publisher, CASE_OPENED, case_opened(customer, case), source="intake")
    await offers_for(stack, customer, count=1)
    await publish(publisher, "recovery.sla-breached.v1", sla_breached(customer, case))
    await offers_for(stack, customer, count=2)
    await publish(
        publisher, "recovery.sla-breached.v1", sla_breached(customer, case, clock=common_pb2.SLA_CLOCK_RESOLVE)
    )
    offers = await offers_for(stack, customer, count=3)
    seen, token = [], ""
    while True:
        request = compensation_pb2.ListOffersRequest(
            case_id=case, include_superseded=True, page_size=2, page_token=token
        )
        page = await stub.ListOffers(request, metadata=agent(compensation))
        seen.append([o.version for o in page.offers])
        token = page.next_page_token
        if not token:
            break
    assert seen == [[3, 2], [1]]
    current = await stub.ListOffers(compensation_pb2.ListOffersRequest(case_id=case), metadata=agent(compensation))
    assert [o.offer_id for o in current.offers] == [offers[2].offer_id]
    assert offers[2].total.amount_minor > offers[1].total.amount_minor > offers[0].total.amount_minor
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ListOffers(
            compensation_pb2.ListOffersRequest(case_id=case, page_token="x"), metadata=agent(compensation)
        )
    assert violations(error.value) == {"page_token": "is not a token this service returned"}
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetOffer(compensation_pb2.GetOfferRequest(offer_id=new_id("offer")), metadata=agent(compensation))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_policy_in_force_is_described(compensation, stub):
    policy = await stub.GetPolicy(compensation_pb2.GetPolicyRequest(), metadata=agent(compensation))
    assert (policy.version, policy.current) == ("2026.4", True)
    assert len(policy.content_sha256) == 64 and "floor 500" in policy.summary
    remedies = {c.category: list(c.remedy_kinds) for c in policy.category_remedies}
    assert remedies[common_pb2.CATEGORY_BILLING_ERROR][0] == common_pb2.REMEDY_KIND_ACCOUNT_CREDIT
    same = await stub.GetPolicy(compensation_pb2.GetPolicyRequest(version="2026.4"), metadata=agent(compensation))
    assert same == policy
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetPolicy(compensation_pb2.GetPolicyRequest(version="nope"), metadata=agent(compensation))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("role", ["agent", "senior_agent", "team_lead", "manager", "director"])
async def test_every_staff_role_may_read(compensation, stub, role):
    await stub.GetPolicy(compensation_pb2.GetPolicyRequest(), metadata=agent(compensation, role=role))


async def test_other_roles_and_anonymous_callers_are_refused(compensation, stub):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetPolicy(compensation_pb2.GetPolicyRequest(), metadata=agent(compensation, role="customer"))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetPolicy(compensation_pb2.GetPolicyRequest())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
