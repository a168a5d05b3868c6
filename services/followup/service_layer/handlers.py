"""Followup's handlers: one per command, run inside the caller's transaction (the unit of work).

The consumer harness, the scheduler and the gRPC servicer open the transaction; a handler decides with the
pure domain, writes through the repository and stages its events in the outbox, so the state change and
the events commit together or not at all. Handlers raise the domain's errors; the edges map them.

Every handler that changes a customer's schedule first takes the customer's lock: the contact cap reads
the customer's other contacts and then writes, and two transactions doing that at once could both fit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg

from services.common import outbox
from services.common.catalogue import Catalogue
from services.common.scheduler import utcnow
from services.common.topics import topic
from services.followup.adapters import repository, texts, wire
from services.followup.adapters.metrics import FollowupMetrics, label
from services.followup.domain import feedback as rules
from services.followup.domain.access import may_cancel
from services.followup.domain.commands import (
    CancelFollowup,
    HoldCaseFollowups,
    HoldCustomerFollowups,
    ListFollowups,
    NotifyCorrectiveAction,
    RecordFeedback,
    ScheduleFollowups,
    TellProgress,
)
from services.followup.domain.errors import (
    CaseNotFound,
    FieldViolation,
    FollowupClosed,
    FollowupNotFound,
    InvalidFeedback,
    NotYourFollowup,
    PreconditionViolation,
)
from services.followup.domain.events import CaseReopenRequested, FeedbackRecorded, RecoveryFailed
from services.followup.domain.model import (
    RESOLUTION_KINDS,
    CaseStatus,
    Channel,
    Followup,
    FollowupKind,
    FollowupStatus,
    Outlook,
    PlannedFollowup,
    ResolvedCase,
    Severity,
)
from services.followup.domain.policy import Policy
from services.followup.domain.schedule import DelayTuning, plan_notice, plan_progress, plan_resolution, postponed

log = logging.getLogger(__name__)

SOURCE = "followup"  # ce_source of everything followup publishes
FOLLOWUP_DUE = topic("recovery.followup-due.v1").name
REOPEN_REQUESTED = topic("recovery.case-reopen-requested.v1").name
FAILURE_REPORTED = topic("recovery.failure-reported.v1").name
FEEDBACK_RECEIVED = topic("recovery.feedback-received.v1").name


@dataclass(frozen=True)
class Deps:
    """What followup's handlers need besides the connection: policy in force, delay tuning, metrics, clock, ids."""

    policy: Callable[[], Policy]
    metrics: FollowupMetrics
    tuning: DelayTuning = field(default_factory=DelayTuning)
    clock: Callable[[], datetime] = utcnow
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())
    texts: Catalogue = field(default_factory=texts.catalogue)


def _followup(
    case: ResolvedCase, planned: PlannedFollowup, *, now: datetime, policy: Policy, catalogue: Catalogue, **extra
) -> Followup:
    return _planned_row(
        planned, case_id=case.case_id, customer_id=case.customer_id, channel=case.channel,
        owner_employee_id=case.owner_employee_id, customer_timezone=case.customer_timezone, locale=case.locale,
        severity=case.severity, outlook=case.outlook, now=now, policy=policy, catalogue=catalogue, **extra,
    )  # fmt: skip


def _planned_row(
    planned: PlannedFollowup,
    *,
    case_id: str,
    customer_id: str,
    channel: Channel | None,
    owner_employee_id: str,
    customer_timezone: str,
    locale: str,
    now: datetime,
    policy: Policy,
    catalogue: Catalogue,
    severity: Severity | None = None,
    outlook: Outlook | None = None,
    action_id: str = "",
    action_description: str = "",
) -> Followup:
    """Return the pending row of a planned follow-up, its text rendered in the customer's language."""
    return Followup(
        followup_id=repository.followup_id(case_id=case_id, kind=planned.kind, occasion=planned.occasion),
        case_id=case_id,
        customer_id=customer_id,
        kind=planned.kind,
        occasion=planned.occasion,
        status=FollowupStatus.PENDING,
        due_at=planned.due_at,
        original_due_at=planned.original_due_at,
        channel=channel or policy.default_channel,
        owner_employee_id=owner_employee_id,
        customer_timezone=customer_timezone,
        severity=severity,
        outlook=outlook,
        text=catalogue.render(planned.text, locale),
        action_id=action_id,
        action_description=action_description,
        contact=planned.contact,
        scheduled_at=now,
    )


async def _counted_contacts(
    conn: asyncpg.Connection, customer_id: str, *, around: datetime, policy: Policy, exclude: Sequence[str] = ()
) -> list[datetime]:
    """Return when the customer's contacts the cap counts are due, from one cap window before ``around`` on."""
    since = around - policy.contact_cap.window
    return await repository.contact_times(conn, customer_id, since=since, exclude=exclude, uncounted=policy.uncounted)


async def _hold_floor(conn: asyncpg.Connection, customer_id: str, case_id: str, policy: Policy) -> datetime | None:
    opened = await repository.latest_open_case(conn, customer_id, except_case_id=case_id)
    return None if opened is None else opened + policy.hold_after_new_failure


async def _insert(conn: asyncpg.Connection, rows: Sequence[Followup], *, policy: Policy, deps: Deps) -> int:
    new = await repository.insert_followups(conn, rows, policy_version=policy.version)
    for row in rows:
        if row.followup_id in new:
            deps.metrics.scheduled.labels(kind=row.kind.value).inc()
            if row.due_at > row.original_due_at:
                deps.metrics.pushed.labels(kind=row.kind.value).inc()
    return len(new)


# ------------------------------------------------------------------------------------------- schedules


async def schedule_followups(conn: asyncpg.Connection, command: ScheduleFollowups, *, deps: Deps) -> int:
    """Remember the resolved case and schedule its follow-ups; returns how many were new (0 for a redelivery)."""
    case = command.case
    await repository.lock_customer(conn, case.customer_id)
    if not await repository.save_case(conn, case):
        log.info("case %s: resolution %d is older than the one stored; ignored", case.case_id, case.resolution_number)
        return 0
    await repository.forget_open_case(conn, case.case_id)
    policy = deps.policy()
    contacts = await _counted_contacts(conn, case.customer_id, around=case.resolved_at, policy=policy)
    planned = plan_resolution(
        case,
        policy=policy,
        tuning=deps.tuning,
        contacts=contacts,
        floor=await _hold_floor(conn, case.customer_id, case.case_id, policy),
    )
    now = deps.clock()
    rows = [_followup(case, p, now=now, policy=policy, catalogue=deps.texts) for p in planned]
    return await _insert(conn, rows, policy=policy, deps=deps)


async def notify_corrective_action(conn: asyncpg.Connection, command: NotifyCorrectiveAction, *, deps: Deps) -> int:
    """Schedule one notice per customer whose case pointed at the fixed area (or is named, or was part of the
    named incident); returns how many new."""
    cases = await repository.cases_for_action(
        conn, area_key=command.area_key, related_case_ids=command.related_case_ids, incident_id=command.incident_id
    )
    policy = deps.policy()
    now = deps.clock()
    rows = []
    for case in sorted(cases, key=lambda c: c.customer_id):  # one lock order, so two such batches cannot deadlock
        await repository.lock_customer(conn, case.customer_id)
        contacts = await _counted_contacts(conn, case.customer_id, around=command.completed_at, policy=policy)
        planned = plan_notice(
            action_id=command.action_id,
            description=command.description,
            completed_at=command.completed_at,
            timezone=case.customer_timezone,
            policy=policy,
            tuning=deps.tuning,
            contacts=contacts,
            floor=await _hold_floor(conn, case.customer_id, case.case_id, policy),
        )
        rows.append(
            _followup(
                case,
                planned,
                now=now,
                policy=policy,
                catalogue=deps.texts,
                action_id=command.action_id,
                action_description=command.description,
            )
        )
    return await _insert(conn, rows, policy=policy, deps=deps)


async def tell_progress(conn: asyncpg.Connection, command: TellProgress, *, deps: Deps) -> int:
    """Plan the progress update of a case's move; a pending older update of the case is obsolete and cancelled
    (the customer hears the newest news once), and an update older than one planned already is kept cancelled
    as obsolete (a replay). Returns how many were new (0 for a redelivery)."""
    await repository.lock_customer(conn, command.customer_id)
    policy, now = deps.policy(), deps.clock()
    contacts = await _counted_contacts(conn, command.customer_id, around=command.progressed_at, policy=policy)
    planned = plan_progress(
        stage=command.stage,
        progressed_at=command.progressed_at,
        expected_by=command.expected_by,
        timezone=command.customer_timezone,
        policy=policy,
        tuning=deps.tuning,
        contacts=contacts,
    )
    row = _planned_row(
        planned, case_id=command.case_id, customer_id=command.customer_id, channel=command.channel,
        owner_employee_id=command.owner_employee_id, customer_timezone=command.customer_timezone,
        locale=command.locale, now=now, policy=policy, catalogue=deps.texts,
    )  # fmt: skip
    latest = await repository.latest_progress(conn, command.case_id)
    if latest is not None and latest > planned.original_due_at:
        row = replace(
            row, status=FollowupStatus.CANCELLED, cancelled_at=now, cancel_reason="obsolete: a newer update was planned"
        )
    else:
        older = [f for f in await repository.pending_of_case(conn, command.case_id) if f.kind is planned.kind]
        older = [f for f in older if f.followup_id != row.followup_id]
        await repository.cancel(
            conn, [f.followup_id for f in older], reason=f"obsolete: {command.stage.value} is newer", at=now
        )
        for followup in older:
            deps.metrics.cancelled.labels(kind=followup.kind.value, reason="obsolete").inc()
    return await _insert(conn, [row], policy=policy, deps=deps)


async def _postpone(
    conn: asyncpg.Connection, followups: Sequence[Followup], *, hold_until: datetime, deps: Deps
) -> int:
    policy = deps.policy()
    moved = 0
    for followup in sorted(followups, key=lambda f: f.due_at):
        contacts = await _counted_contacts(
            conn, followup.customer_id, around=hold_until, policy=policy, exclude=[followup.followup_id]
        )
        due = postponed(
            followup.due_at,
            hold_until=hold_until,
            timezone=followup.customer_timezone,
            policy=policy,
            contacts=contacts,
        )
        if due is not None:
            await repository.reschedule(conn, followup.followup_id, due)
            deps.metrics.held.labels(kind=followup.kind.value).inc()
            moved += 1
    return moved


async def hold_case_followups(conn: asyncpg.Connection, command: HoldCaseFollowups, *, deps: Deps) -> int:
    """A case was reopened: cancel its pending resolution follow-ups, hold its notices; returns how many changed.

    The next resolution of the case plans a fresh set (its own occasion); a corrective-action notice is not
    planned again, so it is postponed like any check-in during a new failure instead of being lost.
    """
    await repository.lock_customer(conn, command.customer_id)
    await repository.set_case_status(conn, command.case_id, CaseStatus.REOPENED)
    # While reopened the case is an open case: it holds the customer's other check-ins like a new failure.
    await repository.note_open_case(
        conn, case_id=command.case_id, customer_id=command.customer_id, opened_at=command.reopened_at
    )
    pending = await repository.pending_of_case(conn, command.case_id)
    cancelled = [f for f in pending if f.kind in RESOLUTION_KINDS]
    reason = f"case reopened: {command.reason}" if command.reason else "case reopened"
    await repository.cancel(conn, [f.followup_id for f in cancelled], reason=reason, at=deps.clock())
    for followup in cancelled:
        deps.metrics.cancelled.labels(kind=followup.kind.value, reason="case_reopened").inc()
    notices = [f for f in pending if f.kind is FollowupKind.CORRECTIVE_ACTION_NOTICE]
    hold_until = command.reopened_at + deps.policy().hold_after_new_failure
    held = await _postpone(conn, notices, hold_until=hold_until, deps=deps)
    held += await _postpone(
        conn,
        await repository.pending_contacts_of_customer(conn, command.customer_id, except_case_id=command.case_id),
        hold_until=hold_until,
        deps=deps,
    )
    return len(cancelled) + held


async def hold_customers_followups(
    conn: asyncpg.Connection, batch: Sequence[HoldCustomerFollowups], *, deps: Deps
) -> int:
    """New cases opened: postpone each customer's pending contacts of other cases past the hold, in order;
    returns how many follow-ups moved.

    Postponed rather than cancelled: the earlier recovery still deserves its check-in once this failure
    is dealt with; the hold ends ``hold.after_new_failure_hours`` after the new case opened (and a case still
    open when another is resolved holds that one's follow-ups the same way). Four statements for the set (lock,
    known cases, note the open cases, find the customers with pending check-ins); only those customers (few: a
    customer failed again while a check-in waits) have their check-ins postponed one by one.
    """
    if not batch:
        return 0
    await repository.lock_customers(conn, (c.customer_id for c in batch))
    known = await repository.known_cases(conn, (c.case_id for c in batch))
    # Read late, after the case was already resolved: it holds nothing any more.
    fresh = [c for c in batch if c.case_id not in known]
    await repository.note_open_cases(conn, [(c.case_id, c.customer_id, c.opened_at) for c in fresh])
    waiting = await repository.customers_with_pending_contacts(conn, (c.customer_id for c in fresh))
    moved = 0
    for command in fresh:
        if command.customer_id in waiting:
            others = await repository.pending_contacts_of_customer(
                conn, command.customer_id, except_case_id=command.case_id
            )
            hold_until = command.opened_at + deps.policy().hold_after_new_failure
            moved += await _postpone(conn, others, hold_until=hold_until, deps=deps)
    return moved


# ------------------------------------------------------------------------------------------- emission


async def fire_due(conn: asyncpg.Connection, now: datetime, limit: int, *, deps: Deps) -> list[datetime]:
    """Claim due follow-ups, stage one FollowupDue each (ce_id from the follow-up id), mark them sent.

    Runs in the scheduler's transaction: the status change and the outbox rows commit together, so a crash
    before commit leaves the rows pending (fired by the next round) and after commit they are never claimed
    again. Returns the due times it fired.
    """
    claimed = await repository.claim_due(conn, now=now, limit=limit)
    # Outbox staging locks each key; one order across replicas keeps two rounds from deadlocking.
    for followup in sorted(claimed, key=lambda f: f.customer_id):
        await outbox.stage(
            conn,
            outbox.event_record(
                FOLLOWUP_DUE,
                wire.followup_due_to_proto(followup),
                key=followup.customer_id,
                source=SOURCE,
                ce_id=f"followup-due:{followup.followup_id}",
                time=now,
            ),
        )
        deps.metrics.due.labels(kind=followup.kind.value).inc()
        deps.metrics.lateness.labels(kind=followup.kind.value).observe(
            max(0.0, (now - followup.due_at).total_seconds())
        )
    return [f.due_at for f in claimed]


async def refresh_gauges(conn: asyncpg.Connection, *, deps: Deps) -> None:
    """Set the pending and overdue gauges per kind from the store."""
    counts = await repository.counts_by_kind(conn, now=deps.clock())
    for kind in FollowupKind:
        pending, overdue = counts.get(kind.value, (0, 0))
        deps.metrics.pending.labels(kind=kind.value).set(pending)
        deps.metrics.overdue.labels(kind=kind.value).set(overdue)


# -------------------------------------------------------------------------------------------- feedback


@dataclass(frozen=True)
class FeedbackOutcome:
    """What an answer caused: whether it was new, and whether the case reopen was requested."""

    feedback_id: str
    reopen_requested: bool
    duplicate: bool = False


async def record_feedback(conn: asyncpg.Connection, command: RecordFeedback, *, deps: Deps) -> FeedbackOutcome:
    """Store an answer; a dissatisfied one asks escalation to reopen the case and reports the failed recovery.

    The same (source, feedback_id) again is a duplicate and changes nothing, which is also how followup's
    own republished FeedbackReceived is recognised. Raises InvalidFeedback or CaseNotFound.
    """
    feedback = rules.validate_feedback(command.feedback, satisfied_required=command.publish)
    feedback = rules.with_verdict(feedback, negative_below=deps.policy().negative_below)
    case = await repository.get_case(conn, feedback.case_id)
    if case is None and command.publish:
        raise CaseNotFound(f"case {feedback.case_id} is not known to followup (it was never resolved)")
    if case is not None:
        feedback = replace(feedback, customer_id=feedback.customer_id or case.customer_id)
        if feedback.customer_id != case.customer_id:
            raise InvalidFeedback.of(FieldViolation("customer_id", f"is not the customer of case {case.case_id}"))
    if feedback.followup_id:
        answered = await repository.get_followup(conn, feedback.followup_id)
        if answered is None or answered.case_id != feedback.case_id:
            raise InvalidFeedback.of(FieldViolation("followup_id", f"is not a follow-up of case {feedback.case_id}"))
    reopen = case is not None and rules.asks_reopen(feedback)
    first_verdict = (
        case is not None
        and feedback.satisfied is not None
        and await repository.first_answer_of_resolution(conn, case.case_id, since=case.resolved_at)
    )
    if not await repository.insert_feedback(conn, feedback, reopen_requested=reopen):
        return FeedbackOutcome(feedback_id=feedback.feedback_id, reopen_requested=False, duplicate=True)
    if feedback.followup_id:
        await repository.mark_answered(conn, feedback.followup_id, at=feedback.received_at)
    if case is None:
        log.warning("feedback %s is for case %s, never seen resolved", feedback.feedback_id, feedback.case_id)
    else:
        _count_feedback(case, feedback.satisfied, first_verdict=first_verdict, deps=deps)
    if command.publish:
        await _stage(conn, FEEDBACK_RECEIVED, wire.feedback_to_proto(FeedbackRecorded(feedback)), feedback, "feedback")
    if reopen:
        assert case is not None
        await _request_reopen(conn, case, feedback, deps=deps)
    return FeedbackOutcome(feedback_id=feedback.feedback_id, reopen_requested=reopen)


def _count_feedback(case: ResolvedCase, satisfied: bool | None, *, first_verdict: bool, deps: Deps) -> None:
    severity, outlook = label(case.severity), label(case.outlook)
    verdict = {True: "satisfied", False: "dissatisfied", None: "unknown"}[satisfied]
    deps.metrics.feedback.labels(severity=severity, outlook=outlook, verdict=verdict).inc()
    if first_verdict:
        outcome = "succeeded" if satisfied else "failed"
        deps.metrics.recoveries.labels(severity=severity, outlook=outlook, outcome=outcome).inc()


async def _stage(conn: asyncpg.Connection, topic_name: str, message, feedback, what: str) -> None:
    await outbox.stage(
        conn,
        outbox.event_record(
            topic_name,
            message,
            key=feedback.customer_id,
            source=SOURCE,
            # One business fact, one id: a retried transaction stages the same ce_id.
            ce_id=f"{what}:{feedback.source.value}:{feedback.feedback_id}",
        ),
    )


async def _request_reopen(conn: asyncpg.Connection, case: ResolvedCase, feedback, *, deps: Deps) -> None:
    reason = rules.reopen_reason(feedback)
    request = CaseReopenRequested(case=case, feedback=feedback, reason=reason, requested_at=deps.clock())
    await _stage(conn, REOPEN_REQUESTED, wire.reopen_requested_to_proto(request), feedback, "case-reopen-requested")
    failed = RecoveryFailed(
        case=case,
        feedback=feedback,
        source_event_id=rules.failure_event_id(feedback),
        description=f"The recovery of case {case.case_id} did not satisfy the customer: {reason}.",
    )
    await _stage(conn, FAILURE_REPORTED, wire.recovery_failed_to_proto(failed), feedback, "failure-reported")
    deps.metrics.reopen_requests.inc()


# ----------------------------------------------------------------------------------------------- staff


async def cancel_followup(conn: asyncpg.Connection, command: CancelFollowup, *, deps: Deps) -> Followup:
    """Cancel a pending follow-up and return it; cancelling a cancelled one returns it unchanged.

    Raises InvalidInput (no reason), FollowupNotFound, NotYourFollowup, or FollowupClosed (sent or answered).
    """
    if not command.reason.strip():
        raise InvalidFeedback.of(FieldViolation("reason", "is required: why the customer should not be contacted"))
    followup = await repository.get_followup(conn, command.followup_id, lock=True)
    if followup is None:
        raise FollowupNotFound(f"follow-up {command.followup_id} does not exist")
    case = await repository.get_case(conn, followup.case_id)
    case_team = case.team if case is not None else ""
    if not may_cancel(
        role=command.role, employee_id=command.employee_id, team=command.team, followup=followup, case_team=case_team
    ):
        raise NotYourFollowup(
            f"only the case owner or a team lead and above of its team may cancel follow-up {followup.followup_id}"
        )
    if followup.status is FollowupStatus.CANCELLED:
        return followup
    if followup.status is not FollowupStatus.PENDING:
        raise FollowupClosed(
            f"follow-up {followup.followup_id} is {followup.status.value}; only a pending one can be cancelled",
            (PreconditionViolation("STATE", f"followup/{followup.followup_id}", f"status is {followup.status.value}"),),
        )
    await repository.cancel(conn, [followup.followup_id], reason=command.reason, at=deps.clock())
    deps.metrics.cancelled.labels(kind=followup.kind.value, reason="staff").inc()
    cancelled = await repository.get_followup(conn, followup.followup_id)
    assert cancelled is not None
    return cancelled


async def list_followups(conn: asyncpg.Connection, query: ListFollowups) -> tuple[list[Followup], Followup | None]:
    """Return one page of follow-ups, soonest due first, and the last one of the page when more follow."""
    rows = await repository.list_followups(conn, query)
    page = rows[: query.page_size]
    return page, (page[-1] if len(rows) > query.page_size else None)
