"""Escalation's handlers for authority: authorise within one's limits, request and decide approvals of what
exceeds them, delegate authority.

Flagged offers (budget exceeded, needs review) are refused by ``AuthorizeOffer`` and go through
``RequestApproval``, which routes them at least one tier above the owner.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

import asyncpg

from services.common.errors import FailedPrecondition, PreconditionViolation
from services.common.money import Money
from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.domain import access, authority, lifecycle
from services.escalation.domain import commands as c
from services.escalation.domain.errors import (
    FieldViolation,
    InvalidCommand,
    LimitExceeded,
    NotFound,
)
from services.escalation.domain.model import (
    Actor,
    Approval,
    ApprovalDecision,
    ApprovalStatus,
    AuthorizationTier,
    Case,
    CaseAction,
    Delegation,
    OfferStatus,
    SlaClock,
)
from services.escalation.service_layer import steps

log = logging.getLogger(__name__)


async def authorize_offer(
    conn: asyncpg.Connection, *, case_id: str, offer_id: str, by: Actor, deps: steps.Deps
) -> Case:
    """The owner authorises the current offer within their own limits; raises FailedPrecondition above them.

    Needed only when the owner's role was not known as the offer arrived (a case transferred to them)."""
    now = deps.clock()
    before = (await steps.locked_case(conn, case_id)).case
    access.require_owner(before, by)
    steps.current_offer_check(before, offer_id)
    lifecycle.apply(before, c.AuthorizeOffer(by=by), now)  # refuses before any usage is locked
    offer_record = await steps.load_offer(conn, offer_id)
    limits = deps.policy().limits_for(employee_id=by.employee_id, role=by.role)
    usage = await steps.lock_usage(conn, deps, by.employee_id, now)
    try:
        limits = authority.check_owner_may_authorise(limits, owner=by, offer=offer_record.offer, usage=usage)
    except FailedPrecondition:
        deps.metrics.limit_refusals.labels(kind="owner").inc()
        raise
    known = replace(before, owner_role=by.role)  # the owner acted with their own token: their role is known now
    return await steps.grant_as_owner(
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
    conn: asyncpg.Connection, *, case_id: str, offer_id: str, note: str, by: Actor, deps: steps.Deps
) -> tuple[Approval, Case]:
    """Route the current offer to the lowest tier above the owner whose limits cover it; returns the request."""
    now = deps.clock()
    policy = deps.policy()
    before = (await steps.locked_case(conn, case_id)).case
    access.require_act(before, by)
    steps.current_offer_check(before, offer_id)
    transition = lifecycle.apply(before, c.RequestApproval(by=by), now)
    offer_record = await steps.load_offer(conn, offer_id)
    # The owner's role is known when the owner asks or took the case; otherwise routing starts at the lowest tier.
    owner_role = by.role if by.employee_id == before.owner_employee_id else (before.owner_role or policy.tiers[0])
    owner_limits = policy.limits_for(employee_id=before.owner_employee_id, role=owner_role)
    usage = await steps.lock_usage(conn, deps, before.owner_employee_id, now)
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
        conn,
        case_id,
        SlaClock.APPROVAL,
        [(steps.APPROVAL_DUE, approval.decision_due_at)],
        approval_id=approval.approval_id,
    )
    after = replace(transition.case, pending_approval_id=approval.approval_id)
    await repo.save_case(conn, after, now=now)
    await steps.stage_event(
        conn,
        steps.APPROVAL_REQUESTED,
        wire.approval_requested(approval),
        key=before.customer_id,
        ce_id=f"approval-requested:{approval.approval_id}:0",
        at=now,
    )
    await steps.audit(
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
    deps: steps.Deps,
) -> Approval:
    """Decide an approval routed (or delegated) to ``by``; the approver's limits, with their period usage locked,
    must cover the amount. Returns the decided approval."""
    now = deps.clock()
    policy = deps.policy()
    found = await repo.get_approval(conn, approval_id)
    if found is None:
        raise NotFound(f"approval {approval_id} not found")
    before = (await steps.locked_case(conn, found.case_id)).case  # case before approval: the order every path locks in
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
    usage = await steps.lock_usage(conn, deps, used.employee_id, now)
    limits_proto = wire.limits_to_proto(
        used.limits,
        employee_id=used.employee_id,
        usage=usage,
        policy_version=policy.version,
        delegated_by=used.delegated_by,
    )
    offer_record = await steps.load_offer(conn, approval.offer_id)
    if amount is not None:
        lines = authority.reduce_lines(offer_record.offer.lines, amount)
        try:
            authority.check_within(
                used.limits, subject=f"employee/{used.employee_id}", total=amount, lines=lines, usage=usage
            )
        except LimitExceeded:
            deps.metrics.limit_refusals.labels(kind="approver").inc()
            raise
        await steps.book_usage(conn, deps, used.employee_id, amount, now)
        await steps.record_authorization(
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
    await steps.stage_event(
        conn,
        steps.APPROVAL_DECIDED,
        wire.approval_decided(decided, limits=limits_proto),
        key=before.customer_id,
        ce_id=f"approval-decided:{approval_id}",
        at=now,
    )
    await steps.audit(
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
    deps: steps.Deps,
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
