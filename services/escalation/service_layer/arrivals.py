"""Escalation's handlers for what arrives from Kafka: cases opened and amended, offers proposed, reopen requests.

Decisions the issue left open (see the report): an offer within the owner's limits is authorised at once by
the owner's authority; the ``system`` actor authorises at once system-detected failures within the policy's
automation limit; anything else waits in offer pending for the owner to send it up.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import asyncpg
from recovery.events.v1 import events_pb2

from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.domain import authority, lifecycle, sla
from services.escalation.domain import commands as c
from services.escalation.domain.errors import (
    FieldViolation,
    InvalidCommand,
)
from services.escalation.domain.model import (
    Actor,
    Case,
    CaseAction,
    CaseState,
    SlaClock,
)
from services.escalation.service_layer import steps

log = logging.getLogger(__name__)


async def open_case(conn: asyncpg.Connection, command: c.OpenCase, *, facts: bytes, deps: steps.Deps) -> bool:
    """Create the case (queued without an owner, open with the reporter as owner) and start its SLA clocks.

    Returns False for a case already known. Events that arrived before it are applied afterwards.
    """
    now = deps.clock()
    await steps.serialise_arrival(conn, command.case_id)
    case = Case(
        case_id=command.case_id,
        customer_id=command.customer_id,
        state=CaseState.OPEN if command.owner_employee_id else CaseState.QUEUED,
        owner_employee_id=command.owner_employee_id,
        team=command.team,
        severity=command.severity,
        outlook=command.outlook,
        system_detected=command.system_detected,
        owner_role=command.owner_role,
        opened_at=command.opened_at,
    )
    if not await repo.insert_case(conn, case, facts=facts, now=now):
        return False
    for clock in (SlaClock.ACKNOWLEDGE, SlaClock.RESOLVE):
        # Counted from when intake opened the case, not from when this consumer got to it.
        await steps.start_clock(conn, deps, case, clock, command.opened_at)
    await steps.audit(
        conn,
        deps,
        before=None,
        after=case,
        action=CaseAction.OPENED,
        actor=Actor.system(),
        at=now,
        detail=f"owner {case.owner_employee_id or '(queued)'}, team {case.team}",
    )
    for kind, payload in await repo.take_parked_events(conn, case.case_id):
        if kind == "offer":
            message = events_pb2.OfferProposed.FromString(payload)
            await receive_offer(conn, wire.offer_from_event(message, at=now), message=payload, deps=deps)
        else:
            message = events_pb2.CaseAmended.FromString(payload)
            await amend_case(conn, wire.amend_from_event(message), message=message, deps=deps)
    return True


async def amend_case(
    conn: asyncpg.Connection, command: c.AmendCase, *, message: events_pb2.CaseAmended, deps: steps.Deps
) -> None:
    """Apply intake's amendment: new facts and classification; running SLA clocks get the new budget."""
    now = deps.clock()
    await steps.serialise_arrival(conn, command.case_id)
    record = await repo.get_case(conn, command.case_id, lock=True)
    if record is None:
        await repo.park_event(conn, command.case_id, "amendment", message.SerializeToString(), now)
        return
    if command.revision <= record.facts_revision:
        return  # stale or repeated amendment: the snapshot we hold is as new
    before = record.case
    after = replace(before, severity=command.severity, outlook=command.outlook, system_detected=command.system_detected)
    await repo.save_facts(
        conn, before.case_id, facts=wire.amended_facts(record.facts, message), revision=command.revision
    )
    policy = deps.policy()
    calendar = policy.calendar_for(after.team)
    for clock in (await repo.get_clocks(conn, before.case_id)).values():
        if clock.status not in sla.RUNNING:
            continue
        budget = policy.sla_budget(clock.clock, after.severity, after.outlook)
        # Business time paused so far is added back, so the clock keeps its pauses with the new budget.
        moved = replace(
            clock,
            budget=budget,
            deadline_at=calendar.add(clock.started_at, budget + clock.paused),
            warn_at=calendar.add(clock.started_at, sla.warn_span(budget, policy.warn_share_bp) + clock.paused),
        )
        await steps.save_clock(conn, before.case_id, moved)
    await steps.save_and_audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.AMENDED,
        actor=Actor.system(),
        at=now,
        detail=f"revision {command.revision}: failure {message.merged_failure_id} merged",
    )


async def receive_offer(conn: asyncpg.Connection, command: c.ReceiveOffer, *, message: bytes, deps: steps.Deps) -> None:
    """Make the offer the case's current one when it is the highest version; the system authorises it at once
    when automatic recovery covers it."""
    now = deps.clock()
    await steps.serialise_arrival(conn, command.case_id)
    record = await repo.get_case(conn, command.case_id, lock=True)
    if record is None:
        await repo.park_event(conn, command.case_id, "offer", message, now)
        return
    offer = command.offer
    if not await repo.insert_offer(conn, command.case_id, offer, message=message, proposed_at=command.proposed_at):
        return  # this offer (or another with its version) is already known
    if await repo.highest_offer_version(conn, command.case_id) > offer.version:
        log.info(
            "offer %s v%d is older than the case's current offer; kept, not current", offer.offer_id, offer.version
        )
        return
    before = record.case
    if before.state is CaseState.RESOLVED:
        log.warning("offer %s arrived for resolved case %s; kept, not current", offer.offer_id, before.case_id)
        return
    transition = lifecycle.apply(before, c.ProposeOffer(offer_id=offer.offer_id), now)
    if before.current_offer_id:
        await steps.release_superseded(conn, deps, before.current_offer_id)
    after = replace(transition.case, current_offer_id=offer.offer_id, pending_approval_id="")
    for approval_id in await repo.cancel_pending_approvals(conn, before.case_id):
        log.info("approval %s cancelled: offer superseded by %s", approval_id, offer.offer_id)
        await repo.set_timers(conn, before.case_id, SlaClock.APPROVAL, [])
    if before.state is CaseState.WAITING_ON_CUSTOMER:
        calendar = deps.policy().calendar_for(before.team)
        await steps.each_clock(conn, before.case_id, lambda k: sla.resume(k, calendar, now))
    await steps.save_and_audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.OFFER_PROPOSED,
        actor=Actor.system(),
        at=now,
        amount=offer.total,
        offer_id=offer.offer_id,
        detail=f"version {offer.version}",
    )
    policy = deps.policy()
    if authority.system_may_authorise(policy, system_detected=after.system_detected, offer=offer):
        await steps.system_authorize(conn, deps, case=after, offer_id=offer.offer_id, now=now)
    else:
        await steps.owner_authorize_at_once(conn, deps, case=after, now=now)


async def request_reopen(conn: asyncpg.Connection, command: c.RequestReopen, *, deps: steps.Deps) -> None:
    """Reopen the case at followup's request (the customer was not satisfied); a case not resolved stays as it is."""
    record = await repo.get_case(conn, command.case_id, lock=True)
    if record is None:
        raise InvalidCommand.of(FieldViolation("case_id", f"unknown case {command.case_id}"))
    if record.case.state is not CaseState.RESOLVED:
        log.info("reopen of case %s requested while %s: nothing to do", command.case_id, record.case.state.value)
        return
    await steps.reopen(conn, deps, record, by=Actor.system(), reason=command.reason, followup_id=command.followup_id)
