"""Escalation's handlers for the frontline's work on a case: claim, acknowledge, transfer, present the offer,
record the customer's answer, resolve and reopen."""

from __future__ import annotations

import logging
from dataclasses import replace

import asyncpg
from recovery.events.v1 import common_pb2

from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.domain import access, adjustments, authority, contacts, lifecycle, sla
from services.escalation.domain import commands as c
from services.escalation.domain.errors import (
    FieldViolation,
    Forbidden,
    InvalidCommand,
)
from services.escalation.domain.model import (
    Actor,
    Case,
    CaseAction,
    CaseState,
    Channel,
    Contact,
    ContactKind,
    ContactOutcome,
    CustomerDecision,
    OfferAdjustment,
    OfferStatus,
    SlaClock,
)
from services.escalation.service_layer import steps

log = logging.getLogger(__name__)


async def claim_case(conn: asyncpg.Connection, *, case_id: str, by: Actor, deps: steps.Deps) -> Case:
    """Make ``by`` the owner of a queued case of their team; returns the case."""
    now = deps.clock()
    before = (await steps.locked_case(conn, case_id)).case
    access.require_claim(before, by)
    authorized = False
    if before.current_offer_id:
        authorized = (await steps.load_offer(conn, before.current_offer_id)).offer.status is OfferStatus.AUTHORIZED
    after = lifecycle.apply(before, c.ClaimCase(by=by, offer_authorized=authorized), now).case
    await steps.require_capacity(conn, deps, by.employee_id)
    await steps.save_and_audit(conn, deps, before=before, after=after, action=CaseAction.CLAIMED, actor=by, at=now)
    return await steps.owner_authorize_at_once(conn, deps, case=after, now=now)


async def acknowledge_case(
    conn: asyncpg.Connection, *, case_id: str, by: Actor, channel: Channel | None, note: str, deps: steps.Deps
) -> Case:
    """Record the acknowledgement and apology, an apology in the contact log each time; the first stops the
    acknowledge clock and moves the case on. Returns the case."""
    now = deps.clock()
    before = (await steps.locked_case(conn, case_id)).case
    access.require_act(before, by)
    transition = lifecycle.apply(before, c.AcknowledgeCase(by=by), now)
    after = transition.case
    apology = contacts.contact(
        before, contact_id=deps.new_id(), kind=ContactKind.APOLOGY, channel=channel,
        outcome=ContactOutcome.REACHED, note=note, employee_id=by.employee_id, at=now,
    )  # fmt: skip
    await steps.record_contact(conn, after, apology)
    if not transition.events:
        await repo.save_case(conn, after, now=now)  # apologising again: logged (watchers see it), no move
        return after
    clocks = await repo.get_clocks(conn, case_id)
    if SlaClock.ACKNOWLEDGE in clocks:
        await steps.save_clock(conn, case_id, sla.stop(clocks[SlaClock.ACKNOWLEDGE], now))
    await steps.save_and_audit(
        conn, deps, before=before, after=after, action=CaseAction.ACKNOWLEDGED, actor=by, at=now, reason=note
    )
    if before.acknowledged_at is None and before.opened_at:
        deps.metrics.time_to_acknowledge.observe(max(0.0, (now - before.opened_at).total_seconds()))
    return after


async def adjust_offer(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    offer_id: str,
    adjustment: OfferAdjustment,
    reason: str,
    by: Actor,
    deps: steps.Deps,
) -> str:
    """The owner's own remedy: check the adjustment of the current offer, audit it with who and why, and ask
    compensation to re-quote (OfferAdjusted). The new version is authorised as it arrives, like any re-quote.
    Returns the adjustment id."""
    now = deps.clock()
    case = (await steps.locked_case(conn, case_id)).case
    access.require_act(case, by)
    steps.current_offer_check(case, offer_id)
    record = await steps.load_offer(conn, offer_id)
    offer = record.offer
    adjustments.check(
        case,
        adjustment,
        reason=reason,
        currency=offer.total.currency,
        authorized=bool(record.authorizations) or wire.granted_before(record.message),
        receipts_due=wire.receipts_due(record.message),
        most_per_case=authority.most_per_case(deps.policy(), offer.total.currency),
    )
    adjustment_id = deps.new_id()
    event = wire.offer_adjusted(case, offer, adjustment, adjustment_id=adjustment_id, reason=reason, by=by, at=now)
    await steps.stage_event(
        conn, steps.OFFER_ADJUSTED, event, key=case.customer_id, ce_id=f"offer-adjusted:{adjustment_id}", at=now
    )
    await steps.save_and_audit(
        conn, deps, before=case, after=case, action=CaseAction.OFFER_ADJUSTED, actor=by, at=now, reason=reason,
        offer_id=offer_id, detail=f"adjustment {adjustment_id}: {adjustments.describe(adjustment)}",
    )  # fmt: skip
    return adjustment_id


async def record_contact(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    by: Actor,
    kind: ContactKind | None,
    channel: Channel | None,
    outcome: ContactOutcome | None,
    note: str,
    deps: steps.Deps,
) -> Contact:
    """Append a contact to the case's contact log: the owner, the team's supervisors and colleagues whose
    reports merged into the case may (they spoke with the customer too). Returns the contact."""
    now = deps.clock()
    case = (await steps.locked_case(conn, case_id)).case
    if not access.may_act(case, by) and not await repo.is_reporter(conn, case_id, by.employee_id):
        raise Forbidden(f"case {case_id} is not the caller's: its owner, their leads and its reporters log contacts")
    entry = contacts.contact(
        case, contact_id=deps.new_id(), kind=kind, channel=channel, outcome=outcome, note=note,
        employee_id=by.employee_id, at=now,
    )  # fmt: skip
    await steps.record_contact(conn, case, entry)
    await repo.save_case(conn, case, now=now)  # a new revision: watchers (the owner) see the contact
    return entry


async def transfer_case(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    to_employee_id: str,
    to_team: str,
    reason: str,
    by: Actor,
    deps: steps.Deps,
) -> Case:
    """Give the case to another employee (or a team queue) with a reason; counted, flagged past the policy's max."""
    now = deps.clock()
    policy = deps.policy()
    before = (await steps.locked_case(conn, case_id)).case
    access.require_act(before, by)
    transition = lifecycle.apply(
        before, c.TransferCase(by=by, to_employee_id=to_employee_id, to_team=to_team, reason=reason), now
    )
    if to_employee_id:
        await steps.require_capacity(conn, deps, to_employee_id)
    after = transition.case
    if after.transfer_count > policy.max_transfers:
        after = replace(after, transfer_limit_exceeded=True)
    await steps.save_and_audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.TRANSFERRED,
        actor=by,
        at=now,
        reason=reason,
        detail=f"transferred from {before.owner_employee_id or '(queue)'} to "
        f"{to_employee_id or '(queue)'} of {after.team}; transfer {after.transfer_count}",
    )
    deps.metrics.transfers.labels(limit_exceeded=str(after.transfer_limit_exceeded).lower()).inc()
    return after


async def record_customer_decision(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    offer_id: str,
    decision: CustomerDecision | None,
    counter_request: common_pb2.CustomerRequest | None,
    note: str,
    by: Actor,
    deps: steps.Deps,
) -> Case:
    """Record the customer's answer; a counter is published for compensation to re-quote."""
    now = deps.clock()
    if decision is None:
        raise InvalidCommand.of(FieldViolation("decision", "required: accepted, declined or countered"))
    if decision is CustomerDecision.COUNTERED and counter_request is None:
        raise InvalidCommand.of(FieldViolation("counter_request", "required when the customer countered"))
    before = (await steps.locked_case(conn, case_id)).case
    access.require_act(before, by)
    steps.current_offer_check(before, offer_id)
    transition = lifecycle.apply(before, c.RecordCustomerDecision(by=by, decision=decision), now)
    offer_record = await steps.load_offer(conn, offer_id)
    await repo.set_customer_decision(conn, offer_id, decision)
    if before.state is CaseState.WAITING_ON_CUSTOMER:
        calendar = deps.policy().calendar_for(before.team)
        await steps.each_clock(conn, case_id, lambda k: sla.resume(k, calendar, now))
    if decision is CustomerDecision.COUNTERED:
        event = wire.customer_countered(before, offer_record.offer, counter_request, by=by, at=now)
        await steps.stage_event(
            conn,
            steps.CUSTOMER_COUNTERED,
            event,
            key=before.customer_id,
            ce_id=f"customer-countered:{offer_id}",
            at=now,
        )
    await steps.save_and_audit(
        conn,
        deps,
        before=before,
        after=transition.case,
        action=CaseAction.CUSTOMER_DECISION_RECORDED,
        actor=by,
        at=now,
        offer_id=offer_id,
        reason=note,
        detail=decision.value,
    )
    return transition.case


async def present_offer(
    conn: asyncpg.Connection, *, case_id: str, offer_id: str, note: str, by: Actor, deps: steps.Deps
) -> Case:
    """The authorised offer was made to the customer: wait for their answer with the SLA clocks paused."""
    now = deps.clock()
    before = (await steps.locked_case(conn, case_id)).case
    access.require_act(before, by)
    steps.current_offer_check(before, offer_id)
    transition = lifecycle.apply(before, c.PresentOffer(by=by), now)
    await steps.each_clock(conn, case_id, lambda k: sla.pause(k, now))
    await steps.save_and_audit(
        conn,
        deps,
        before=before,
        after=transition.case,
        action=CaseAction.CUSTOMER_DECISION_RECORDED,
        actor=by,
        at=now,
        offer_id=offer_id,
        reason=note,
        detail="offer made to the customer; waiting on their answer (SLA clocks paused)",
    )
    return transition.case


async def resolve_case(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    summary: str,
    root_cause_area: common_pb2.Area | None,
    root_cause: str,
    by: Actor,
    deps: steps.Deps,
) -> Case:
    """Close the case: stop its clocks and publish CaseResolved for followup and intake."""
    now = deps.clock()
    record = await steps.locked_case(conn, case_id)
    before = record.case
    access.require_act(before, by)
    transition = lifecycle.apply(before, c.ResolveCase(by=by), now)
    after = replace(transition.case, resolved_at=now)
    await steps.each_clock(conn, case_id, lambda k: sla.stop(k, now) if k.stopped_at is None else k)
    decision = None
    if before.current_offer_id:
        decision = (await steps.load_offer(conn, before.current_offer_id)).customer_decision
    event = wire.case_resolved(
        after,
        facts=record.facts,
        by=by,
        at=now,
        root_cause_area=root_cause_area,
        root_cause=root_cause,
        summary=summary,
        decision=decision,
        compensation=await repo.authorized_total(conn, case_id),
    )
    await steps.stage_event(
        conn,
        steps.CASE_RESOLVED,
        event,
        key=before.customer_id,
        ce_id=f"case-resolved:{case_id}:{after.resolution_count}",
        at=now,
    )
    await steps.save_and_audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.RESOLVED,
        actor=by,
        at=now,
        reason=summary,
        detail=root_cause,
    )
    if before.opened_at:
        deps.metrics.time_to_resolve.observe(max(0.0, (now - before.opened_at).total_seconds()))
    return after


async def reopen_case(conn: asyncpg.Connection, *, case_id: str, reason: str, by: Actor, deps: steps.Deps) -> Case:
    """Reopen a resolved case: it goes back to its owner with a fresh resolve clock."""
    if not reason.strip():
        raise InvalidCommand.of(FieldViolation("reason", "required"))
    record = await steps.locked_case(conn, case_id)
    access.require_act(record.case, by)
    return await steps.reopen(conn, deps, record, by=by, reason=reason, followup_id="")
