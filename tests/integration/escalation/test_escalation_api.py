"""Escalation over the real broker and Postgres: cases from intake's events, offers from compensation's,
authorised by the system, by the owner or through an approver; limits hold under concurrent approvals."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from datetime import timedelta

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families
from recovery.escalation.v1 import escalation_pb2 as pb
from recovery.events.v1 import common_pb2, events_pb2

from services.common.wire import time_to_proto
from services.escalation import bootstrap
from tests.integration.conftest import eventually
from tests.integration.escalation.conftest import (
    BUSY_AGENT,
    OFFERS,
    OPENED,
    TIGHT_LEAD,
    Client,
    Escalation,
    case_opened,
    db_fetch,
    escalation_settings,
    new_id,
    now,
    offer_for,
    policy_text,
    publish,
    read_events,
)
from tests.support.running import channel, running_service

VOUCHER = common_pb2.REMEDY_KIND_VOUCHER
AUTHORIZED = "recovery.offer-authorized.v1"
REQUESTED = "recovery.approval-requested.v1"
DECIDED = "recovery.approval-decided.v1"
PROGRESSED = "recovery.case-progressed.v1"
CONTACTS = "recovery.contact-recorded.v1"


@pytest.fixture(scope="module")
async def escalation(stack, tmp_path_factory):
    settings = escalation_settings(stack, tmp_path_factory.mktemp("escalation"), policy_text())
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        yield Escalation(settings=settings, endpoints=endpoints)


@pytest.fixture(scope="module")
async def client(escalation):
    async with channel(escalation.endpoints.grpc_port) as ch:
        yield Client(escalation.settings, ch)


def violations(error: grpc.aio.AioRpcError):
    status = rpc_status.from_call(error)
    out = []
    for detail in status.details if status else ():
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(failure):
            out.extend(failure.violations)
    return out


async def opened_with_offer(
    publisher, client, *, owner: str, team: str, amount: int, system_detected=False, owner_role="", **kw
):
    """Publish a case and an offer as intake and compensation would; wait until the case shows the offer.

    By default the owner's role is not on the event (an owner named by another system), so no owner authority
    applies until the owner acts; ``owner_role`` is what intake sets from the reporter's token."""
    opened = case_opened(owner=owner, team=team, system_detected=system_detected, owner_role=owner_role)
    offer = offer_for(opened, (VOUCHER, amount), **kw)
    await publish(publisher, OPENED, opened, source="intake")
    await publish(publisher, OFFERS, offer, source="compensation")
    viewer = client.as_(owner or "viewer", "team_lead", team)

    async def has_offer():
        try:
            got = await viewer.GetCase(pb.GetCaseRequest(case_id=opened.case_id))
        except grpc.aio.AioRpcError:
            return None
        return got.case if got.case.current_offer.offer_id == offer.offer_id else None

    case = await eventually(has_offer, timeout=40)
    return opened, offer, case


async def test_a_system_detected_failure_within_the_automation_limit_is_authorised_with_no_human_step(
    escalation, publisher, client
):
    team = new_id("team")
    opened, offer, _ = await opened_with_offer(
        publisher, client, owner="", team=team, amount=2500, system_detected=True
    )
    [authorized] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        AUTHORIZED,
        events_pb2.OfferAuthorized,
        key=opened.customer_id,
        count=1,
        settle=1.0,
    )
    assert authorized.offer_id == offer.offer_id
    assert authorized.tier == common_pb2.AUTHORIZATION_TIER_SYSTEM
    assert authorized.authorized_by.kind == common_pb2.ACTOR_KIND_SYSTEM
    assert authorized.amount.amount_minor == 2500
    assert authorized.team == team
    case = (await client.as_("a-1", "agent", team).GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
    assert case.state == pb.CASE_STATE_QUEUED  # still waiting for an owner, with its offer ready
    assert case.current_offer.status == pb.OFFER_STATUS_AUTHORIZED
    assert [e.action for e in case.decision_history][-1] == pb.CASE_ACTION_OFFER_AUTHORIZED


async def test_an_offer_within_the_owners_limits_is_authorised_by_the_owner_at_once_with_no_human_step(
    escalation, publisher, client
):
    team, owner = new_id("team"), new_id("agent")
    opened, offer, case = await opened_with_offer(
        publisher, client, owner=owner, owner_role="agent", team=team, amount=5000
    )
    assert case.state == pb.CASE_STATE_OFFER_READY  # nobody called anything
    assert case.current_offer.status == pb.OFFER_STATUS_AUTHORIZED
    assert case.current_offer.tier == common_pb2.AUTHORIZATION_TIER_OWNER
    [authorized] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        AUTHORIZED,
        events_pb2.OfferAuthorized,
        key=opened.customer_id,
        count=1,
        settle=1.0,
    )
    assert (authorized.offer_id, authorized.authorized_by.employee_id) == (offer.offer_id, owner)
    assert authorized.tier == common_pb2.AUTHORIZATION_TIER_OWNER and authorized.limits.role == "agent"
    assert authorized.limits.per_case_limit.amount_minor == 5000
    entry = case.decision_history[-1]
    assert (entry.action, entry.actor.employee_id) == (pb.CASE_ACTION_OFFER_AUTHORIZED, owner)
    assert "at once" in entry.reason

    async def used_today():
        found = await db_fetch(
            escalation.settings,
            "SELECT used_minor FROM authority_usage WHERE employee_id = $1 AND period = 'day'",
            owner,
        )
        return found[0]["used_minor"]

    assert await used_today() == 5000  # booked against the owner's own period limits like any of theirs
    # A re-quote offers only what is new (compensation deducts what was granted): the new 10.00 is authorised at
    # once too, and what was granted stays granted, so both count against the day.
    requote = offer_for(opened, (VOUCHER, 1000), version=2)
    await publish(publisher, OFFERS, requote, source="compensation")
    await read_events(
        escalation.settings.kafka_bootstrap_servers,
        AUTHORIZED,
        events_pb2.OfferAuthorized,
        key=opened.customer_id,
        count=2,
    )
    assert await used_today() == 6000
    requested = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        REQUESTED,
        events_pb2.ApprovalRequested,
        key=opened.customer_id,
        count=0,
    )
    assert requested == []  # nobody else was asked


async def test_an_offer_beyond_the_owners_limits_waits_for_the_owner_to_send_it_up(escalation, publisher, client):
    team, owner = new_id("team"), new_id("agent")
    *_, case = await opened_with_offer(publisher, client, owner=owner, owner_role="agent", team=team, amount=5001)
    assert case.state == pb.CASE_STATE_OFFER_PENDING and case.current_offer.status == pb.OFFER_STATUS_PROPOSED


async def test_an_owner_whose_role_was_not_known_authorises_with_their_own_call(escalation, publisher, client):
    team, owner = new_id("team"), new_id("agent")
    opened, offer, case = await opened_with_offer(publisher, client, owner=owner, team=team, amount=5000)
    assert case.state == pb.CASE_STATE_OFFER_PENDING  # the owner named by another system: no role, no authority yet
    me = client.as_(owner, "agent", team)
    request = pb.AuthorizeOfferRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
    first = await me.AuthorizeOffer(request)
    again = await me.AuthorizeOffer(request)  # a retry: the same stored answer, nothing done twice
    assert first == again
    assert first.case.state == pb.CASE_STATE_OFFER_READY
    assert first.case.current_offer.tier == common_pb2.AUTHORIZATION_TIER_OWNER
    [authorized] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        AUTHORIZED,
        events_pb2.OfferAuthorized,
        key=opened.customer_id,
        count=1,
        settle=1.0,
    )
    assert authorized.authorized_by.employee_id == owner
    assert authorized.tier == common_pb2.AUTHORIZATION_TIER_OWNER
    assert authorized.limits.per_case_limit.amount_minor == 5000
    assert authorized.limits.used_today.amount_minor == 0
    assert authorized.limits_policy_version == "2026-12-02.2"
    entry = first.case.decision_history[-1]
    assert (entry.action, entry.actor.employee_id, entry.amount.amount_minor) == (
        pb.CASE_ACTION_OFFER_AUTHORIZED,
        owner,
        5000,
    )
    assert entry.limits.role == "agent"


async def test_only_the_excess_above_the_owners_limits_goes_to_the_lowest_tier_that_covers_it(
    escalation, publisher, client
):
    team, owner, lead = new_id("team"), new_id("agent"), new_id("lead")
    opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=30000)
    me = client.as_(owner, "agent", team)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await me.AuthorizeOffer(
            pb.AuthorizeOfferRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert violations(refused.value)[0].type == "LIMIT"

    requested = await me.RequestApproval(
        pb.RequestApprovalRequest(
            request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id, note="long-standing customer"
        )
    )
    approval = requested.approval
    # Frontline first: the agent's own 50 EUR are granted at once; only the other 250 go up, and 250 EUR is above
    # a senior agent's 150 and within a team lead's 500 (not the manager).
    assert (approval.approver_role, approval.approver_team) == ("team_lead", team)
    assert (approval.offer_total.amount_minor, approval.owner_share.amount_minor) == (30000, 5000)
    assert approval.amount.amount_minor == 25000
    assert "granted 5000 EUR of 30000 EUR at once" in approval.split
    # Above the per-case limit, the voucher cap, and (300 > 200 EUR) the agent's whole daily limit.
    assert list(approval.reasons) == [
        common_pb2.APPROVAL_REASON_ABOVE_CASE_LIMIT,
        common_pb2.APPROVAL_REASON_REMEDY_KIND_NOT_ALLOWED,
        common_pb2.APPROVAL_REASON_ABOVE_PERIOD_LIMIT,
    ]
    assert requested.case.state == pb.CASE_STATE_AWAITING_APPROVAL
    assert requested.case.owner_employee_id == owner
    [event] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        REQUESTED,
        events_pb2.ApprovalRequested,
        key=opened.customer_id,
        count=1,
    )
    assert (event.approver_role, event.escalation_level, event.owner_employee_id) == ("team_lead", 0, owner)
    assert (event.amount.amount_minor, event.owner_share.amount_minor) == (25000, 5000)
    assert [item.amount.amount_minor for item in event.line_items] == [25000]
    [share] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        AUTHORIZED,
        events_pb2.OfferAuthorized,
        key=opened.customer_id,
        count=1,
    )
    assert (share.part, share.tier, share.authorized_by.employee_id) == (
        common_pb2.AUTHORIZATION_PART_OWNER_SHARE,
        common_pb2.AUTHORIZATION_TIER_OWNER,
        owner,
    )
    assert share.amount.amount_minor == 5000 and share.rate.rates_version == "2026-12-01"
    waiting = (await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case.current_offer
    assert (waiting.authorized_amount.amount_minor, waiting.awaiting_approval.amount_minor) == (5000, 25000)

    approver = client.as_(lead, "team_lead", team)
    pending = await approver.ListPendingApprovals(pb.ListPendingApprovalsRequest())
    assert approval.approval_id in [a.approval_id for a in pending.approvals]
    with pytest.raises(grpc.aio.AioRpcError) as wrong_tier:
        await client.as_(new_id("senior"), "senior_agent", team).DecideApproval(
            pb.DecideApprovalRequest(
                request_id=new_id("req"),
                approval_id=approval.approval_id,
                decision=common_pb2.APPROVAL_DECISION_APPROVE,
                reason="fine",
            )
        )
    assert wrong_tier.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await approver.DecideApproval(
            pb.DecideApprovalRequest(
                request_id=new_id("req"),
                approval_id=approval.approval_id,
                decision=common_pb2.APPROVAL_DECISION_APPROVE,
            )
        )
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    decided = await approver.DecideApproval(
        pb.DecideApprovalRequest(
            request_id=new_id("req"),
            approval_id=approval.approval_id,
            decision=common_pb2.APPROVAL_DECISION_APPROVE,
            reason="fair for a 3-day delay",
        )
    )
    assert decided.approval.status == pb.APPROVAL_STATUS_DECIDED
    assert decided.approval.decided_by.employee_id == lead
    [_, authorized] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        AUTHORIZED,
        events_pb2.OfferAuthorized,
        key=opened.customer_id,
        count=2,
    )
    assert (authorized.tier, authorized.part) == (
        common_pb2.AUTHORIZATION_TIER_APPROVER,
        common_pb2.AUTHORIZATION_PART_REMAINDER,
    )
    assert (authorized.authorized_by.employee_id, authorized.approval_id) == (lead, approval.approval_id)
    assert authorized.amount.amount_minor == 25000  # the approver's usage is booked for the remainder only
    assert authorized.limits.role == "team_lead"
    lead_usage = await db_fetch(
        escalation.settings,
        "SELECT used_minor FROM authority_usage WHERE employee_id = $1 AND period = 'day'",
        lead,
    )
    assert lead_usage[0]["used_minor"] == 25000
    [decision] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        DECIDED,
        events_pb2.ApprovalDecided,
        key=opened.customer_id,
        count=1,
    )
    assert (decision.decision, decision.reason) == (common_pb2.APPROVAL_DECISION_APPROVE, "fair for a 3-day delay")
    case = (await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
    assert (case.state, case.owner_employee_id) == (pb.CASE_STATE_OFFER_READY, owner)
    assert [(a.part, a.amount.amount_minor) for a in case.current_offer.authorizations] == [
        (common_pb2.AUTHORIZATION_PART_OWNER_SHARE, 5000),
        (common_pb2.AUTHORIZATION_PART_REMAINDER, 25000),
    ]
    assert case.current_offer.authorized_amount.amount_minor == 30000
    assert not case.current_offer.HasField("awaiting_approval")
    # The customer was told as the case moved: waiting for a colleague (by the approval's deadline), then ready.
    told = await read_events(
        escalation.settings.kafka_bootstrap_servers, PROGRESSED, events_pb2.CaseProgressed, key=opened.customer_id,
        count=2,
    )  # fmt: skip
    assert [t.stage for t in told] == [
        common_pb2.PROGRESS_STAGE_AWAITING_APPROVAL,
        common_pb2.PROGRESS_STAGE_OFFER_READY,
    ]
    assert told[0].expected_by == approval.decision_due_at and not told[1].HasField("expected_by")
    assert {(t.case_id, t.owner_employee_id) for t in told} == {(opened.case_id, owner)}


async def test_nobody_approves_their_own_request_not_even_through_a_delegate(escalation, publisher, client):
    team, owner, lead = new_id("team"), new_id("agent"), new_id("lead")
    opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=30000)
    # The team lead asks for approval on the agent's case: the request routes to team leads, including them.
    approval = (
        await client.as_(lead, "team_lead", team).RequestApproval(
            pb.RequestApprovalRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
        )
    ).approval
    assert approval.approver_role == "team_lead"
    with pytest.raises(grpc.aio.AioRpcError) as own:
        await client.as_(lead, "team_lead", team).DecideApproval(
            pb.DecideApprovalRequest(
                request_id=new_id("req"),
                approval_id=approval.approval_id,
                decision=common_pb2.APPROVAL_DECISION_APPROVE,
                reason="mine",
            )
        )
    assert own.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "own request" in own.value.details()
    # Another team lead lends their authority to the owner: the owner still may not decide their own case.
    other_lead = new_id("lead")
    await client.as_(other_lead, "team_lead", team).DelegateAuthority(
        pb.DelegateAuthorityRequest(
            request_id=new_id("req"),
            delegate_employee_id=owner,
            ends_at=time_to_proto(now() + timedelta(hours=1)),
            reason="holiday",
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as via_delegate:
        await client.as_(owner, "agent", team).DecideApproval(
            pb.DecideApprovalRequest(
                request_id=new_id("req"),
                approval_id=approval.approval_id,
                decision=common_pb2.APPROVAL_DECISION_APPROVE,
                reason="mine",
            )
        )
    assert via_delegate.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_two_concurrent_approvals_that_would_break_the_approvers_daily_limit_cannot_both_pass(
    escalation, publisher, client
):
    team = new_id("team")
    approvals = []
    for _ in range(2):
        owner = new_id("agent")
        opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=40000)
        requested = await client.as_(owner, "agent", team).RequestApproval(
            pb.RequestApprovalRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
        )
        assert requested.approval.approver_role == "team_lead"
        approvals.append(requested.approval.approval_id)
    approver = client.as_(TIGHT_LEAD, "team_lead", team)  # 60 000 a day: one 40 000 fits, two do not

    async def decide(approval_id):
        return await approver.DecideApproval(
            pb.DecideApprovalRequest(
                request_id=new_id("req"),
                approval_id=approval_id,
                decision=common_pb2.APPROVAL_DECISION_APPROVE,
                reason="ok",
            )
        )

    results = await asyncio.gather(*(decide(a) for a in approvals), return_exceptions=True)
    passed = [r for r in results if isinstance(r, pb.DecideApprovalResponse)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(passed), len(failed)) == (1, 1), results
    assert failed[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "per-day" in failed[0].details()
    assert violations(failed[0])[0].subject == f"employee/{TIGHT_LEAD}"
    # The one that failed changed nothing: it is still pending, and can still be modified down to what fits.
    still = next(a for a in approvals if a != passed[0].approval.approval_id)
    modified = await approver.DecideApproval(
        pb.DecideApprovalRequest(
            request_id=new_id("req"),
            approval_id=still,
            decision=common_pb2.APPROVAL_DECISION_MODIFY_AND_APPROVE,
            approved_amount=common_pb2.Money(amount_minor=20000, currency="EUR"),
            reason="what my limit allows today",
        )
    )
    assert modified.approval.approved_amount.amount_minor == 20000


async def test_claim_acknowledge_transfer_counting_and_resolve(escalation, publisher, client):
    team = new_id("team")
    opened = case_opened(owner="", team=team, system_detected=True)
    await publish(publisher, OPENED, opened, source="intake")
    first, second = new_id("agent"), new_id("agent")

    async def visible():
        try:
            return await client.as_(first, "agent", team).GetCase(pb.GetCaseRequest(case_id=opened.case_id))
        except grpc.aio.AioRpcError:
            return None

    assert (await eventually(visible, timeout=40)).case.state == pb.CASE_STATE_QUEUED
    with pytest.raises(grpc.aio.AioRpcError) as other_team:
        await client.as_(first, "agent", new_id("team")).ClaimCase(
            pb.ClaimCaseRequest(request_id=new_id("req"), case_id=opened.case_id)
        )
    assert other_team.value.code() == grpc.StatusCode.PERMISSION_DENIED
    claimed = await client.as_(first, "agent", team).ClaimCase(
        pb.ClaimCaseRequest(request_id=new_id("req"), case_id=opened.case_id)
    )
    assert (claimed.case.state, claimed.case.owner_employee_id) == (pb.CASE_STATE_OPEN, first)
    with pytest.raises(grpc.aio.AioRpcError) as not_theirs:
        await client.as_(second, "agent", team).AcknowledgeCase(
            pb.AcknowledgeCaseRequest(request_id=new_id("req"), case_id=opened.case_id)
        )
    assert not_theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED
    acked = await client.as_(first, "agent", team).AcknowledgeCase(
        pb.AcknowledgeCaseRequest(request_id=new_id("req"), case_id=opened.case_id, note="called, apologised")
    )
    assert acked.case.state == pb.CASE_STATE_ACKNOWLEDGED
    assert acked.case.sla.acknowledge.status == pb.SLA_STATUS_MET
    assert acked.case.sla.resolve.status == pb.SLA_STATUS_ON_TRACK
    # Apologising again is allowed: logged as a second apology, the case and its clock do not move.
    again = await client.as_(first, "agent", team).AcknowledgeCase(
        pb.AcknowledgeCaseRequest(
            request_id=new_id("req"),
            case_id=opened.case_id,
            channel=common_pb2.CHANNEL_EMAIL,
            note="wrote to say sorry",
        )
    )
    assert (again.case.state, again.case.acknowledged_at) == (pb.CASE_STATE_ACKNOWLEDGED, acked.case.acknowledged_at)
    assert [(k.kind, k.channel, k.note) for k in again.case.contacts] == [
        (common_pb2.CONTACT_KIND_APOLOGY, common_pb2.CHANNEL_UNSPECIFIED, "called, apologised"),
        (common_pb2.CONTACT_KIND_APOLOGY, common_pb2.CHANNEL_EMAIL, "wrote to say sorry"),
    ]

    holder = first
    for hop in range(3):  # the policy allows 2 transfers; the third flags the case
        target = second if holder == first else first
        moved = await client.as_(holder, "agent", team).TransferCase(
            pb.TransferCaseRequest(
                request_id=new_id("req"), case_id=opened.case_id, to_employee_id=target, reason=f"hand-over {hop}"
            )
        )
        holder = target
    assert (moved.case.transfer_count, moved.case.transfer_limit_exceeded) == (3, True)

    listed = await client.as_(new_id("lead"), "team_lead", team).ListCases(pb.ListCasesRequest(team=team))
    assert [c.case_id for c in listed.cases] == [opened.case_id]
    resolved = await client.as_(holder, "agent", team).ResolveCase(
        pb.ResolveCaseRequest(request_id=new_id("req"), case_id=opened.case_id, resolution_summary="refunded fee")
    )
    assert resolved.case.state == pb.CASE_STATE_RESOLVED
    [event] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        "recovery.case-resolved.v1",
        events_pb2.CaseResolved,
        key=opened.customer_id,
        count=1,
    )
    assert (event.owner_employee_id, event.resolution_number, event.team) == (holder, 1, team)
    reopened = await client.as_(holder, "agent", team).ReopenCase(
        pb.ReopenCaseRequest(request_id=new_id("req"), case_id=opened.case_id, reason="still broken")
    )
    assert (reopened.case.state, reopened.case.owner_employee_id) == (pb.CASE_STATE_REOPENED, holder)


async def test_watch_cases_sends_a_snapshot_then_updates(escalation, publisher, client):
    team, owner = new_id("team"), new_id("agent")
    opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=1000)
    me = client.as_(owner, "agent", team)
    stream = me.WatchCases(pb.WatchCasesRequest(owner_employee_id=owner))
    try:
        first = await asyncio.wait_for(stream.read(), 10)
        assert (first.change, first.case.case_id) == (pb.CASE_CHANGE_SNAPSHOT, opened.case_id)
        await me.AuthorizeOffer(
            pb.AuthorizeOfferRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
        )
        update = await asyncio.wait_for(stream.read(), 10)
        assert (update.change, update.case.state) == (pb.CASE_CHANGE_UPDATED, pb.CASE_STATE_OFFER_READY)
    finally:
        stream.cancel()


async def test_the_runtime_role_cannot_change_the_audit_trail(escalation, publisher, client):
    team, owner = new_id("team"), new_id("agent")
    opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=1000)
    await client.as_(owner, "agent", team).AuthorizeOffer(
        pb.AuthorizeOfferRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
    )
    schema = escalation.settings.schema
    role = f"esc_runtime_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(escalation.settings.database_url)
    try:
        await conn.execute(f"CREATE ROLE {role} NOLOGIN")
        await conn.execute(f"SELECT {schema}.grant_runtime_role($1, $2)", schema, role)
        await conn.execute(f"SET search_path TO {schema}")
        entries = await conn.fetch("SELECT * FROM audit_log WHERE case_id = $1", opened.case_id)
        authorised = next(e for e in entries if e["action"] == "offer_authorized")
        assert (authorised["actor_employee_id"], authorised["actor_role"], authorised["amount_minor"]) == (
            owner,
            "agent",
            1000,
        )
        assert json.loads(authorised["limits"])["perCaseLimit"]["amountMinor"] == "5000"
        assert authorised["policy_version"] == "2026-12-02.2"

        async def as_runtime(sql: str, *args):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {role}")
                return await conn.execute(sql, *args)

        # What the service does works under the runtime role: append to the trail, change a case.
        await as_runtime(
            "INSERT INTO audit_log (case_id, action, actor_kind, actor_employee_id, actor_role, actor_team, "
            "policy_version, occurred_at) VALUES ($1, 'amended', 'system', '', 'system', '', 'x', now())",
            opened.case_id,
        )
        await as_runtime("UPDATE cases SET updated_at = now() WHERE case_id = $1", opened.case_id)
        for sql in (
            "UPDATE audit_log SET reason = 'nothing happened' WHERE case_id = $1",
            "DELETE FROM audit_log WHERE case_id = $1",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await as_runtime(sql, opened.case_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_runtime("TRUNCATE audit_log")
        # Even a role wrongly granted everything cannot rewrite history: the trigger refuses it.
        await conn.execute(f"GRANT ALL ON audit_log TO {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await as_runtime("UPDATE audit_log SET reason = 'nothing happened' WHERE case_id = $1", opened.case_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await as_runtime("DELETE FROM audit_log WHERE case_id = $1", opened.case_id)
        assert len(await conn.fetch("SELECT 1 FROM audit_log WHERE case_id = $1", opened.case_id)) == len(entries) + 1
    finally:
        await conn.execute("RESET search_path")
        await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}")
        await conn.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}")
        await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_the_resolve_clock_pauses_while_waiting_on_the_customer_and_a_counter_goes_to_compensation(
    escalation, publisher, client
):
    team, owner = new_id("team"), new_id("agent")
    opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=1500)
    me = client.as_(owner, "agent", team)
    ready = await me.AuthorizeOffer(
        pb.AuthorizeOfferRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
    )
    deadline = ready.case.sla.resolve.deadline_at.ToDatetime()
    waiting = await me.PresentOffer(
        pb.PresentOfferRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
    )
    assert waiting.case.state == pb.CASE_STATE_WAITING_ON_CUSTOMER
    assert waiting.case.sla.resolve.status == pb.SLA_STATUS_PAUSED
    pending = await db_fetch(
        escalation.settings,
        "SELECT kind FROM timers WHERE case_id = $1 AND clock = 'resolve' AND status = 'pending'",
        opened.case_id,
    )
    assert pending == []  # a paused clock has no timers to fire
    await asyncio.sleep(1.0)
    counter = common_pb2.CustomerRequest(remedy_kind=common_pb2.REMEDY_KIND_REFUND, text="I want my money back")
    answered = await me.RecordCustomerDecision(
        pb.RecordCustomerDecisionRequest(
            request_id=new_id("req"),
            case_id=opened.case_id,
            offer_id=offer.offer_id,
            decision=common_pb2.CUSTOMER_DECISION_COUNTERED,
            counter_request=counter,
        )
    )
    resumed = answered.case.sla.resolve
    assert resumed.status == pb.SLA_STATUS_ON_TRACK
    assert resumed.paused.ToTimedelta() >= timedelta(seconds=1)
    assert resumed.deadline_at.ToDatetime() - deadline >= timedelta(seconds=1)  # moved out by the time paused
    [countered] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        "recovery.customer-countered.v1",
        events_pb2.CustomerCountered,
        key=opened.customer_id,
        count=1,
    )
    assert (countered.offer_id, countered.request.text) == (offer.offer_id, "I want my money back")
    assert countered.recorded_by.employee_id == owner


async def test_an_offer_that_arrives_before_its_case_is_applied_when_the_case_opens(escalation, publisher, client):
    team, owner = new_id("team"), new_id("agent")
    opened = case_opened(owner=owner, team=team)
    offer = offer_for(opened, (VOUCHER, 1200))
    await publish(publisher, OFFERS, offer, source="compensation")

    async def parked():
        return await db_fetch(escalation.settings, "SELECT 1 FROM early_events WHERE case_id = $1", opened.case_id)

    await eventually(parked, timeout=40)
    await publish(publisher, OPENED, opened, source="intake")
    me = client.as_(owner, "agent", team)

    async def with_offer():
        try:
            got = await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))
        except grpc.aio.AioRpcError:
            return None
        return got.case if got.case.current_offer.offer_id == offer.offer_id else None

    case = await eventually(with_offer, timeout=40)
    assert case.state == pb.CASE_STATE_OFFER_PENDING
    assert await parked() == []


async def test_a_request_id_reused_with_other_parameters_is_refused_and_others_cases_are_invisible(
    escalation, publisher, client
):
    team, owner = new_id("team"), new_id("agent")
    opened, _, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=1000)
    me = client.as_(owner, "agent", team)
    request_id = new_id("req")
    await me.AcknowledgeCase(pb.AcknowledgeCaseRequest(request_id=request_id, case_id=opened.case_id, note="sorry"))
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await me.AcknowledgeCase(pb.AcknowledgeCaseRequest(request_id=request_id, case_id=opened.case_id, note="x"))
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    for stranger in (client.as_(new_id("agent"), "agent", team), client.as_(new_id("lead"), "team_lead", "other")):
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await stranger.GetCase(pb.GetCaseRequest(case_id=opened.case_id))
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await client.as_(new_id("agent"), "agent", team).ListCases(pb.ListCasesRequest(team=team))
    assert opened.case_id not in [c.case_id for c in listed.cases]


def scrape(escalation: Escalation, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{escalation.endpoints.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_business_metrics_are_served(escalation, publisher, client):
    team, owner = new_id("team"), new_id("agent")
    opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=1000)
    before = scrape(escalation, "recovery_escalation_authorizations_total", tier="owner")
    await client.as_(owner, "agent", team).AuthorizeOffer(
        pb.AuthorizeOfferRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
    )
    assert scrape(escalation, "recovery_escalation_authorizations_total", tier="owner") == before + 1

    async def gauged():
        return scrape(escalation, "recovery_escalation_cases", state="offer_ready") >= 1

    await eventually(gauged, timeout=10)
    acknowledged = scrape(escalation, "recovery_escalation_time_to_acknowledge_seconds_count")
    await client.as_(owner, "agent", team).AcknowledgeCase(
        pb.AcknowledgeCaseRequest(request_id=new_id("req"), case_id=opened.case_id)
    )
    assert scrape(escalation, "recovery_escalation_time_to_acknowledge_seconds_count") == acknowledged + 1


async def test_an_employee_at_capacity_cannot_take_more_cases(escalation, publisher, client):
    team = new_id("team")
    await opened_with_offer(publisher, client, owner=BUSY_AGENT, team=team, amount=100)  # their one open case
    queued = case_opened(owner="", team=team, system_detected=True)
    await publish(publisher, OPENED, queued, source="intake")
    busy = client.as_(BUSY_AGENT, "agent", team)

    async def visible():
        try:
            return await busy.GetCase(pb.GetCaseRequest(case_id=queued.case_id))
        except grpc.aio.AioRpcError:
            return None

    await eventually(visible, timeout=40)
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await busy.ClaimCase(pb.ClaimCaseRequest(request_id=new_id("req"), case_id=queued.case_id))
    assert full.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert violations(full.value)[0].type == "CAPACITY"
    # Intake gives reporters their own cases whatever their load: the view shows who is overloaded.
    _, _, second = await opened_with_offer(publisher, client, owner=BUSY_AGENT, team=team, amount=100)
    assert (second.owner_open_cases, second.owner_overloaded) == (2, True)

    async def overloaded():
        return scrape(escalation, "recovery_escalation_overloaded_employees") >= 1

    await eventually(overloaded, timeout=10)


async def test_a_colleague_whose_report_merged_may_open_the_case_and_the_owner_sees_them(escalation, publisher, client):
    team, owner, colleague = new_id("team"), new_id("agent"), new_id("agent")
    opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=100)
    other_team = client.as_(colleague, "agent", new_id("team"))
    with pytest.raises(grpc.aio.AioRpcError) as before:
        await other_team.GetCase(pb.GetCaseRequest(case_id=opened.case_id))
    assert before.value.code() == grpc.StatusCode.NOT_FOUND
    merged = new_id("fail")
    amended = events_pb2.CaseAmended(
        customer_id=opened.customer_id,
        case_id=opened.case_id,
        revision=2,
        merged_failure_id=merged,
        merged_failure=events_pb2.FailureReported(customer_id=opened.customer_id, reported_by_employee_id=colleague),
        failure_ids=[*opened.failure_ids, merged],
        category=opened.category,
        classification=opened.classification,
    )
    await publish(publisher, "recovery.case-amended.v1", amended, source="intake")

    async def seen_by_the_owner():
        case = (await client.as_(owner, "agent", team).GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
        return case if case.reporters else None

    case = await eventually(seen_by_the_owner, timeout=40)
    assert [(r.employee_id, r.failure_id) for r in case.reporters] == [(colleague, merged)]
    assert case.owner_employee_id == owner  # the owner stays the customer's contact
    assert any(f"reported by {colleague} too" in e.detail for e in case.decision_history)
    theirs = (await other_team.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
    assert theirs.case_id == opened.case_id
    with pytest.raises(grpc.aio.AioRpcError) as acting:  # seeing is not acting: only the owner uses authority
        await other_team.AuthorizeOffer(
            pb.AuthorizeOfferRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
        )
    assert acting.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stranger = client.as_(new_id("agent"), "agent", new_id("team"))
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stranger.GetCase(pb.GetCaseRequest(case_id=opened.case_id))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    # She is a contact on the case (she heard from the customer), and the owner is told so on contact-recorded.
    assert [(k.kind, k.employee_id) for k in theirs.contacts] == [(common_pb2.CONTACT_KIND_REPORT, colleague)]
    [heard] = await read_events(
        escalation.settings.kafka_bootstrap_servers, CONTACTS, events_pb2.ContactRecorded, key=opened.customer_id,
        count=1,
    )  # fmt: skip
    assert (heard.owner_employee_id, heard.contact.employee_id) == (owner, colleague)
    assert heard.contact.kind == common_pb2.CONTACT_KIND_REPORT
    # She may log her own call back to the customer; a stranger may not.
    called = await other_team.RecordContact(
        pb.RecordContactRequest(
            request_id=new_id("req"), case_id=opened.case_id, kind=common_pb2.CONTACT_KIND_CALL,
            outcome=common_pb2.CONTACT_OUTCOME_REACHED, note="called back, all clear",
        )
    )  # fmt: skip
    assert (called.contact.employee_id, called.contact.channel) == (colleague, common_pb2.CHANNEL_PHONE)
    with pytest.raises(grpc.aio.AioRpcError) as not_theirs:
        await stranger.RecordContact(
            pb.RecordContactRequest(request_id=new_id("req"), case_id=opened.case_id, kind=common_pb2.CONTACT_KIND_CALL)
        )
    assert not_theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_contact_log_keeps_every_apology_call_and_note_and_refuses_bad_ones(escalation, publisher, client):
    team, owner = new_id("team"), new_id("agent")
    opened, _, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=100)
    me = client.as_(owner, "agent", team)
    for note in ("sorry on the phone", "sorry again the next day"):
        await me.AcknowledgeCase(
            pb.AcknowledgeCaseRequest(
                request_id=new_id("req"), case_id=opened.case_id, channel=common_pb2.CHANNEL_PHONE, note=note
            )
        )
    logged = await me.RecordContact(
        pb.RecordContactRequest(
            request_id=new_id("req"), case_id=opened.case_id, kind=common_pb2.CONTACT_KIND_CALL,
            outcome=common_pb2.CONTACT_OUTCOME_NO_ANSWER, note="no answer at 10:00",
        )
    )  # fmt: skip
    before = [(k.contact_id, k.kind, k.outcome) for k in logged.case.contacts]
    assert [(kind, outcome) for _, kind, outcome in before] == [
        (common_pb2.CONTACT_KIND_APOLOGY, common_pb2.CONTACT_OUTCOME_REACHED),
        (common_pb2.CONTACT_KIND_APOLOGY, common_pb2.CONTACT_OUTCOME_REACHED),
        (common_pb2.CONTACT_KIND_CALL, common_pb2.CONTACT_OUTCOME_NO_ANSWER),
    ]
    # Bad input names the field and the value, and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await me.RecordContact(
            pb.RecordContactRequest(
                request_id=new_id("req"), case_id=opened.case_id, kind=common_pb2.CONTACT_KIND_MESSAGE, note="x" * 2001
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "channel" in bad.value.details() and "2,001 characters" in bad.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as no_kind:
        await me.RecordContact(pb.RecordContactRequest(request_id=new_id("req"), case_id=opened.case_id))
    assert no_kind.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "kind" in no_kind.value.details()
    after = (await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
    assert [(k.contact_id, k.kind, k.outcome) for k in after.contacts] == before
    recorded = await read_events(
        escalation.settings.kafka_bootstrap_servers, CONTACTS, events_pb2.ContactRecorded, key=opened.customer_id,
        count=3,
    )  # fmt: skip
    assert [r.contact.contact_id for r in recorded] == [contact_id for contact_id, _, _ in before]
    # The first apology is news for the customer ("we are on it"); the second is not.
    [told] = await read_events(
        escalation.settings.kafka_bootstrap_servers, PROGRESSED, events_pb2.CaseProgressed, key=opened.customer_id,
        count=1, settle=1.0,
    )  # fmt: skip
    assert told.stage == common_pb2.PROGRESS_STAGE_ACKNOWLEDGED


async def test_amendments_update_the_case_and_followup_can_reopen_a_resolved_one(escalation, publisher, client):
    team, owner = new_id("team"), new_id("agent")
    opened, _, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=100)
    merged = new_id("fail")
    amended = events_pb2.CaseAmended(
        customer_id=opened.customer_id,
        case_id=opened.case_id,
        revision=2,
        merged_failure_id=merged,
        failure_ids=[*opened.failure_ids, merged],
        category=opened.category,
        classification=common_pb2.Classification(
            severity=common_pb2.SeverityAssessment(severity=common_pb2.SEVERITY_MAJOR),
            outlook=common_pb2.OutlookAssessment(outlook=common_pb2.OUTLOOK_AT_RISK),
        ),
    )
    await publish(publisher, "recovery.case-amended.v1", amended, source="intake")
    me = client.as_(owner, "agent", team)

    async def amended_view():
        case = (await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
        return case if len(case.failure_ids) == 2 else None

    case = await eventually(amended_view, timeout=40)
    assert case.classification.severity.severity == common_pb2.SEVERITY_MAJOR
    assert pb.CASE_ACTION_AMENDED in [e.action for e in case.decision_history]

    await me.ResolveCase(pb.ResolveCaseRequest(request_id=new_id("req"), case_id=opened.case_id))
    followup_id = new_id("fu")
    await publish(
        publisher,
        "recovery.case-reopen-requested.v1",
        events_pb2.CaseReopenRequested(
            customer_id=opened.customer_id, case_id=opened.case_id, followup_id=followup_id, reason="not satisfied"
        ),
        source="followup",
    )
    [reopened] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        "recovery.case-reopened.v1",
        events_pb2.CaseReopened,
        key=opened.customer_id,
        count=1,
    )
    assert (reopened.followup_id, reopened.owner_employee_id) == (followup_id, owner)
    assert reopened.reopened_by.kind == common_pb2.ACTOR_KIND_SYSTEM
    case = (await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
    assert (case.state, case.sla.resolve.status) == (pb.CASE_STATE_REOPENED, pb.SLA_STATUS_ON_TRACK)


async def test_the_owner_adjusts_the_offer_audited_with_who_and_why_and_bad_adjustments_change_nothing(
    escalation, publisher, client
):
    team, owner = new_id("team"), new_id("agent")
    opened, offer, _ = await opened_with_offer(publisher, client, owner=owner, team=team, amount=1000)
    me = client.as_(owner, "agent", team)
    flowers = common_pb2.PersonalGesture(
        description="a bouquet of flowers",
        amount=common_pb2.Money(amount_minor=1500, currency="EUR"),
        reason="birthday",
    )
    taxi = common_pb2.CostItem(
        kind=common_pb2.COST_KIND_TAXI, amount=common_pb2.Money(amount_minor=900, currency="EUR")
    )
    adjusted = await me.AdjustOffer(
        pb.AdjustOfferRequest(
            request_id=new_id("req"),
            case_id=opened.case_id,
            offer_id=offer.offer_id,
            adjustment=common_pb2.OfferAdjustment(
                swaps=[common_pb2.RemedySwap(from_kind=VOUCHER, to_kind=common_pb2.REMEDY_KIND_ACCOUNT_CREDIT)],
                gestures=[flowers],
                late_costs=[taxi],
            ),
            reason="the customer prefers credit; it was her birthday; she took a taxi too",
        )
    )
    entry = adjusted.case.decision_history[-1]
    assert (entry.action, entry.actor.employee_id, entry.offer_id) == (
        pb.CASE_ACTION_OFFER_ADJUSTED,
        owner,
        offer.offer_id,
    )
    assert entry.reason.startswith("the customer prefers credit")
    assert "swap voucher -> account_credit; gesture 'a bouquet of flowers' 1500 EUR: birthday" in entry.detail
    [event] = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        "recovery.offer-adjusted.v1",
        events_pb2.OfferAdjusted,
        key=opened.customer_id,
        count=1,
    )
    assert (event.adjustment_id, event.offer_id, event.adjusted_by.employee_id) == (
        adjusted.adjustment_id,
        offer.offer_id,
        owner,
    )
    assert event.adjustment.gestures[0].employee_id == owner  # signed by who added it
    assert list(event.adjustment.late_costs) == [taxi]

    def request(**changes):
        base = {"request_id": new_id("req"), "case_id": opened.case_id, "offer_id": offer.offer_id, "reason": "x"}
        return pb.AdjustOfferRequest(**(base | changes))

    no_reason = common_pb2.PersonalGesture(
        description="wine", amount=common_pb2.Money(amount_minor=800, currency="EUR")
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await me.AdjustOffer(request(adjustment=common_pb2.OfferAdjustment(gestures=[no_reason])))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "adjustment.gestures[0].reason" in bad.value.details()
    huge = common_pb2.PersonalGesture(
        description="a car", amount=common_pb2.Money(amount_minor=10_000_000, currency="EUR"), reason="why not"
    )
    with pytest.raises(grpc.aio.AioRpcError) as above:
        await me.AdjustOffer(request(adjustment=common_pb2.OfferAdjustment(gestures=[huge])))
    assert above.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert violations(above.value)[0].type == "LIMIT"
    with pytest.raises(grpc.aio.AioRpcError) as stranger:
        await client.as_(new_id("agent"), "agent", new_id("team")).AdjustOffer(
            request(adjustment=common_pb2.OfferAdjustment(gestures=[flowers]))
        )
    assert stranger.value.code() == grpc.StatusCode.PERMISSION_DENIED
    after = (await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))).case
    assert [e.action for e in after.decision_history].count(pb.CASE_ACTION_OFFER_ADJUSTED) == 1  # nothing else
    got = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        "recovery.offer-adjusted.v1",
        events_pb2.OfferAdjusted,
        key=opened.customer_id,
        count=1,
        settle=1.0,
    )
    assert len(got) == 1
