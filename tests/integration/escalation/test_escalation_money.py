"""Money and authority over the real broker and Postgres: offers in GBP and PLN checked against the EUR limits
at the policy's rate, the owner's share granted at once and only the remainder sent up, a rejected remainder
leaving the share standing, a re-quote moving the pending approval, a director deciding for a manager, and the
caller's remaining authority."""

from __future__ import annotations

import grpc
import pytest
from recovery.escalation.v1 import escalation_pb2 as pb
from recovery.events.v1 import common_pb2, events_pb2

from services.common.wire import time_to_proto
from services.escalation import bootstrap
from tests.integration.conftest import eventually
from tests.integration.escalation.conftest import (
    OFFERS,
    OPENED,
    Client,
    Escalation,
    case_opened,
    db_fetch,
    escalation_settings,
    new_id,
    now,
    policy_text,
    publish,
    read_events,
)
from tests.support.running import channel, running_service

VOUCHER = common_pb2.REMEDY_KIND_VOUCHER
STATUTORY = common_pb2.REMEDY_KIND_STATUTORY_COMPENSATION
AUTHORIZED = "recovery.offer-authorized.v1"
REQUESTED = "recovery.approval-requested.v1"


@pytest.fixture(scope="module")
async def escalation(stack, tmp_path_factory):
    settings = escalation_settings(stack, tmp_path_factory.mktemp("escalation-money"), policy_text())
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        yield Escalation(settings=settings, endpoints=endpoints)


@pytest.fixture(scope="module")
async def client(escalation):
    async with channel(escalation.endpoints.grpc_port) as ch:
        yield Client(escalation.settings, ch)


def offer_in(opened, currency: str, *lines: tuple[int, int], version: int = 1) -> events_pb2.OfferProposed:
    """An OfferProposed for the case with (remedy kind, minor units) lines in ``currency``."""
    money = lambda minor: common_pb2.Money(amount_minor=minor, currency=currency)  # noqa: E731
    return events_pb2.OfferProposed(
        customer_id=opened.customer_id,
        case_id=opened.case_id,
        offer_id=new_id("offer"),
        version=version,
        policy_version="comp-test",
        line_items=[common_pb2.OfferLineItem(kind=k, amount=money(a), rule_id="test") for k, a in lines],
        total=money(sum(a for _, a in lines)),
        proposed_at=time_to_proto(now()),
    )


async def case_with(publisher, client, *, currency: str, lines, owner: str, team: str):
    """Publish an agent-owned case and its offer; return (opened, offer, the agent's caller) once it shows."""
    opened = case_opened(owner=owner, team=team, owner_role="agent")
    offer = offer_in(opened, currency, *lines)
    await publish(publisher, OPENED, opened, source="intake")
    await publish(publisher, OFFERS, offer, source="compensation")
    me = client.as_(owner, "agent", team)
    await offer_shown(me, opened, offer)
    return opened, offer, me


async def offer_shown(caller, opened, offer) -> pb.Case:
    async def shown():
        try:
            case = (await caller.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
        except grpc.aio.AioRpcError:
            return None
        return case if case.current_offer.offer_id == offer.offer_id else None

    return await eventually(shown, timeout=40)


async def ask(caller, opened, offer) -> pb.Approval:
    response = await caller.RequestApproval(
        pb.RequestApprovalRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
    )
    return response.approval


async def decide(caller, approval_id: str, decision, reason="ok", amount: common_pb2.Money | None = None):
    request = pb.DecideApprovalRequest(
        request_id=new_id("req"), approval_id=approval_id, decision=decision, reason=reason
    )
    if amount is not None:
        request.approved_amount.CopyFrom(amount)
    return (await caller.DecideApproval(request)).approval


async def authorised(escalation, opened, count: int):
    return await read_events(
        escalation.settings.kafka_bootstrap_servers, AUTHORIZED, events_pb2.OfferAuthorized,
        key=opened.customer_id, count=count,
    )  # fmt: skip


async def usage(escalation, employee_id: str) -> int:
    rows = await db_fetch(
        escalation.settings,
        "SELECT used_minor FROM authority_usage WHERE employee_id = $1 AND period = 'day' AND currency = 'EUR'",
        employee_id,
    )
    return rows[0]["used_minor"] if rows else 0


async def test_a_gbp_offer_within_the_agents_converted_limit_is_authorised_by_her_at_once(
    escalation, publisher, client
):
    owner, team = new_id("agent"), new_id("team")
    # 42.73 GBP is the most of an agent's 50 EUR at 1.17; 42.00 GBP is 49.14 EUR.
    opened, _, me = await case_with(publisher, client, currency="GBP", lines=[(VOUCHER, 4200)], owner=owner, team=team)
    [event] = await authorised(escalation, opened, 1)
    assert (event.tier, event.part, event.amount.currency) == (
        common_pb2.AUTHORIZATION_TIER_OWNER,
        common_pb2.AUTHORIZATION_PART_WHOLE,
        "GBP",
    )
    assert (event.rate.from_currency, event.rate.to_currency, event.rate.rate) == ("GBP", "EUR", "1.17")
    assert event.rate.rates_version == "2026-12-01"
    assert await usage(escalation, owner) == 4914  # booked in the base currency
    [row] = await db_fetch(
        escalation.settings,
        "SELECT rate FROM audit_log WHERE case_id = $1 AND action = 'offer_authorized'",
        opened.case_id,
    )
    assert '"rate": "1.17"' in row["rate"]
    room = await me.GetMyAuthority(pb.GetMyAuthorityRequest(case_id=opened.case_id))
    assert (room.per_case.amount_minor, room.per_case.currency) == (4273, "GBP")
    assert room.remaining_today.amount_minor == 20000 * 100 // 117 - 4200  # 170.94 GBP of the day, less 42.00
    assert room.remaining_for_case.amount_minor == 4200  # what the split would give her on this offer


async def test_a_pln_offer_is_split_and_its_remainder_goes_to_the_tier_that_covers_it_in_eur(
    escalation, publisher, client
):
    owner, team, lead = new_id("agent"), new_id("team"), new_id("lead")
    # 1,000.00 PLN is 235.00 EUR: the agent covers 212.76 PLN (50 EUR); 787.24 PLN (185.01 EUR) is above a senior
    # agent's 150 EUR and within a team lead's 500.
    opened, offer, me = await case_with(
        publisher, client, currency="PLN", lines=[(VOUCHER, 100000)], owner=owner, team=team
    )
    approval = await ask(me, opened, offer)
    assert (approval.approver_role, approval.owner_share.amount_minor, approval.amount.amount_minor) == (
        "team_lead",
        21276,
        78724,
    )
    assert approval.amount.currency == "PLN"
    decided = await decide(
        client.as_(lead, "team_lead", team), approval.approval_id, common_pb2.APPROVAL_DECISION_APPROVE
    )
    assert decided.status == pb.APPROVAL_STATUS_DECIDED
    share, remainder = await authorised(escalation, opened, 2)
    assert (share.part, share.amount.amount_minor) == (common_pb2.AUTHORIZATION_PART_OWNER_SHARE, 21276)
    assert (remainder.part, remainder.amount.amount_minor) == (common_pb2.AUTHORIZATION_PART_REMAINDER, 78724)
    assert remainder.rate.rate == "0.235"
    assert await usage(escalation, owner) == 5000  # 212.76 PLN = 49.9986 EUR, rounded up
    assert await usage(escalation, lead) == 18501


async def test_rejecting_the_remainder_leaves_the_owners_share_standing(escalation, publisher, client):
    owner, team, lead = new_id("agent"), new_id("team"), new_id("lead")
    opened, offer, me = await case_with(
        publisher, client, currency="EUR", lines=[(VOUCHER, 30000)], owner=owner, team=team
    )
    approval = await ask(me, opened, offer)
    await decide(client.as_(lead, "team_lead", team), approval.approval_id, common_pb2.APPROVAL_DECISION_REJECT)
    case = (await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
    assert case.state == pb.CASE_STATE_OFFER_READY  # the owner can still make her part of it to the customer
    assert case.current_offer.status == pb.OFFER_STATUS_AUTHORIZED
    assert [(a.part, a.amount.amount_minor) for a in case.current_offer.authorizations] == [
        (common_pb2.AUTHORIZATION_PART_OWNER_SHARE, 5000)
    ]
    assert await usage(escalation, owner) == 5000 and await usage(escalation, lead) == 0


async def test_a_requote_while_the_remainder_waits_moves_the_approval_onto_the_new_offer(escalation, publisher, client):
    owner, team, lead = new_id("agent"), new_id("team"), new_id("lead")
    opened, offer, me = await case_with(
        publisher, client, currency="EUR", lines=[(VOUCHER, 30000)], owner=owner, team=team
    )
    approval = await ask(me, opened, offer)
    # Compensation's re-quote offers what is not granted yet: the 250 waiting and 50 more.
    requote = offer_in(opened, "EUR", (VOUCHER, 30000), version=2)
    await publish(publisher, OFFERS, requote, source="compensation")
    case = await offer_shown(me, opened, requote)
    assert (case.state, case.pending_approval_id) == (pb.CASE_STATE_AWAITING_APPROVAL, approval.approval_id)
    _, moved = await read_events(
        escalation.settings.kafka_bootstrap_servers, REQUESTED, events_pb2.ApprovalRequested,
        key=opened.customer_id, count=2,
    )  # fmt: skip
    assert (moved.approval_id, moved.offer_id, moved.offer_version) == (approval.approval_id, requote.offer_id, 2)
    assert (moved.amount.amount_minor, moved.approver_role) == (30000, "team_lead")
    await decide(client.as_(lead, "team_lead", team), approval.approval_id, common_pb2.APPROVAL_DECISION_APPROVE)
    share, approved = await authorised(escalation, opened, 2)
    assert (share.offer_id, share.amount.amount_minor) == (offer.offer_id, 5000)
    assert (approved.offer_id, approved.amount.amount_minor) == (requote.offer_id, 30000)
    assert await usage(escalation, owner) == 5000  # nothing given back, nothing booked twice


async def test_a_director_of_the_team_decides_a_manager_routed_approval_within_her_own_limits(
    escalation, publisher, client
):
    owner, team, director = new_id("agent"), new_id("team"), new_id("director")
    # 1,500 EUR: 50 the agent's; 1,450 above a team lead's 500, within a manager's 2,000.
    opened, offer, me = await case_with(
        publisher, client, currency="EUR", lines=[(VOUCHER, 150000)], owner=owner, team=team
    )
    approval = await ask(me, opened, offer)
    assert approval.approver_role == "manager"
    with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
        await decide(client.as_(new_id("manager"), "manager", "another-team"), approval.approval_id,
                     common_pb2.APPROVAL_DECISION_APPROVE)  # fmt: skip
    assert elsewhere.value.code() == grpc.StatusCode.PERMISSION_DENIED
    boss = client.as_(director, "director", team)
    with pytest.raises(grpc.aio.AioRpcError) as other_director:
        await decide(client.as_(new_id("director"), "director", "head-office"), approval.approval_id,
                     common_pb2.APPROVAL_DECISION_APPROVE)  # fmt: skip
    assert other_director.value.code() == grpc.StatusCode.PERMISSION_DENIED
    decided = await decide(boss, approval.approval_id, common_pb2.APPROVAL_DECISION_APPROVE)
    assert decided.decided_by.employee_id == director
    _, approved = await authorised(escalation, opened, 2)
    assert (approved.authorized_by.employee_id, approved.limits.role) == (director, "director")


async def test_bad_decisions_and_unconfigured_currencies_are_refused_naming_the_field_and_change_nothing(
    escalation, publisher, client
):
    owner, team, lead = new_id("agent"), new_id("team"), new_id("lead")
    opened, offer, me = await case_with(
        publisher, client, currency="EUR", lines=[(STATUTORY, 25000), (VOUCHER, 10000)], owner=owner, team=team
    )
    approval = await ask(me, opened, offer)  # the agent may grant no statutory line: 25,000 + 5,000 go up
    assert approval.amount.amount_minor == 30000
    approver = client.as_(lead, "team_lead", team)
    for amount, field in (
        (30001, "approved_amount"),  # above what was asked
        (-1, "approved_amount"),
        (20000, "approved_amount"),  # below the statutory line, which is never reduced
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await decide(approver, approval.approval_id, common_pb2.APPROVAL_DECISION_MODIFY_AND_APPROVE,
                         amount=common_pb2.Money(amount_minor=amount, currency="EUR"))  # fmt: skip
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in refused.value.details()
    decided = await decide(approver, approval.approval_id, common_pb2.APPROVAL_DECISION_MODIFY_AND_APPROVE,
                           amount=common_pb2.Money(amount_minor=27000, currency="EUR"))  # fmt: skip
    assert decided.approved_amount.amount_minor == 27000
    _, approved = await authorised(escalation, opened, 2)
    assert [(i.kind, i.amount.amount_minor) for i in approved.line_items] == [(STATUTORY, 25000), (VOUCHER, 2000)]

    dollars = case_opened(owner=owner, team=team, owner_role="agent")
    usd = offer_in(dollars, "USD", (VOUCHER, 1000))
    await publish(publisher, OPENED, dollars, source="intake")
    await publish(publisher, OFFERS, usd, source="compensation")
    await offer_shown(me, dollars, usd)
    with pytest.raises(grpc.aio.AioRpcError) as no_rate:
        await ask(me, dollars, usd)
    assert no_rate.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no exchange rate from USD to EUR" in no_rate.value.details()
    case = (await me.GetCase(pb.GetCaseRequest(case_id=dollars.case_id))).case
    assert (case.state, case.pending_approval_id) == (pb.CASE_STATE_OFFER_PENDING, "")
    with pytest.raises(grpc.aio.AioRpcError) as bad_currency:
        await me.GetMyAuthority(pb.GetMyAuthorityRequest(currency="XYZ"))
    assert bad_currency.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "currency" in bad_currency.value.details() and "XYZ" in bad_currency.value.details()


async def test_flagged_offers_of_queued_cases_go_for_review_at_once_and_the_claimer_inherits_them(
    escalation, publisher, client
):
    team = new_id("team")
    queued = [case_opened(team=team, system_detected=True) for _ in range(3)]
    flagged = [offer_in(opened, "EUR", (VOUCHER, 4000)) for opened in queued]
    for offer in flagged:
        offer.budget_exceeded = True
    plain = case_opened(team=team, system_detected=True)
    beyond_automation = offer_in(plain, "EUR", (VOUCHER, 4000))  # unflagged: waits for whoever claims it
    for opened in [*queued, plain]:
        await publish(publisher, OPENED, opened, source="intake")
    for offer in [*flagged, beyond_automation]:
        await publish(publisher, OFFERS, offer, source="compensation")
    requests = {}
    for opened in queued:
        [request] = await read_events(
            escalation.settings.kafka_bootstrap_servers, REQUESTED, events_pb2.ApprovalRequested,
            key=opened.customer_id, count=1,
        )  # fmt: skip
        requests[opened.case_id] = request
        assert request.approver_role == "senior_agent"  # the first tier above an agent that covers 40 EUR
        assert list(request.reasons) == [common_pb2.APPROVAL_REASON_BUDGET_EXCEEDED]
        assert (request.amount.amount_minor, request.owner_share.amount_minor) == (4000, 0)
        assert request.requested_by.kind == common_pb2.ACTOR_KIND_SYSTEM
    lead = client.as_(new_id("lead"), "team_lead", team)
    await offer_shown(lead, plain, beyond_automation)
    first, second, third = queued
    shown = (await lead.GetCase(pb.GetCaseRequest(case_id=first.case_id))).case
    assert shown.state == pb.CASE_STATE_QUEUED
    assert shown.pending_approval_id == requests[first.case_id].approval_id
    untouched = (await lead.GetCase(pb.GetCaseRequest(case_id=plain.case_id))).case
    assert (untouched.state, untouched.pending_approval_id) == (pb.CASE_STATE_QUEUED, "")

    # Claimed while the request is in flight: the new owner is the contact and the approval goes on.
    agent = client.as_(new_id("agent"), "agent", team)
    claimed = (await agent.ClaimCase(pb.ClaimCaseRequest(request_id=new_id("req"), case_id=first.case_id))).case
    assert (claimed.state, claimed.pending_approval_id) == (
        pb.CASE_STATE_AWAITING_APPROVAL,
        requests[first.case_id].approval_id,
    )

    # Decided before anyone claimed it: authorised, still in the queue; whoever claims it can present it.
    senior = client.as_(new_id("senior"), "senior_agent", team)
    await decide(senior, requests[second.case_id].approval_id, common_pb2.APPROVAL_DECISION_APPROVE)
    [granted] = await authorised(escalation, second, 1)
    assert (granted.tier, granted.part, granted.amount.amount_minor) == (
        common_pb2.AUTHORIZATION_TIER_APPROVER,
        common_pb2.AUTHORIZATION_PART_WHOLE,
        4000,
    )
    waiting = (await lead.GetCase(pb.GetCaseRequest(case_id=second.case_id))).case
    assert (waiting.state, waiting.pending_approval_id) == (pb.CASE_STATE_QUEUED, "")
    claimed = (await agent.ClaimCase(pb.ClaimCaseRequest(request_id=new_id("req"), case_id=second.case_id))).case
    assert claimed.state == pb.CASE_STATE_OFFER_READY

    # Nobody but the system sends a queued case's offer up; a queued case in review goes only to a named person.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await lead.TransferCase(
            pb.TransferCaseRequest(request_id=new_id("req"), case_id=third.case_id, to_team=new_id("team"), reason="x")
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "approval is in flight" in refused.value.details()
