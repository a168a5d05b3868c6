"""Durable timers: an SLA deadline that passes while the service is stopped fires once after restart, with
the SlaBreached event compensation needs; an approval not decided in time goes one tier up."""

from __future__ import annotations

import asyncio

import pytest
from recovery.escalation.v1 import escalation_pb2 as pb
from recovery.events.v1 import common_pb2, events_pb2

from services.escalation import bootstrap
from tests.integration.conftest import eventually
from tests.integration.escalation.conftest import (
    OFFERS,
    OPENED,
    Client,
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

BREACHED = "recovery.sla-breached.v1"
REQUESTED = "recovery.approval-requested.v1"


@pytest.fixture(scope="module")
def settings(stack, tmp_path_factory):
    # Acknowledge within 20 s (time for the consumer to join and the service to stop before the deadline),
    # decide approvals within 3 s; resolving has hours.
    text = policy_text(ack="20s", approval="3s")
    return escalation_settings(stack, tmp_path_factory.mktemp("escalation-timers"), text)


async def test_a_deadline_missed_while_stopped_fires_once_after_restart(settings, publisher):
    team, owner = new_id("team"), new_id("agent")
    opened = case_opened(owner=owner, team=team)
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS):
        await publish(publisher, OPENED, opened, source="intake")

        async def timers_pending():
            return await db_fetch(
                settings,
                "SELECT * FROM timers WHERE case_id = $1 AND status = 'pending' AND clock = 'acknowledge' "
                "AND kind = 'breach'",
                opened.case_id,
            )

        [breach] = await eventually(timers_pending, timeout=40)
    stopped_at = now()
    assert breach["due_at"] > stopped_at, "the service must stop before the deadline for this test to mean anything"
    await asyncio.sleep((breach["due_at"] - stopped_at).total_seconds() + 1)
    assert [
        r["status"]
        for r in await db_fetch(settings, "SELECT status FROM timers WHERE timer_id = $1", breach["timer_id"])
    ] == ["pending"]  # nobody fired it meanwhile

    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS):
        breaches = await read_events(
            settings.kafka_bootstrap_servers,
            BREACHED,
            events_pb2.SlaBreached,
            key=opened.customer_id,
            count=1,
            settle=3.0,
        )
        [fired] = await db_fetch(settings, "SELECT * FROM timers WHERE timer_id = $1", breach["timer_id"])
    assert len(breaches) == 1  # once, although both the warning and the breach came due while stopped
    assert fired["status"] == "fired" and fired["fired_at"] > stopped_at
    [event] = breaches
    assert event.case_id == opened.case_id
    assert event.clock == common_pb2.SLA_CLOCK_ACKNOWLEDGE
    assert event.deadline_at.ToDatetime().replace(tzinfo=None) == breach["due_at"].replace(tzinfo=None)
    assert event.breached_at.ToDatetime() >= event.deadline_at.ToDatetime()
    assert (event.severity, event.outlook) == (common_pb2.SEVERITY_MODERATE, common_pb2.OUTLOOK_RECOVERABLE)
    assert (event.owner_employee_id, event.team) == (owner, team)
    assert event.escalated_to_role == "senior_agent"  # raised one tier above the frontline for attention
    [case] = await db_fetch(settings, "SELECT * FROM cases WHERE case_id = $1", opened.case_id)
    assert case["state"] == "open"  # a breach raises attention; the owner stays the owner
    assert (case["sla_breach_count"], case["attention_role"]) == (1, "senior_agent")
    actions = [
        r["action"]
        for r in await db_fetch(
            settings, "SELECT action FROM audit_log WHERE case_id = $1 ORDER BY entry_id", opened.case_id
        )
    ]
    assert actions == ["opened", "sla_warned", "sla_breached"]


async def test_an_approval_not_decided_in_time_goes_one_tier_up(settings, publisher):
    team, owner = new_id("team"), new_id("agent")
    opened = case_opened(owner=owner, team=team)
    offer = offer_for(opened, (common_pb2.REMEDY_KIND_VOUCHER, 30000))
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        await publish(publisher, OPENED, opened, source="intake")
        await publish(publisher, OFFERS, offer, source="compensation")
        async with channel(endpoints.grpc_port) as ch:
            me = Client(settings, ch).as_(owner, "agent", team)

            async def offered():
                got = await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))
                return got.case.current_offer.offer_id == offer.offer_id

            # The case may not exist yet (NOT_FOUND) while the consumer catches up.
            async def offered_or_none():
                try:
                    return await offered()
                except Exception:
                    return False

            await eventually(offered_or_none, timeout=40)
            await me.AcknowledgeCase(pb.AcknowledgeCaseRequest(request_id=new_id("req"), case_id=opened.case_id))
            requested = await me.RequestApproval(
                pb.RequestApprovalRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
            )
            events = await read_events(
                settings.kafka_bootstrap_servers,
                REQUESTED,
                events_pb2.ApprovalRequested,
                key=opened.customer_id,
                count=2,
            )
    first, overdue = events[0], events[1]
    assert (first.approver_role, first.escalation_level) == ("team_lead", 0)
    assert (overdue.approval_id, overdue.approver_role, overdue.escalation_level) == (
        requested.approval.approval_id,
        "manager",
        1,
    )
    assert common_pb2.APPROVAL_REASON_DECISION_OVERDUE in overdue.reasons
    assert overdue.decision_due_at.ToDatetime() > first.decision_due_at.ToDatetime()
    approval_breaches = [
        e
        for e in await read_events(
            settings.kafka_bootstrap_servers, BREACHED, events_pb2.SlaBreached, key=opened.customer_id, count=1
        )
        if e.clock == common_pb2.SLA_CLOCK_APPROVAL
    ]
    assert approval_breaches[0].approval_id == requested.approval.approval_id
    assert approval_breaches[0].escalated_to_role == "manager"


async def test_an_approval_rerouted_by_its_deadline_stays_rerouted_across_a_requote(settings, publisher):
    team, owner = new_id("team"), new_id("agent")
    opened = case_opened(owner=owner, team=team, owner_role="agent")
    offer = offer_for(opened, (common_pb2.REMEDY_KIND_VOUCHER, 30000))
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        await publish(publisher, OPENED, opened, source="intake")
        await publish(publisher, OFFERS, offer, source="compensation")
        async with channel(endpoints.grpc_port) as ch:
            me = Client(settings, ch).as_(owner, "agent", team)

            async def offered():
                try:
                    got = await me.GetCase(pb.GetCaseRequest(case_id=opened.case_id))
                except Exception:
                    return False
                return got.case.current_offer.offer_id == offer.offer_id

            await eventually(offered, timeout=40)
            requested = await me.RequestApproval(
                pb.RequestApprovalRequest(request_id=new_id("req"), case_id=opened.case_id, offer_id=offer.offer_id)
            )
            # The team lead misses the 3 s deadline: the request goes to the manager.
            await read_events(
                settings.kafka_bootstrap_servers, REQUESTED, events_pb2.ApprovalRequested, key=opened.customer_id,
                count=2,
            )  # fmt: skip
            # An SLA breach makes compensation re-quote (here published by hand): the request follows the new offer.
            requote = offer_for(opened, (common_pb2.REMEDY_KIND_VOUCHER, 27500), version=2)
            await publish(publisher, OFFERS, requote, source="compensation")

            async def followed():
                found = await read_events(
                    settings.kafka_bootstrap_servers, REQUESTED, events_pb2.ApprovalRequested,
                    key=opened.customer_id, count=2,
                )  # fmt: skip
                return [e for e in found if e.offer_version == 2]

            [moved] = await eventually(followed, timeout=40)
            [row] = await db_fetch(settings, "SELECT * FROM approvals WHERE case_id = $1", opened.case_id)
    assert moved.approval_id == requested.approval.approval_id
    # 275 EUR alone would go to a team lead; the request keeps the tier its deadline raised it to (or higher).
    assert moved.approver_role in ("manager", "director") and moved.escalation_level >= 1
    assert (row["status"], row["offer_id"], row["amount_minor"]) == ("pending", requote.offer_id, 27500)
    assert row["approver_role"] in ("manager", "director")
    actions = [
        r["action"]
        for r in await db_fetch(
            settings, "SELECT action FROM audit_log WHERE case_id = $1 ORDER BY entry_id", opened.case_id
        )
    ]
    assert "approval_requested" in actions[actions.index("offer_proposed", 1) :]  # the move is audited
