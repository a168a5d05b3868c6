"""Escalation's handlers: one per command or event, run inside the caller's transaction (the unit of work).

The consumer harness, the gRPC servicer and the scheduler open the transaction; a handler locks the case
row, decides with the pure domain (transition table, limits, clocks), writes through the repository,
appends the audit entry and stages its events in the outbox, so all of it commits together or not at all.

Decisions the issue left open (see the report):
- An offer within the owner's limits waits for the owner's ``AuthorizeOffer`` (the owner's authority,
  nobody else's, and no approval); only the ``system`` actor authorises at once, for system-detected
  failures within the policy's automation limit.
- Flagged offers (budget exceeded, needs review) are refused by ``AuthorizeOffer`` and go through
  ``RequestApproval``, which routes them at least one tier above the owner.
- An SLA breach raises the case's attention one tier each time (from the lowest tier up).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg
from recovery.events.v1 import common_pb2, events_pb2

from services.common import outbox
from services.common.errors import FailedPrecondition, PreconditionViolation
from services.common.money import Money
from services.common.scheduler import utcnow
from services.common.topics import topic
from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.adapters.metrics import EscalationMetrics
from services.escalation.domain import access, authority, lifecycle, sla
from services.escalation.domain import commands as c
from services.escalation.domain.errors import (
    Conflict,
    FieldViolation,
    InvalidCommand,
    LimitExceeded,
    NotFound,
)
from services.escalation.domain.model import (
    Actor,
    Approval,
    ApprovalDecision,
    ApprovalReason,
    ApprovalStatus,
    AuthorizationTier,
    Case,
    CaseAction,
    CaseState,
    ClockState,
    CustomerDecision,
    Delegation,
    Limits,
    OfferLine,
    OfferStatus,
    SlaClock,
    SlaStatus,
    Usage,
)
from services.escalation.domain.policy import Policy

log = logging.getLogger(__name__)

SOURCE = "escalation"
OFFER_AUTHORIZED = topic("recovery.offer-authorized.v1").name
APPROVAL_REQUESTED = topic("recovery.approval-requested.v1").name
APPROVAL_DECIDED = topic("recovery.approval-decided.v1").name
SLA_BREACHED = topic("recovery.sla-breached.v1").name
CUSTOMER_COUNTERED = topic("recovery.customer-countered.v1").name
CASE_RESOLVED = topic("recovery.case-resolved.v1").name
CASE_REOPENED = topic("recovery.case-reopened.v1").name
APPROVAL_DUE = "approval_due"


@dataclass(frozen=True)
class Deps:
    """What the handlers need besides the connection: the policy in force, metrics, a clock, ids."""

    policy: Callable[[], Policy]
    metrics: EscalationMetrics
    clock: Callable[[], datetime] = utcnow
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())


# ------------------------------------------------------------------------------------------------ helpers


async def _locked(conn: asyncpg.Connection, case_id: str) -> repo.CaseRecord:
    record = await repo.get_case(conn, case_id, lock=True)
    if record is None:
        raise NotFound(f"case {case_id} not found")
    return record


async def _stage(conn: asyncpg.Connection, topic_name: str, message, *, key: str, ce_id: str, at: datetime) -> None:
    await outbox.stage(conn, outbox.event_record(topic_name, message, key=key, source=SOURCE, ce_id=ce_id, time=at))


async def _audit(
    conn: asyncpg.Connection,
    deps: Deps,
    *,
    before: Case | None,
    after: Case,
    action: CaseAction,
    actor: Actor,
    at: datetime,
    **details,
) -> None:
    await repo.append_audit(
        conn,
        repo.AuditEntry(
            case_id=after.case_id,
            action=action.value,
            actor=actor,
            policy_version=deps.policy().version,
            occurred_at=at,
            from_state=before.state if before else None,
            to_state=after.state,
            **details,
        ),
    )


async def _save(
    conn: asyncpg.Connection, deps: Deps, *, before: Case | None, after: Case, at: datetime, **audit
) -> None:
    """Write the case and its audit row together: no change of a case goes unrecorded."""
    await repo.save_case(conn, after, now=at)
    await _audit(conn, deps, before=before, after=after, at=at, **audit)


async def _save_clock(conn: asyncpg.Connection, case_id: str, clock: ClockState) -> None:
    """Store the clock and replace its timers with the ones it needs now."""
    await repo.save_clock(conn, case_id, clock)
    await repo.set_timers(conn, case_id, clock.clock, sla.due_timers(clock))


async def _start_clock(conn, deps: Deps, case: Case, clock: SlaClock, now: datetime) -> None:
    policy = deps.policy()
    state = sla.start(
        clock=clock,
        budget=policy.sla_budget(clock, case.severity, case.outlook),
        calendar=policy.calendar_for(case.team),
        share_bp=policy.warn_share_bp,
        now=now,
    )
    await _save_clock(conn, case.case_id, state)


async def _each_clock(conn, case_id: str, change: Callable[[ClockState], ClockState]) -> None:
    for clock in (await repo.get_clocks(conn, case_id)).values():
        changed = change(clock)
        if changed != clock:
            await _save_clock(conn, case_id, changed)


def _current_offer_check(case: Case, offer_id: str) -> None:
    if offer_id != case.current_offer_id:
        why = "not the case's current offer (superseded or unknown)" if case.current_offer_id else "no offer yet"
        raise FailedPrecondition(
            f"offer {offer_id}: {why}",
            (PreconditionViolation(type="STATE", subject=f"offer/{offer_id}", description=why),),
        )


async def _offer(conn, offer_id: str) -> repo.OfferRecord:
    record = await repo.get_offer(conn, offer_id, lines_of=wire.offer_lines)
    if record is None:
        raise NotFound(f"offer {offer_id} not found")
    return record


def _periods(deps: Deps, now: datetime):
    return authority.periods(now, deps.policy().calendar.timezone)


async def _lock_usage(conn, deps: Deps, employee_id: str, now: datetime) -> Usage:
    day, month = _periods(deps, now)
    return await repo.lock_usage(conn, employee_id=employee_id, day=day, month=month, currency=deps.policy().currency)


async def _book_usage(conn, deps: Deps, employee_id: str, amount: Money, now: datetime) -> None:
    day, month = _periods(deps, now)
    await repo.book_usage(conn, employee_id=employee_id, day=day, month=month, amount=amount)


async def _require_capacity(conn, deps: Deps, employee_id: str) -> None:
    capacity = deps.policy().capacity_for(employee_id)
    load = await repo.open_case_count(conn, employee_id)
    if load >= capacity:
        why = f"{employee_id} already owns {load} open cases (capacity {capacity}): rebalance first"
        raise FailedPrecondition(why, (PreconditionViolation("CAPACITY", f"employee/{employee_id}", why),))


async def _authorize(
    conn,
    deps: Deps,
    *,
    case: Case,
    offer_record: repo.OfferRecord,
    by: Actor,
    tier: AuthorizationTier,
    authority_employee_id: str,
    limits: common_pb2.AuthorityLimits,
    amount: Money,
    lines: tuple[OfferLine, ...],
    approval_id: str,
    now: datetime,
) -> None:
    """Record the offer's one authorisation and stage OfferAuthorized; raises Conflict on a second one."""
    offer = offer_record.offer
    inserted = await repo.insert_authorization(
        conn,
        offer_id=offer.offer_id,
        case_id=case.case_id,
        tier=tier.value,
        actor=by,
        authority_employee_id=authority_employee_id,
        amount=amount,
        approval_id=approval_id,
        at=now,
    )
    if not inserted:
        raise Conflict(f"offer {offer.offer_id} is already authorised")
    await repo.set_offer_status(conn, offer.offer_id, OfferStatus.AUTHORIZED)
    event = wire.offer_authorized(
        case,
        offer,
        message=offer_record.message,
        by=by,
        tier=tier,
        amount=amount,
        lines=lines,
        limits=limits,
        policy_version=deps.policy().version,
        approval_id=approval_id,
        at=now,
    )
    await _stage(
        conn, OFFER_AUTHORIZED, event, key=case.customer_id, ce_id=f"offer-authorized:{offer.offer_id}", at=now
    )
    deps.metrics.authorizations.labels(tier=tier.value).inc()


# ------------------------------------------------------------------------------------------ Kafka events


async def _serialise_arrival(conn: asyncpg.Connection, case_id: str) -> None:
    """Order a case's opening and its early events: without this, an offer read while the opening is still
    uncommitted is parked after the opening took the parked events, and is never applied."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"case-arrival:{case_id}")


async def open_case(conn: asyncpg.Connection, command: c.OpenCase, *, facts: bytes, deps: Deps) -> bool:
    """Create the case (queued without an owner, open with the reporter as owner) and start its SLA clocks.

    Returns False for a case already known. Events that arrived before it are applied afterwards.
    """
    now = deps.clock()
    await _serialise_arrival(conn, command.case_id)
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
        await _start_clock(conn, deps, case, clock, command.opened_at)
    await _audit(
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
    conn: asyncpg.Connection, command: c.AmendCase, *, message: events_pb2.CaseAmended, deps: Deps
) -> None:
    """Apply intake's amendment: new facts and classification; running SLA clocks get the new budget."""
    now = deps.clock()
    await _serialise_arrival(conn, command.case_id)
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
        await _save_clock(conn, before.case_id, moved)
    await _save(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.AMENDED,
        actor=Actor.system(),
        at=now,
        detail=f"revision {command.revision}: failure {message.merged_failure_id} merged",
    )


async def receive_offer(conn: asyncpg.Connection, command: c.ReceiveOffer, *, message: bytes, deps: Deps) -> None:
    """Make the offer the case's current one when it is the highest version; the system authorises it at once
    when automatic recovery covers it."""
    now = deps.clock()
    await _serialise_arrival(conn, command.case_id)
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
        await _release_superseded(conn, deps, before.current_offer_id)
    after = replace(transition.case, current_offer_id=offer.offer_id, pending_approval_id="")
    for approval_id in await repo.cancel_pending_approvals(conn, before.case_id):
        log.info("approval %s cancelled: offer superseded by %s", approval_id, offer.offer_id)
        await repo.set_timers(conn, before.case_id, SlaClock.APPROVAL, [])
    if before.state is CaseState.WAITING_ON_CUSTOMER:
        calendar = deps.policy().calendar_for(before.team)
        await _each_clock(conn, before.case_id, lambda k: sla.resume(k, calendar, now))
    await _save(
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
        await _system_authorize(conn, deps, case=after, offer_id=offer.offer_id, now=now)
    else:
        await _owner_authorize_at_once(conn, deps, case=after, now=now)


async def _release_superseded(conn, deps: Deps, offer_id: str) -> None:
    """A re-quote replaces the case's offer before the customer took it: what its authorisation booked stops
    counting against that authority's period limits (the new offer books its own when authorised)."""
    record = await _offer(conn, offer_id)
    granted = record.authorization
    if granted is None or not granted["authority_employee_id"]:
        return  # not authorised, or by the system (which has no period usage)
    at = granted["authorized_at"]
    employee_id = granted["authority_employee_id"]
    await _lock_usage(conn, deps, employee_id, at)
    day, month = _periods(deps, at)
    amount = Money(amount_minor=granted["auth_minor"], currency=granted["auth_currency"])
    await repo.release_usage(conn, employee_id=employee_id, day=day, month=month, amount=amount)


async def _authorize_whole_offer(
    conn,
    deps: Deps,
    *,
    case: Case,
    offer_record: repo.OfferRecord,
    by: Actor,
    tier: AuthorizationTier,
    limits: common_pb2.AuthorityLimits,
    reason: str,
    now: datetime,
) -> Case:
    """Authorise the whole offer by one authority (the owner's or the system's), save and audit; returns the case."""
    transition = lifecycle.apply(case, c.AuthorizeOffer(by=by), now)
    offer = offer_record.offer
    await _authorize(
        conn,
        deps,
        case=case,
        offer_record=offer_record,
        by=by,
        tier=tier,
        authority_employee_id=by.employee_id,
        limits=limits,
        amount=offer.total,
        lines=offer.lines,
        approval_id="",
        now=now,
    )
    await _save(
        conn,
        deps,
        before=case,
        after=transition.case,
        action=CaseAction.OFFER_AUTHORIZED,
        actor=by,
        at=now,
        amount=offer.total,
        offer_id=offer.offer_id,
        limits=wire.limits_json(limits),
        reason=reason,
    )
    return transition.case


async def _system_authorize(conn, deps: Deps, *, case: Case, offer_id: str, now: datetime) -> None:
    policy = deps.policy()
    limits = wire.limits_to_proto(
        authority.system_limits(policy), employee_id="", usage=Usage(), policy_version=policy.version
    )
    await _authorize_whole_offer(
        conn,
        deps,
        case=case,
        offer_record=await _offer(conn, offer_id),
        by=Actor.system(),
        tier=AuthorizationTier.SYSTEM,
        limits=limits,
        reason="automatic recovery: system-detected failure within the automation limit",
        now=now,
    )


async def _grant_as_owner(
    conn,
    deps: Deps,
    *,
    case: Case,
    offer_record: repo.OfferRecord,
    owner: Actor,
    limits: Limits,
    usage: Usage,
    reason: str,
    now: datetime,
) -> Case:
    """Book the offer against the owner's period usage (locked by the caller, who checked that ``limits`` cover
    it) and authorise it by the owner's authority."""
    await _book_usage(conn, deps, owner.employee_id, offer_record.offer.total, now)
    limits_proto = wire.limits_to_proto(
        limits, employee_id=owner.employee_id, usage=usage, policy_version=deps.policy().version
    )
    return await _authorize_whole_offer(
        conn,
        deps,
        case=case,
        offer_record=offer_record,
        by=owner,
        tier=AuthorizationTier.OWNER,
        limits=limits_proto,
        reason=reason,
        now=now,
    )


async def _owner_authorize_at_once(conn, deps: Deps, *, case: Case, now: datetime) -> Case:
    """Frontline first: a proposed offer within the owner's limits is authorised by the owner's authority at
    once, with no human step. Anything else waits in offer pending for the owner to send it up."""
    if case.state is not CaseState.OFFER_PENDING or not (case.owner_employee_id and case.owner_role):
        return case
    owner = Actor.employee(case.owner_employee_id, case.owner_role, case.team)
    limits = deps.policy().limits_for(employee_id=owner.employee_id, role=owner.role)
    offer_record = await _offer(conn, case.current_offer_id)
    usage = await _lock_usage(conn, deps, owner.employee_id, now)
    if not authority.owner_covers(limits, offer=offer_record.offer, usage=usage):  # a role without limits: no
        log.info(
            "offer %s is beyond %s's own authority: it waits for an approval request",
            case.current_offer_id,
            owner.employee_id,
        )
        return case
    return await _grant_as_owner(
        conn,
        deps,
        case=case,
        offer_record=offer_record,
        owner=owner,
        limits=limits,
        usage=usage,
        reason="within the owner's limits: authorised at once by the owner's authority",
        now=now,
    )


async def request_reopen(conn: asyncpg.Connection, command: c.RequestReopen, *, deps: Deps) -> None:
    """Reopen the case at followup's request (the customer was not satisfied); a case not resolved stays as it is."""
    record = await repo.get_case(conn, command.case_id, lock=True)
    if record is None:
        raise InvalidCommand.of(FieldViolation("case_id", f"unknown case {command.case_id}"))
    if record.case.state is not CaseState.RESOLVED:
        log.info("reopen of case %s requested while %s: nothing to do", command.case_id, record.case.state.value)
        return
    await _reopen(conn, deps, record, by=Actor.system(), reason=command.reason, followup_id=command.followup_id)


# --------------------------------------------------------------------------------------------- commands


async def claim_case(conn: asyncpg.Connection, *, case_id: str, by: Actor, deps: Deps) -> Case:
    """Make ``by`` the owner of a queued case of their team; returns the case."""
    now = deps.clock()
    before = (await _locked(conn, case_id)).case
    access.require_claim(before, by)
    authorized = False
    if before.current_offer_id:
        authorized = (await _offer(conn, before.current_offer_id)).offer.status is OfferStatus.AUTHORIZED
    after = lifecycle.apply(before, c.ClaimCase(by=by, offer_authorized=authorized), now).case
    await _require_capacity(conn, deps, by.employee_id)
    await _save(conn, deps, before=before, after=after, action=CaseAction.CLAIMED, actor=by, at=now)
    return await _owner_authorize_at_once(conn, deps, case=after, now=now)


async def acknowledge_case(conn: asyncpg.Connection, *, case_id: str, by: Actor, note: str, deps: Deps) -> Case:
    """Record the acknowledgement and apology; stops the acknowledge clock. Returns the case."""
    now = deps.clock()
    before = (await _locked(conn, case_id)).case
    access.require_act(before, by)
    after = lifecycle.apply(before, c.AcknowledgeCase(by=by), now).case
    clocks = await repo.get_clocks(conn, case_id)
    if SlaClock.ACKNOWLEDGE in clocks:
        await _save_clock(conn, case_id, sla.stop(clocks[SlaClock.ACKNOWLEDGE], now))
    await _save(conn, deps, before=before, after=after, action=CaseAction.ACKNOWLEDGED, actor=by, at=now, reason=note)
    if before.acknowledged_at is None and before.opened_at:
        deps.metrics.time_to_acknowledge.observe(max(0.0, (now - before.opened_at).total_seconds()))
    return after


async def authorize_offer(conn: asyncpg.Connection, *, case_id: str, offer_id: str, by: Actor, deps: Deps) -> Case:
    """The owner authorises the current offer within their own limits; raises FailedPrecondition above them.

    Needed only when the owner's role was not known as the offer arrived (a case transferred to them)."""
    now = deps.clock()
    before = (await _locked(conn, case_id)).case
    access.require_owner(before, by)
    _current_offer_check(before, offer_id)
    lifecycle.apply(before, c.AuthorizeOffer(by=by), now)  # refuses before any usage is locked
    offer_record = await _offer(conn, offer_id)
    limits = deps.policy().limits_for(employee_id=by.employee_id, role=by.role)
    usage = await _lock_usage(conn, deps, by.employee_id, now)
    try:
        limits = authority.check_owner_may_authorise(limits, owner=by, offer=offer_record.offer, usage=usage)
    except FailedPrecondition:
        deps.metrics.limit_refusals.labels(kind="owner").inc()
        raise
    known = replace(before, owner_role=by.role)  # the owner acted with their own token: their role is known now
    return await _grant_as_owner(
        conn,
        deps,
        case=known,
        offer_record=offer_record,
        owner=by,
        limits=limits,
        usage=usage,
        reason="within the owner's limits",
        now=now,
    )


async def request_approval(
    conn: asyncpg.Connection, *, case_id: str, offer_id: str, note: str, by: Actor, deps: Deps
) -> tuple[Approval, Case]:
    """Route the current offer to the lowest tier above the owner whose limits cover it; returns the request."""
    now = deps.clock()
    policy = deps.policy()
    before = (await _locked(conn, case_id)).case
    access.require_act(before, by)
    _current_offer_check(before, offer_id)
    transition = lifecycle.apply(before, c.RequestApproval(by=by), now)
    offer_record = await _offer(conn, offer_id)
    # The owner's role is known when the owner asks or took the case; otherwise routing starts at the lowest tier.
    owner_role = by.role if by.employee_id == before.owner_employee_id else (before.owner_role or policy.tiers[0])
    owner_limits = policy.limits_for(employee_id=before.owner_employee_id, role=owner_role)
    usage = await _lock_usage(conn, deps, before.owner_employee_id, now)
    routed = authority.route(
        policy, owner_role=owner_role, owner_limits=owner_limits, offer=offer_record.offer, usage=usage
    )
    approval = Approval(
        approval_id=deps.new_id(),
        case_id=case_id,
        customer_id=before.customer_id,
        offer_id=offer_id,
        offer_version=offer_record.offer.version,
        requested_by=by,
        owner_employee_id=before.owner_employee_id,
        approver_role=routed.approver_role,
        approver_team=before.team,
        amount=offer_record.offer.total,
        reasons=routed.reasons,
        note=note,
        decision_due_at=policy.calendar_for(before.team).add(now, policy.approval_decision),
        escalation_level=0,
        requested_at=now,
    )
    await repo.insert_approval(conn, approval)
    await repo.set_offer_status(conn, offer_id, OfferStatus.AWAITING_APPROVAL)
    await repo.set_timers(
        conn, case_id, SlaClock.APPROVAL, [(APPROVAL_DUE, approval.decision_due_at)], approval_id=approval.approval_id
    )
    after = replace(transition.case, pending_approval_id=approval.approval_id)
    await repo.save_case(conn, after, now=now)
    await _stage(
        conn,
        APPROVAL_REQUESTED,
        wire.approval_requested(approval),
        key=before.customer_id,
        ce_id=f"approval-requested:{approval.approval_id}:0",
        at=now,
    )
    await _audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.APPROVAL_REQUESTED,
        actor=by,
        at=now,
        amount=approval.amount,
        offer_id=offer_id,
        approval_id=approval.approval_id,
        reason=note,
        detail=f"routed to {approval.approver_role} of {approval.approver_team}: {wire.reasons_of(approval.reasons)}",
    )
    deps.metrics.approvals_requested.labels(approver_role=approval.approver_role).inc()
    return approval, after


def _validate_decision(approval: Approval, decision, approved_amount: Money | None, reason: str) -> Money | None:
    bad = []
    if decision is None:
        bad.append(FieldViolation("decision", "required: approve, reject or modify-and-approve"))
    if not reason.strip():
        bad.append(FieldViolation("reason", "required for every decision"))
    if decision is ApprovalDecision.MODIFY_AND_APPROVE:
        if approved_amount is None:
            bad.append(FieldViolation("approved_amount", "required for modify-and-approve"))
        elif approved_amount.currency != approval.amount.currency:
            bad.append(FieldViolation("approved_amount.currency", f"must be {approval.amount.currency}"))
        elif not 0 < approved_amount.amount_minor <= approval.amount.amount_minor:
            bad.append(FieldViolation("approved_amount", f"must be above 0 and at most {approval.amount.amount_minor}"))
    if bad:
        raise InvalidCommand.of(*bad)
    return {
        ApprovalDecision.APPROVE: approval.amount,
        ApprovalDecision.MODIFY_AND_APPROVE: approved_amount,
        ApprovalDecision.REJECT: None,
    }[decision]


async def decide_approval(
    conn: asyncpg.Connection,
    *,
    approval_id: str,
    decision: ApprovalDecision | None,
    approved_amount: Money | None,
    reason: str,
    by: Actor,
    deps: Deps,
) -> Approval:
    """Decide an approval routed (or delegated) to ``by``; the approver's limits, with their period usage locked,
    must cover the amount. Returns the decided approval."""
    now = deps.clock()
    policy = deps.policy()
    found = await repo.get_approval(conn, approval_id)
    if found is None:
        raise NotFound(f"approval {approval_id} not found")
    before = (await _locked(conn, found.case_id)).case  # case before approval: the order every path locks in
    approval = await repo.get_approval(conn, approval_id, lock=True)
    assert approval is not None
    delegations = await repo.delegations_to(conn, by.employee_id, now)
    used = authority.approver_authority(
        policy,
        decider=by,
        approver_role=approval.approver_role,
        approver_team=approval.approver_team,
        # The owner when it was asked, and the owner now (a transfer may have brought the case to an approver).
        requester_ids=frozenset(
            {approval.requested_by.employee_id, approval.owner_employee_id, before.owner_employee_id} - {""}
        ),
        delegations=delegations,
        now=now,
    )
    if approval.status is not ApprovalStatus.PENDING:
        why = f"approval is {approval.status.value}, not pending"
        raise FailedPrecondition(why, (PreconditionViolation("STATE", f"approval/{approval_id}", why),))
    amount = _validate_decision(approval, decision, approved_amount, reason)
    transition = lifecycle.apply(before, c.DecideApproval(by=by, approved=amount is not None), now)
    usage = await _lock_usage(conn, deps, used.employee_id, now)
    limits_proto = wire.limits_to_proto(
        used.limits,
        employee_id=used.employee_id,
        usage=usage,
        policy_version=policy.version,
        delegated_by=used.delegated_by,
    )
    offer_record = await _offer(conn, approval.offer_id)
    if amount is not None:
        lines = authority.reduce_lines(offer_record.offer.lines, amount)
        try:
            authority.check_within(
                used.limits, subject=f"employee/{used.employee_id}", total=amount, lines=lines, usage=usage
            )
        except LimitExceeded:
            deps.metrics.limit_refusals.labels(kind="approver").inc()
            raise
        await _book_usage(conn, deps, used.employee_id, amount, now)
        await _authorize(
            conn,
            deps,
            case=before,
            offer_record=offer_record,
            by=by,
            tier=AuthorizationTier.APPROVER,
            authority_employee_id=used.employee_id,
            limits=limits_proto,
            amount=amount,
            lines=lines,
            approval_id=approval_id,
            now=now,
        )
    else:
        await repo.set_offer_status(conn, approval.offer_id, OfferStatus.REJECTED)
    decided = replace(
        approval,
        status=ApprovalStatus.DECIDED,
        decision=decision,
        approved_amount=amount,
        decision_reason=reason,
        decided_by=by,
        decided_at=now,
    )
    await repo.decide_approval(conn, decided)
    await repo.set_timers(conn, before.case_id, SlaClock.APPROVAL, [])
    await repo.save_case(conn, transition.case, now=now)
    await _stage(
        conn,
        APPROVAL_DECIDED,
        wire.approval_decided(decided, limits=limits_proto),
        key=before.customer_id,
        ce_id=f"approval-decided:{approval_id}",
        at=now,
    )
    await _audit(
        conn,
        deps,
        before=before,
        after=transition.case,
        action=CaseAction.APPROVAL_DECIDED,
        actor=by,
        at=now,
        amount=amount or Money.zero(approval.amount.currency),
        offer_id=approval.offer_id,
        approval_id=approval_id,
        reason=reason,
        limits=wire.limits_json(limits_proto),
        detail=f"{decision.value}" + (f" by delegation from {used.delegated_by}" if used.delegated_by else ""),
    )
    deps.metrics.approval_decisions.labels(outcome=decision.value).inc()
    return decided


async def delegate_authority(
    conn: asyncpg.Connection,
    *,
    delegate_employee_id: str,
    starts_at: datetime | None,
    ends_at: datetime | None,
    reason: str,
    by: Actor,
    deps: Deps,
) -> Delegation:
    """Lend the caller's own approval authority (their role, their team) to a colleague for a window."""
    now = deps.clock()
    start = starts_at or now
    if ends_at is None:
        raise InvalidCommand.of(FieldViolation("ends_at", "required: delegations end"))
    authority.validate_delegation(
        delegator=by, delegate_employee_id=delegate_employee_id, starts_at=start, ends_at=ends_at, reason=reason
    )
    delegation = Delegation(
        delegation_id=deps.new_id(),
        delegator_employee_id=by.employee_id,
        delegate_employee_id=delegate_employee_id,
        # Only the delegator's own role: authority held by delegation is never passed on (no cascade).
        role=by.role,
        team=by.team,
        starts_at=start,
        ends_at=ends_at,
    )
    await repo.insert_delegation(conn, delegation, reason=reason, now=now)
    await repo.append_audit(
        conn,
        repo.AuditEntry(
            case_id="",
            action="delegated",
            actor=by,
            policy_version=deps.policy().version,
            occurred_at=now,
            reason=reason,
            detail=f"{by.role} of {by.team} to {delegate_employee_id}: {start.isoformat()} to {ends_at.isoformat()}",
        ),
    )
    return delegation


async def transfer_case(
    conn: asyncpg.Connection, *, case_id: str, to_employee_id: str, to_team: str, reason: str, by: Actor, deps: Deps
) -> Case:
    """Give the case to another employee (or a team queue) with a reason; counted, flagged past the policy's max."""
    now = deps.clock()
    policy = deps.policy()
    before = (await _locked(conn, case_id)).case
    access.require_act(before, by)
    transition = lifecycle.apply(
        before, c.TransferCase(by=by, to_employee_id=to_employee_id, to_team=to_team, reason=reason), now
    )
    if to_employee_id:
        await _require_capacity(conn, deps, to_employee_id)
    after = transition.case
    if after.transfer_count > policy.max_transfers:
        after = replace(after, transfer_limit_exceeded=True)
    await _save(
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
    deps: Deps,
) -> Case:
    """Record the customer's answer; a counter is published for compensation to re-quote."""
    now = deps.clock()
    if decision is None:
        raise InvalidCommand.of(FieldViolation("decision", "required: accepted, declined or countered"))
    if decision is CustomerDecision.COUNTERED and counter_request is None:
        raise InvalidCommand.of(FieldViolation("counter_request", "required when the customer countered"))
    before = (await _locked(conn, case_id)).case
    access.require_act(before, by)
    _current_offer_check(before, offer_id)
    transition = lifecycle.apply(before, c.RecordCustomerDecision(by=by, decision=decision), now)
    offer_record = await _offer(conn, offer_id)
    await repo.set_customer_decision(conn, offer_id, decision)
    if before.state is CaseState.WAITING_ON_CUSTOMER:
        calendar = deps.policy().calendar_for(before.team)
        await _each_clock(conn, case_id, lambda k: sla.resume(k, calendar, now))
    if decision is CustomerDecision.COUNTERED:
        event = wire.customer_countered(before, offer_record.offer, counter_request, by=by, at=now)
        await _stage(
            conn, CUSTOMER_COUNTERED, event, key=before.customer_id, ce_id=f"customer-countered:{offer_id}", at=now
        )
    await _save(
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
    conn: asyncpg.Connection, *, case_id: str, offer_id: str, note: str, by: Actor, deps: Deps
) -> Case:
    """The authorised offer was made to the customer: wait for their answer with the SLA clocks paused."""
    now = deps.clock()
    before = (await _locked(conn, case_id)).case
    access.require_act(before, by)
    _current_offer_check(before, offer_id)
    transition = lifecycle.apply(before, c.PresentOffer(by=by), now)
    await _each_clock(conn, case_id, lambda k: sla.pause(k, now))
    await _save(
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
    deps: Deps,
) -> Case:
    """Close the case: stop its clocks and publish CaseResolved for followup and intake."""
    now = deps.clock()
    record = await _locked(conn, case_id)
    before = record.case
    access.require_act(before, by)
    transition = lifecycle.apply(before, c.ResolveCase(by=by), now)
    after = replace(transition.case, resolved_at=now)
    await _each_clock(conn, case_id, lambda k: sla.stop(k, now) if k.stopped_at is None else k)
    decision = None
    if before.current_offer_id:
        decision = (await _offer(conn, before.current_offer_id)).customer_decision
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
    await _stage(
        conn,
        CASE_RESOLVED,
        event,
        key=before.customer_id,
        ce_id=f"case-resolved:{case_id}:{after.resolution_count}",
        at=now,
    )
    await _save(
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


async def reopen_case(conn: asyncpg.Connection, *, case_id: str, reason: str, by: Actor, deps: Deps) -> Case:
    """Reopen a resolved case: it goes back to its owner with a fresh resolve clock."""
    if not reason.strip():
        raise InvalidCommand.of(FieldViolation("reason", "required"))
    record = await _locked(conn, case_id)
    access.require_act(record.case, by)
    return await _reopen(conn, deps, record, by=by, reason=reason, followup_id="")


async def _reopen(conn, deps: Deps, record: repo.CaseRecord, *, by: Actor, reason: str, followup_id: str) -> Case:
    now = deps.clock()
    before = record.case
    transition = lifecycle.apply(before, c.ReopenCase(by=by, reason=reason), now)
    after = replace(transition.case, resolved_at=None)
    await _start_clock(conn, deps, after, SlaClock.RESOLVE, now)
    await repo.save_case(conn, after, now=now)
    event = wire.case_reopened(after, reason=reason, by=by, followup_id=followup_id, at=now)
    await _stage(
        conn,
        CASE_REOPENED,
        event,
        key=before.customer_id,
        ce_id=f"case-reopened:{before.case_id}:{before.resolution_count}",
        at=now,
    )
    await _audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.REOPENED,
        actor=by,
        at=now,
        reason=reason,
        detail=f"followup {followup_id}" if followup_id else "",
    )
    return after


# ----------------------------------------------------------------------------------------------- timers


async def fire_due(conn: asyncpg.Connection, now: datetime, limit: int, *, deps: Deps) -> list[datetime]:
    """Claim due timers (FOR UPDATE SKIP LOCKED), apply each, and return their due times (the scheduler's hook)."""
    timers = await repo.claim_due_timers(conn, now, limit)
    for timer in timers:
        await _FIRE[timer.kind](conn, deps, timer, now)
    return [t.due_at for t in timers]


async def _fire_warn(conn, deps: Deps, timer: repo.Timer, now: datetime) -> None:
    before = (await _locked(conn, timer.case_id)).case
    clock = (await repo.get_clocks(conn, timer.case_id)).get(timer.clock)
    if clock is None or clock.status is not SlaStatus.ON_TRACK:
        return  # stale: the clock stopped, paused or moved since the timer was set
    await repo.save_clock(conn, timer.case_id, sla.warn(clock))  # the breach timer stays as it is
    await repo.save_case(conn, before, now=now)  # a new revision: watchers see the clock at risk
    await _audit(
        conn,
        deps,
        before=before,
        after=before,
        action=CaseAction.SLA_WARNED,
        actor=Actor.system(),
        at=now,
        detail=f"{timer.clock.value} clock at risk; deadline {clock.deadline_at.isoformat()}",
    )
    deps.metrics.sla_warnings.labels(clock=timer.clock.value, severity=_severity(before)).inc()


async def _fire_breach(conn, deps: Deps, timer: repo.Timer, now: datetime) -> None:
    policy = deps.policy()
    before = (await _locked(conn, timer.case_id)).case
    clock = (await repo.get_clocks(conn, timer.case_id)).get(timer.clock)
    if clock is None or clock.status not in sla.RUNNING:
        return
    await _save_clock(conn, timer.case_id, sla.breach(clock))
    # Each breach raises the case one tier for attention, starting above the frontline tier.
    attention = authority.escalated_role(policy, before.attention_role or policy.tiers[0])
    after = replace(before, sla_breach_count=before.sla_breach_count + 1, attention_role=attention)
    await repo.save_case(conn, after, now=now)
    event = wire.sla_breached(after, timer.clock, deadline_at=clock.deadline_at, at=now, escalated_to=attention)
    await _stage(
        conn,
        SLA_BREACHED,
        event,
        key=after.customer_id,
        ce_id=f"sla-breached:{after.case_id}:{timer.clock.value}:{clock.started_at.isoformat()}",
        at=now,
    )
    await _audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.SLA_BREACHED,
        actor=Actor.system(),
        at=now,
        detail=f"{timer.clock.value} deadline {clock.deadline_at.isoformat()} missed; "
        f"raised to {attention} for attention",
    )
    deps.metrics.sla_breaches.labels(clock=timer.clock.value, severity=_severity(before)).inc()


async def _fire_approval_due(conn, deps: Deps, timer: repo.Timer, now: datetime) -> None:
    policy = deps.policy()
    before = (await _locked(conn, timer.case_id)).case
    approval = await repo.get_approval(conn, timer.approval_id, lock=True)
    if approval is None or approval.status is not ApprovalStatus.PENDING or approval.decision_due_at != timer.due_at:
        return
    overdue_role = approval.approver_role
    level = approval.escalation_level + 1
    rerouted = replace(
        approval,
        approver_role=authority.escalated_role(policy, overdue_role),
        escalation_level=level,
        reasons=tuple(dict.fromkeys((*approval.reasons, ApprovalReason.DECISION_OVERDUE))),
        decision_due_at=policy.calendar_for(approval.approver_team).add(now, policy.approval_decision),
    )
    await repo.reroute_approval(conn, rerouted)
    await repo.set_timers(
        conn,
        before.case_id,
        SlaClock.APPROVAL,
        [(APPROVAL_DUE, rerouted.decision_due_at)],
        approval_id=approval.approval_id,
    )
    await repo.save_case(conn, before, now=now)
    await _stage(
        conn,
        APPROVAL_REQUESTED,
        wire.approval_requested(rerouted),
        key=before.customer_id,
        ce_id=f"approval-requested:{approval.approval_id}:{level}",
        at=now,
    )
    breach = wire.sla_breached(
        before,
        SlaClock.APPROVAL,
        deadline_at=approval.decision_due_at,
        at=now,
        escalated_to=rerouted.approver_role,
        approval_id=approval.approval_id,
    )
    await _stage(
        conn,
        SLA_BREACHED,
        breach,
        key=before.customer_id,
        ce_id=f"sla-breached:{before.case_id}:approval:{approval.approval_id}:{level}",
        at=now,
    )
    await _audit(
        conn,
        deps,
        before=before,
        after=before,
        action=CaseAction.APPROVAL_REQUESTED,
        actor=Actor.system(),
        at=now,
        amount=approval.amount,
        offer_id=approval.offer_id,
        approval_id=approval.approval_id,
        detail=f"decision overdue at {overdue_role}: routed to {rerouted.approver_role} (level {level})",
    )
    deps.metrics.approvals_escalated.inc()
    deps.metrics.approvals_requested.labels(approver_role=rerouted.approver_role).inc()
    deps.metrics.sla_breaches.labels(clock=SlaClock.APPROVAL.value, severity=_severity(before)).inc()


def _severity(case: Case) -> str:
    return case.severity.value if case.severity else "unspecified"


_FIRE = {sla.WARN: _fire_warn, sla.BREACH: _fire_breach, APPROVAL_DUE: _fire_approval_due}


# ----------------------------------------------------------------------------------------------- gauges


async def refresh_gauges(conn: asyncpg.Connection, *, deps: Deps) -> None:
    """Set the gauges read from the tables: cases by state, approvals pending and age, overloaded employees."""
    counts = await repo.state_counts(conn)
    for state in CaseState:
        deps.metrics.cases_by_state.labels(state=state.value).set(counts.get(state.value, 0))
    pending, oldest = await repo.pending_approval_stats(conn, deps.clock())
    deps.metrics.approvals_pending.set(pending)
    deps.metrics.approvals_oldest_age.set(oldest)
    policy = deps.policy()
    loads = await repo.owner_loads(conn)
    deps.metrics.overloaded_employees.set(sum(1 for e, n in loads.items() if n > policy.capacity_for(e)))
