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
    AuthorizationPart,
    AuthorizationTier,
    Case,
    CaseAction,
    Declaration,
    Delegation,
    Limits,
    Offer,
    OfferLine,
    OfferStatus,
    SlaClock,
    Usage,
)
from services.escalation.domain.rates import Rate
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
    policy = deps.policy()
    limits = policy.limits_for(employee_id=by.employee_id, role=by.role)
    usage = await steps.lock_usage(conn, deps, by.employee_id, now)
    converted, usage_there = authority.in_currency(policy, limits, usage, offer_record.offer.total.currency)
    try:
        authority.check_owner_may_authorise(converted, owner=by, offer=offer_record.offer, usage=usage_there)
    except FailedPrecondition:
        deps.metrics.limit_refusals.labels(kind="owner").inc()
        raise
    known = replace(before, owner_role=by.role)  # the owner acted with their own token: their role is known now
    assert limits is not None  # check_owner_may_authorise refuses a role without limits
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
    """Send what exceeds the owner's authority up; returns the request.

    Frontline first: the owner's own authority grants at once what it covers of the offer (authorised, booked
    to her usage, and on its way to the customer), and only the remainder is routed, to the lowest tier above
    her whose limits cover it. A flagged offer goes up whole.
    """
    now = deps.clock()
    policy = deps.policy()
    before = (await steps.locked_case(conn, case_id)).case
    access.require_act(before, by)
    steps.current_offer_check(before, offer_id)
    transition = lifecycle.apply(before, c.RequestApproval(by=by), now)
    offer_record = await steps.load_offer(conn, offer_id)
    offer = offer_record.offer
    rate = steps.rate(deps, offer.total.currency)  # an unconfigured currency is refused before anything changes
    # The owner's role is known when the owner asks or took the case; otherwise routing starts at the lowest tier.
    owner_acts = by.employee_id == before.owner_employee_id
    owner_role = by.role if owner_acts else (before.owner_role or policy.tiers[0])
    owner_limits = policy.limits_for(employee_id=before.owner_employee_id, role=owner_role)
    usage = await steps.lock_usage(conn, deps, before.owner_employee_id, now)
    converted, usage_there = authority.in_currency(policy, owner_limits, usage, offer.total.currency)
    # Only an owner whose role is known grants a share: nobody spends an authority they cannot name.
    split = authority.split(converted if (owner_acts or before.owner_role) else None, usage_there, offer)
    if split.remainder_total.amount_minor == 0:
        # The owner's authority covers it all and she asks anyway (a second opinion): the whole goes up.
        split = authority.split(None, usage_there, offer)
    ask = replace(offer, total=split.remainder_total, lines=split.remainder)
    routed = authority.route(
        policy, owner_role=owner_role, owner_limits=converted, offer=offer, usage=usage_there, ask=ask
    )
    approval = Approval(
        approval_id=deps.new_id(),
        case_id=case_id,
        customer_id=before.customer_id,
        offer_id=offer_id,
        offer_version=offer.version,
        requested_by=by,
        owner_employee_id=before.owner_employee_id,
        approver_role=routed.approver_role,
        approver_team=before.team,
        amount=split.remainder_total,
        reasons=routed.reasons,
        note=note,
        decision_due_at=policy.calendar_for(before.team).add(now, policy.approval_decision),
        escalation_level=0,
        requested_at=now,
        offer_total=offer.total,
        owner_share=split.owner_total,
        line_minor=tuple(line.amount.amount_minor for line in split.remainder),
        split=authority.split_detail(split, offer.total),
    )
    if split.owner_total.amount_minor and owner_limits is not None:  # a share comes only from limits
        await _grant_owner_share(
            conn, deps, case=before, offer_record=offer_record, split=split, role=owner_role, limits=owner_limits,
            usage=usage, detail=approval.split, now=now,
        )  # fmt: skip
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
    await steps.save_case(conn, before=before, after=after, now=now, expected_by=approval.decision_due_at)
    await steps.stage_event(
        conn,
        steps.APPROVAL_REQUESTED,
        wire.approval_requested(approval, message=offer_record.message, rate=rate),
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
        rate=wire.rate_json(rate),
        detail=f"routed to {approval.approver_role} of {approval.approver_team}: "
        f"{wire.reasons_of(approval.reasons)}; {approval.split}",
    )
    deps.metrics.approvals_requested.labels(approver_role=approval.approver_role).inc()
    return approval, after


async def _grant_owner_share(
    conn,
    deps: steps.Deps,
    *,
    case: Case,
    offer_record: repo.OfferRecord,
    split: authority.Split,
    role: str,
    limits: Limits,
    usage: Usage,
    detail: str,
    now: datetime,
) -> None:
    """Authorise the owner's share of a split offer by her own authority (``usage`` locked by the caller)."""
    policy = deps.policy()
    owner = Actor.employee(case.owner_employee_id, role, case.team)
    limits_proto = wire.limits_to_proto(
        limits, employee_id=owner.employee_id, usage=usage, policy_version=policy.version
    )
    await steps.book_usage(conn, deps, owner.employee_id, split.owner_total, now)
    await steps.record_authorization(
        conn,
        deps,
        case=case,
        offer_record=offer_record,
        by=owner,
        tier=AuthorizationTier.OWNER,
        authority_employee_id=owner.employee_id,
        limits=limits_proto,
        amount=split.owner_total,
        lines=split.owner,
        approval_id="",
        now=now,
        part=AuthorizationPart.OWNER_SHARE,
    )
    await steps.audit(
        conn,
        deps,
        before=case,
        after=case,
        action=CaseAction.OFFER_AUTHORIZED,
        actor=owner,
        at=now,
        amount=split.owner_total,
        offer_id=offer_record.offer.offer_id,
        limits=wire.limits_json(limits_proto),
        rate=wire.rate_json(steps.rate(deps, split.owner_total.currency)),
        reason="the owner's share of an offer above her limits: granted at once, only the rest goes up",
        detail=detail,
    )


async def my_authority(
    conn: asyncpg.Connection, *, by: Actor, case: Case | None, currency: str, deps: steps.Deps
) -> tuple[authority.Room, Rate]:
    """Return the caller's remaining authority in the case's currency (or ``currency``, or the base currency),
    and on the case's current offer what they could grant now. Reads only: nothing is locked or booked."""
    policy = deps.policy()
    limits = policy.limits_for(employee_id=by.employee_id, role=by.role)
    if limits is None:
        why = f"role {by.role!r} has no empowerment limits"
        raise FailedPrecondition(why, (PreconditionViolation("LIMITS", f"employee/{by.employee_id}", why),))
    offer = None
    if case is not None and case.current_offer_id:
        offer = (await steps.load_offer(conn, case.current_offer_id)).offer
        currency = offer.total.currency
    currency = currency or policy.currency
    rate = policy.rate_for(currency)
    if rate is None:
        raise InvalidCommand.of(
            FieldViolation(
                "currency",
                f"{currency!r} has no exchange rate in empowerment policy {policy.version}; "
                f"one of {', '.join(sorted(policy.currencies))}",
            )
        )
    day, month = steps.periods(deps, deps.clock())
    usage = await repo.usage_of(conn, employee_id=by.employee_id, day=day, month=month, currency=policy.currency)
    converted, usage_there = authority.in_currency(policy, limits, usage, currency)
    assert converted is not None
    return authority.room(converted, usage_there, offer), rate


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
    # A rejected remainder leaves the owner's share authorised: the case goes on to the customer either way.
    has_share = bool(approval.owner_share and approval.owner_share.amount_minor)
    transition = lifecycle.apply(before, c.DecideApproval(by=by, approved=amount is not None or has_share), now)
    usage = await steps.lock_usage(conn, deps, used.employee_id, now)
    limits_proto = wire.limits_to_proto(
        used.limits,
        employee_id=used.employee_id,
        usage=usage,
        policy_version=policy.version,
        delegated_by=used.delegated_by,
    )
    offer_record = await steps.load_offer(conn, approval.offer_id)
    asked = wire.lines_with(offer_record.offer.lines, approval.line_minor)  # the remainder, line by line
    lines = asked
    if amount is not None:
        lines = authority.reduce_lines(asked, amount)  # goodwill only: statutory and costs are never cut
        converted, usage_there = authority.in_currency(policy, used.limits, usage, amount.currency)
        granted = tuple(line for line in lines if line.amount.amount_minor)
        try:
            authority.check_within(
                converted, subject=f"employee/{used.employee_id}", total=amount, lines=granted, usage=usage_there
            )
        except LimitExceeded:
            deps.metrics.limit_refusals.labels(kind="approver").inc()
            raise
        await steps.book_usage(conn, deps, used.employee_id, amount, now)
    return await _settle(
        conn,
        deps,
        before=before,
        after=transition.case,
        approval=approval,
        offer_record=offer_record,
        decision=decision,
        amount=amount,
        lines=lines,
        by=by,
        tier=AuthorizationTier.APPROVER,
        authority_employee_id=used.employee_id,
        limits_proto=limits_proto,
        reason=reason,
        detail=f"{decision.value}" + (f" by delegation from {used.delegated_by}" if used.delegated_by else ""),
        now=now,
    )


async def decide_by_declaration(
    conn: asyncpg.Connection,
    deps: steps.Deps,
    *,
    case: Case,
    offer: Offer,
    declaration: Declaration,
    limits: Limits,
    now: datetime,
) -> Case:
    """Approve the case's pending approval, which follows its playbook re-quote ``offer``, on the declaration's
    pre-approval (the system applies the declarer's authority): a request made before the incident was declared
    does not keep its customer waiting for a decision the declarer already took. Returns the case."""
    approval = await repo.get_approval(conn, case.pending_approval_id, lock=True)
    if approval is None:
        raise NotFound(f"approval {case.pending_approval_id} of case {case.case_id} not found")
    system = Actor.system()
    after = lifecycle.apply(case, c.DecideApproval(by=system, approved=True), now).case
    offer_record = await steps.load_offer(conn, approval.offer_id)
    await _settle(
        conn,
        deps,
        before=case,
        after=after,
        approval=approval,
        offer_record=offer_record,
        decision=ApprovalDecision.APPROVE,
        amount=approval.amount,
        lines=wire.lines_with(offer_record.offer.lines, approval.line_minor),
        by=system,
        tier=AuthorizationTier.PLAYBOOK,
        authority_employee_id=declaration.declared_by,
        limits_proto=steps.playbook_limits_proto(deps, declaration, limits),
        reason=steps.playbook_reason(declaration, offer),
        detail="approve: pre-approved by the incident's declaration",
        now=now,
    )
    spent = steps.rate(deps, approval.amount.currency).to_base(approval.amount.amount_minor)
    await repo.add_declared_spend(conn, {declaration.incident_id: spent})
    return after


async def _settle(
    conn: asyncpg.Connection,
    deps: steps.Deps,
    *,
    before: Case,
    after: Case,
    approval: Approval,
    offer_record: repo.OfferRecord,
    decision: ApprovalDecision,
    amount: Money | None,
    lines: tuple[OfferLine, ...],
    by: Actor,
    tier: AuthorizationTier,
    authority_employee_id: str,
    limits_proto,
    reason: str,
    detail: str,
    now: datetime,
) -> Approval:
    """Record a decided approval: the authorisation of what was approved (or the offer's status when nothing
    was), the decision, its timers stopped, the case saved, ApprovalDecided staged and audited."""
    approval_id = approval.approval_id
    # A rejected remainder leaves the owner's share authorised: the case goes on to the customer either way.
    has_share = bool(approval.owner_share and approval.owner_share.amount_minor)
    if amount is not None:
        await steps.record_authorization(
            conn,
            deps,
            case=before,
            offer_record=offer_record,
            by=by,
            tier=tier,
            authority_employee_id=authority_employee_id,
            limits=limits_proto,
            amount=amount,
            lines=lines,
            approval_id=approval_id,
            now=now,
            part=AuthorizationPart.REMAINDER if has_share else AuthorizationPart.WHOLE,
        )
    elif has_share:
        # The remainder is refused; the owner's share stands and can still reach the customer.
        await repo.set_offer_status(conn, approval.offer_id, OfferStatus.AUTHORIZED)
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
    await steps.save_case(conn, before=before, after=after, now=now)
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
        after=after,
        action=CaseAction.APPROVAL_DECIDED,
        actor=by,
        at=now,
        amount=amount or Money.zero(approval.amount.currency),
        offer_id=approval.offer_id,
        approval_id=approval_id,
        reason=reason,
        limits=wire.limits_json(limits_proto),
        rate=wire.rate_json(steps.rate(deps, approval.amount.currency)),
        detail=detail,
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
