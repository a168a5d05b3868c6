"""Escalation's timers and gauges: SLA warnings and breaches, overdue approval decisions, the table-read gauges.

An SLA breach raises the case's attention one tier each time (from the lowest tier up).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

import asyncpg

from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.domain import authority, sla
from services.escalation.domain.model import (
    Actor,
    ApprovalReason,
    ApprovalStatus,
    Case,
    CaseAction,
    CaseState,
    SlaClock,
    SlaStatus,
)
from services.escalation.service_layer import steps

log = logging.getLogger(__name__)


async def fire_due(conn: asyncpg.Connection, now: datetime, limit: int, *, deps: steps.Deps) -> list[datetime]:
    """Claim due timers (FOR UPDATE SKIP LOCKED), apply each, and return their due times (the scheduler's hook)."""
    timers = await repo.claim_due_timers(conn, now, limit)
    for timer in timers:
        await _FIRE[timer.kind](conn, deps, timer, now)
    return [t.due_at for t in timers]


async def _fire_warn(conn, deps: steps.Deps, timer: repo.Timer, now: datetime) -> None:
    before = (await steps.locked_case(conn, timer.case_id)).case
    clock = (await repo.get_clocks(conn, timer.case_id)).get(timer.clock)
    if clock is None or clock.status is not SlaStatus.ON_TRACK:
        return  # stale: the clock stopped, paused or moved since the timer was set
    await repo.save_clock(conn, timer.case_id, sla.warn(clock))  # the breach timer stays as it is
    await repo.save_case(conn, before, now=now)  # a new revision: watchers see the clock at risk
    await steps.audit(
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


async def _fire_breach(conn, deps: steps.Deps, timer: repo.Timer, now: datetime) -> None:
    policy = deps.policy()
    before = (await steps.locked_case(conn, timer.case_id)).case
    clock = (await repo.get_clocks(conn, timer.case_id)).get(timer.clock)
    if clock is None or clock.status not in sla.RUNNING:
        return
    await steps.save_clock(conn, timer.case_id, sla.breach(clock))
    # Each breach raises the case one tier for attention, starting above the frontline tier.
    attention = authority.escalated_role(policy, before.attention_role or policy.tiers[0])
    after = replace(before, sla_breach_count=before.sla_breach_count + 1, attention_role=attention)
    await repo.save_case(conn, after, now=now)
    event = wire.sla_breached(after, timer.clock, deadline_at=clock.deadline_at, at=now, escalated_to=attention)
    await steps.stage_event(
        conn,
        steps.SLA_BREACHED,
        event,
        key=after.customer_id,
        ce_id=f"sla-breached:{after.case_id}:{timer.clock.value}:{clock.started_at.isoformat()}",
        at=now,
    )
    await steps.audit(
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


async def _fire_approval_due(conn, deps: steps.Deps, timer: repo.Timer, now: datetime) -> None:
    policy = deps.policy()
    before = (await steps.locked_case(conn, timer.case_id)).case
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
        [(steps.APPROVAL_DUE, rerouted.decision_due_at)],
        approval_id=approval.approval_id,
    )
    await repo.save_case(conn, before, now=now)
    offer_record = await steps.load_offer(conn, rerouted.offer_id)
    await steps.stage_event(
        conn,
        steps.APPROVAL_REQUESTED,
        wire.approval_requested(rerouted, message=offer_record.message, rate=policy.rate_for(rerouted.amount.currency)),
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
    await steps.stage_event(
        conn,
        steps.SLA_BREACHED,
        breach,
        key=before.customer_id,
        ce_id=f"sla-breached:{before.case_id}:approval:{approval.approval_id}:{level}",
        at=now,
    )
    await steps.audit(
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


_FIRE = {sla.WARN: _fire_warn, sla.BREACH: _fire_breach, steps.APPROVAL_DUE: _fire_approval_due}


async def refresh_gauges(conn: asyncpg.Connection, *, deps: steps.Deps) -> None:
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
