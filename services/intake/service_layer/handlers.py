"""Intake's handlers: one per command, run inside the caller's transaction (the unit of work).

The consumer harness and the gRPC servicer open the transaction; a handler decides with the pure domain,
writes through the repository and stages its events in the outbox, so the state change and the events
commit together or not at all. Handlers raise the domain's errors; the edges map them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.common import outbox
from services.common.errors import FieldViolation
from services.common.money import Money
from services.common.scheduler import utcnow
from services.common.topics import topic
from services.intake.adapters import repository, wire
from services.intake.adapters.metrics import IntakeMetrics
from services.intake.adapters.repository import CaseRow, FailureRow
from services.intake.domain.classify import classify
from services.intake.domain.commands import RecordCaseStatus, RecordCompensation, RecordSatisfaction, ReportFailure
from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.events import CaseAmended, CaseOpened, HotspotDetected
from services.intake.domain.hotspots import is_hot_spot, tally
from services.intake.domain.model import (
    CaseStatus,
    CustomerHistory,
    FailureReport,
    HotspotDimension,
    OpenCaseSummary,
    Reporter,
    SatisfactionAnswer,
    Source,
)
from services.intake.domain.policy import Policy
from services.intake.domain.rules import combine, dedupe_key, owning_team, should_merge
from services.intake.domain.validation import validate_report

SOURCE = "intake"  # ce_source of everything intake publishes
NO_REPORTER = Reporter()  # reports from other systems: no frontline employee took them
CASE_OPENED = topic("recovery.case-opened.v1").name
CASE_AMENDED = topic("recovery.case-amended.v1").name
HOTSPOT_DETECTED = topic("recovery.hotspot-detected.v1").name


@dataclass(frozen=True)
class Deps:
    """What intake's handlers need besides the connection: the policy in force, metrics, a clock, ids."""

    policy: Callable[[], Policy]
    metrics: IntakeMetrics
    clock: Callable[[], datetime] = utcnow
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())


@dataclass(frozen=True)
class ReportOutcome:
    """What became of a report: the failure and case it is, and whether it merged or was a duplicate."""

    failure_id: str
    case_id: str
    merged: bool = False
    duplicate: bool = False


# ------------------------------------------------------------------------------------ failure reports


async def report_failure(
    conn: asyncpg.Connection, command: ReportFailure, *, deps: Deps, channel: str, reporter: Reporter = NO_REPORTER
) -> ReportOutcome:
    """Accept a failure: open a case or join an open one; raises InvalidFailureReport and changes nothing."""
    with deps.metrics.timed(channel):
        now = deps.clock()
        try:
            report = validate_report(command, now=now)
        except InvalidFailureReport as exc:
            deps.metrics.refused.labels(channel=channel, field=_field_family(exc)).inc()
            raise
        policy = deps.policy()
        await repository.lock_customer(conn, report.customer_id)
        if (seen := await _already_accepted(conn, report)) is not None:
            deps.metrics.duplicates.labels(source=report.source.value).inc()
            return ReportOutcome(failure_id=seen.failure_id, case_id=seen.case_id, duplicate=True)
        failure_id = deps.new_id()
        case = await _case_to_join(conn, report, policy)
        if case is None:
            opened = await _open_case(conn, report, failure_id, now=now, policy=policy, reporter=reporter, deps=deps)
            record = outbox.event_record(
                CASE_OPENED,
                wire.case_opened_to_proto(opened),
                key=report.customer_id,
                source=SOURCE,
                ce_id=f"case-opened:{opened.case_id}",
                time=now,
            )
            deps.metrics.cases_opened.labels(
                severity=opened.classification.severity.value, outlook=opened.classification.outlook.value
            ).inc()
            outcome = ReportOutcome(failure_id=failure_id, case_id=opened.case_id)
        else:
            amended = await _amend_case(conn, case, report, failure_id, now=now, policy=policy)
            record = outbox.event_record(
                CASE_AMENDED,
                wire.case_amended_to_proto(amended),
                key=report.customer_id,
                source=SOURCE,
                ce_id=f"case-amended:{amended.case_id}:{amended.revision}",
                time=now,
            )
            deps.metrics.merges.inc()
            outcome = ReportOutcome(failure_id=failure_id, case_id=case.case_id, merged=True)
        await outbox.stage(conn, record)
        await repository.enqueue_for_hotspots(conn, failure_id=failure_id, report=report, received_at=now)
        deps.metrics.failures_received.labels(source=report.source.value, category=report.category.value).inc()
        return outcome


def _field_family(exc: InvalidFailureReport) -> str:
    # "reported_costs[3].amount.currency" -> "reported_costs.amount.currency": a bounded label set.
    if not exc.violations:
        return "unknown"
    return "".join(part.split("[")[0] for part in exc.violations[0].field.split("]"))


async def _already_accepted(conn: asyncpg.Connection, report: FailureReport) -> FailureRow | None:
    key = dedupe_key(report)
    if key is None:
        return None
    seen = await repository.find_failure(conn, source=key[0].value, source_event_id=key[1])
    if seen is not None and seen.report.customer_id != report.customer_id:
        # The same event id for another customer is a publisher bug; dropping it as a duplicate would lose it.
        raise InvalidFailureReport.of(
            FieldViolation("source_event_id", f"already used by {key[0].value} for another customer's failure")
        )
    return seen


async def _case_to_join(conn: asyncpg.Connection, report: FailureReport, policy: Policy) -> CaseRow | None:
    """Return the case the report joins, or None when it opens a new one."""
    if report.source is Source.FOLLOWUP and report.related_case_id:
        # The recovery of that case failed: the failure belongs to it, whatever its age or status.
        related = await repository.get_case(conn, report.related_case_id)
        if related is not None and related.customer_id == report.customer_id:
            return related
    if not report.reference:
        return None
    for case in await repository.unresolved_cases(conn, customer_id=report.customer_id, reference=report.reference):
        summary = OpenCaseSummary(case.case_id, case.customer_id, case.reference, case.first_failure_at)
        if should_merge(report, summary, policy):
            return case
    return None


async def _history(
    conn: asyncpg.Connection, customer_id: str, *, now: datetime, policy: Policy, exclude_case_id: str | None = None
) -> CustomerHistory:
    return await repository.history(
        conn,
        customer_id=customer_id,
        now=now,
        failure_lookback=policy.repeat_window,
        case_lookback=policy.case_lookback,
        exclude_case_id=exclude_case_id,
    )


async def _open_case(
    conn: asyncpg.Connection,
    report: FailureReport,
    failure_id: str,
    *,
    now: datetime,
    policy: Policy,
    reporter: Reporter,
    deps: Deps,
) -> CaseOpened:
    history = await _history(conn, report.customer_id, now=now, policy=policy)
    event = CaseOpened(
        case_id=deps.new_id(),
        failure_id=failure_id,
        report=report,
        classification=classify(report, history, policy, now=now),
        history=history,
        owner_employee_id=report.reported_by_employee_id,
        # The role comes only with the reporter's own token; an owner named by another system has none here.
        owner_role=reporter.role if report.reported_by_employee_id else "",
        owning_team=owning_team(report, reporter_team=reporter.team, policy=policy),
        opened_at=now,
    )
    await repository.insert_case(
        conn,
        case_id=event.case_id,
        report=report,
        classification=event.classification,
        history=history,
        owner_employee_id=event.owner_employee_id,
        owning_team=event.owning_team,
        opened_at=now,
    )
    await repository.insert_failure(conn, failure_id=failure_id, case_id=event.case_id, report=report, received_at=now)
    return event


async def _amend_case(
    conn: asyncpg.Connection, case: CaseRow, report: FailureReport, failure_id: str, *, now: datetime, policy: Policy
) -> CaseAmended:
    earlier = [
        (f.report.occurred_at, f.received_at, f.failure_id, f.report)
        for f in await repository.case_failures(conn, case.case_id)
    ]
    failures = sorted([*earlier, (report.occurred_at, now, failure_id, report)], key=lambda f: (f[0], f[1], f[2]))
    case_report = combine([f[3] for f in failures])
    # A failed recovery is a second failure of the customer, so the case's own failures count as history then;
    # otherwise they are one incident seen twice (a system and the customer reporting the same late parcel).
    excluded = None if report.source is Source.FOLLOWUP else case.case_id
    history = await _history(conn, report.customer_id, now=now, policy=policy, exclude_case_id=excluded)
    event = CaseAmended(
        case_id=case.case_id,
        revision=case.revision + 1,
        failure_id=failure_id,
        merged_report=report,
        failure_ids=tuple(f[2] for f in failures),
        case_report=case_report,
        classification=classify(case_report, history, policy, now=now),
        history=history,
        amended_at=now,
    )
    await repository.insert_failure(conn, failure_id=failure_id, case_id=case.case_id, report=report, received_at=now)
    await repository.amend_case(
        conn,
        case_id=case.case_id,
        revision=event.revision,
        first_failure_at=case_report.occurred_at,
        classification=event.classification,
        history=history,
    )
    return event


# ------------------------------------------------------------------------------------------- hot spots


async def detect_hotspots(conn: asyncpg.Connection, now: datetime, limit: int, *, deps: Deps) -> list[datetime]:
    """Count up to ``limit`` queued failures and report each window that became hot; returns their receipt times."""
    claimed = await repository.claim_hotspot_queue(conn, limit=limit)
    if not claimed:
        return []
    policy = deps.policy()
    added = tally([occurrence for occurrence, _ in claimed], policy)
    totals = await repository.add_counts(conn, added)
    for key, count in totals.items():
        deps.metrics.count_area(key.dimension, key.value, added[key])
        dimension = HotspotDimension(key.dimension)
        window = policy.hotspot_window(dimension)
        baseline = await repository.baseline_total(
            conn, key, since=key.window_start - window.size * window.baseline_windows
        )
        if not is_hot_spot(count, baseline, window.baseline_windows, policy=policy):
            continue
        event = HotspotDetected(
            hotspot_id=f"hotspot:{key.dimension}:{key.value}:{int(key.window_start.timestamp())}",
            dimension=dimension,
            value=key.value,
            window_start=key.window_start,
            window_end=key.window_start + window.size,
            count=count,
            baseline_total=baseline,
            baseline_windows=window.baseline_windows,
            factor_bps=policy.hotspot_factor_bps,
            detected_at=now,
        )
        if await repository.insert_hotspot(
            conn,
            hotspot_id=event.hotspot_id,
            key=key,
            window_end=event.window_end,
            count=count,
            baseline_total=baseline,
            baseline_windows=window.baseline_windows,
            detected_at=now,
        ):
            message = wire.hotspot_to_proto(event)
            await outbox.stage(
                conn,
                outbox.event_record(
                    HOTSPOT_DETECTED, message, key=message.customer_id, source=SOURCE, ce_id=event.hotspot_id, time=now
                ),
            )
            deps.metrics.hotspots.labels(dimension=key.dimension).inc()
    return [received_at for _, received_at in claimed]


# ------------------------------------------------------------------------- what downstream services did


async def record_compensation(conn: asyncpg.Connection, command: RecordCompensation) -> None:
    """Remember what was authorised on a case, for the customer's history."""
    await repository.record_compensation(
        conn,
        case_id=command.case_id,
        customer_id=command.customer_id,
        offer_id=command.offer_id,
        offer_version=command.offer_version,
        amount=command.amount,
        authorized_at=command.authorized_at,
    )


async def record_case_status(conn: asyncpg.Connection, command: RecordCaseStatus) -> bool:
    """Remember a case's resolution or reopening; False when intake does not know the case."""
    resolved_at = command.at if command.status is CaseStatus.RESOLVED else None
    return await repository.set_case_status(
        conn, case_id=command.case_id, status=command.status, resolved_at=resolved_at
    )


async def record_satisfaction(conn: asyncpg.Connection, command: RecordSatisfaction) -> None:
    """Remember a customer's satisfaction answer, once per (source, feedback id)."""
    await repository.record_satisfaction(
        conn,
        source=command.source,
        feedback_id=command.feedback_id,
        customer_id=command.customer_id,
        case_id=command.case_id,
        answer=command.answer,
    )


# ---------------------------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class CaseView:
    """One case with what the customer received and said about it."""

    case: CaseRow
    failure_ids: tuple[str, ...]
    compensation: Money | None
    satisfaction: SatisfactionAnswer | None


@dataclass(frozen=True)
class HistoryView:
    """A customer's history: the summary, recent failures and recent cases, newest first."""

    summary: CustomerHistory
    failures: tuple[FailureRow, ...]
    cases: tuple[CaseView, ...]


async def customer_history(conn: asyncpg.Connection, customer_id: str, *, limit: int, deps: Deps) -> HistoryView:
    """Return what intake knows of the customer, so the frontline sees whether someone already handled them."""
    policy = deps.policy()
    summary = await _history(conn, customer_id, now=deps.clock(), policy=policy)
    failures = await repository.customer_failures(conn, customer_id=customer_id, limit=limit)
    cases = await repository.customer_cases(conn, customer_id=customer_id, limit=limit)
    case_ids = [case.case_id for case in cases]
    failure_ids = await repository.failure_ids_by_case(conn, case_ids)
    compensation = await repository.compensation_by_case(conn, case_ids)
    satisfaction = await repository.satisfaction_by_case(conn, case_ids)
    views = tuple(
        CaseView(
            case=case,
            failure_ids=tuple(failure_ids.get(case.case_id, ())),
            compensation=compensation.get(case.case_id),
            satisfaction=satisfaction.get(case.case_id),
        )
        for case in cases
    )
    return HistoryView(summary=summary, failures=tuple(failures), cases=views)
