"""Intake's handlers: one per command, run inside the caller's unit of work (transaction and outbox).

The consumer harness and the gRPC servicer open the unit of work; a handler loads what it needs, decides
with the pure domain, writes through the repository and stages its events, so the state change and the
events commit together or not at all; metrics are counted after commit. Failure reports are handled a set
at a time (``report_failures``); the frontline's single report is a set of one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from google.protobuf.message import Message

from services.common import outbox
from services.common.money import Money
from services.common.scheduler import utcnow
from services.common.topics import topic
from services.common.unit_of_work import UnitOfWork
from services.intake.adapters import repository, wire
from services.intake.adapters.metrics import IntakeMetrics
from services.intake.adapters.repository import CaseRow, FailureRow, FailureStore
from services.intake.domain import acceptance
from services.intake.domain.commands import (
    RecordCaseStatus,
    RecordCompensation,
    RecordContact,
    RecordSatisfaction,
    ReportFailure,
)
from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.events import CaseOpened, HotspotDetected
from services.intake.domain.hotspots import is_hot_spot, tally
from services.intake.domain.model import (
    CaseStatus,
    Classification,
    CustomerHistory,
    FailureReport,
    HotspotDimension,
    Reporter,
    SatisfactionAnswer,
    Source,
)
from services.intake.domain.policy import Policy
from services.intake.domain.rules import dedupe_key
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
    # The case's classification and history as this report left them; None for a duplicate (nothing changed).
    classification: Classification | None = None
    history: CustomerHistory | None = None


# ------------------------------------------------------------------------------------ failure reports


async def report_failures(
    uow: UnitOfWork,
    commands: Sequence[ReportFailure],
    *,
    deps: Deps,
    channel: str,
    reporters: Sequence[Reporter] = (),
) -> list[ReportOutcome | InvalidFailureReport]:
    """Accept a set of failures, in order: each opens a case, joins an open one, or is a duplicate.

    ``reporters`` gives each command's reporter (the caller of the call it came by); none: reported by systems.

    Returns one result per command: its outcome, or the InvalidFailureReport that refused it (a refused report
    changes nothing). A fixed number of round trips whatever the number of commands: lock the customers, load
    their state, decide in pure code, write each kind of row in one statement, stage the events.
    """
    started = time.perf_counter()
    now, policy = deps.clock(), deps.policy()
    results: list[ReportOutcome | InvalidFailureReport | None] = [None] * len(commands)
    valid: list[tuple[int, FailureReport]] = []
    for i, command in enumerate(commands):
        try:
            valid.append((i, validate_report(command, now=now)))
        except InvalidFailureReport as exc:
            results[i] = exc
    decisions: list[acceptance.Opened | acceptance.Amended] = []
    if valid:
        reports = [report for _, report in valid]
        store = uow.repository(FailureStore)
        await store.lock_customers(r.customer_id for r in reports)
        keys = [key for r in reports if (key := dedupe_key(r)) is not None]
        seen = {
            (Source(source), event_id): failure
            for (source, event_id), failure in (await store.accepted_under((s.value, e) for s, e in keys)).items()
        }
        states = await store.customer_states(
            (r.customer_id for r in reports),
            now=now,
            failure_lookback=policy.repeat_window,
            case_lookback=policy.case_lookback,
            references=(r.reference for r in reports),
            related=(r.related_case_id for r in reports),
        )
        for i, report in valid:
            state = states[report.customer_id]
            reporter = reporters[i] if reporters else NO_REPORTER
            try:
                decision = acceptance.accept(
                    report, state=state, seen=seen, policy=policy, now=now, reporter=reporter, new_id=deps.new_id
                )
            except InvalidFailureReport as exc:
                results[i] = exc
                continue
            state.record(decision)
            results[i] = _outcome(decision)
            if not isinstance(decision, acceptance.Duplicate):
                decisions.append(decision)
        messages = [_message(decision) for decision in decisions]
        await store.save_decisions(list(zip(decisions, messages, strict=True)))
        uow.stage(*(_record(d, m) for d, m in zip(decisions, messages, strict=True)))
    outcomes = [result for result in results if result is not None]
    assert len(outcomes) == len(commands)
    uow.after_commit(lambda: _count(deps, channel, commands, outcomes, decisions, time.perf_counter() - started))
    return outcomes


def _outcome(decision: acceptance.Decision) -> ReportOutcome:
    match decision:
        case acceptance.Duplicate(failure_id=failure_id, case_id=case_id):
            return ReportOutcome(failure_id=failure_id, case_id=case_id, duplicate=True)
        case acceptance.Opened(event=event):
            return ReportOutcome(
                failure_id=event.failure_id,
                case_id=event.case_id,
                classification=event.classification,
                history=event.history,
            )
        case acceptance.Amended(event=event):
            return ReportOutcome(
                failure_id=event.failure_id,
                case_id=event.case_id,
                merged=True,
                classification=event.classification,
                history=event.history,
            )


def _message(decision: acceptance.Opened | acceptance.Amended) -> Message:
    event = decision.event
    return wire.case_opened_to_proto(event) if isinstance(event, CaseOpened) else wire.case_amended_to_proto(event)


def _record(decision: acceptance.Opened | acceptance.Amended, message: Message) -> outbox.OutgoingRecord:
    event = decision.event
    if isinstance(event, CaseOpened):
        name, ce_id, at = CASE_OPENED, f"case-opened:{event.case_id}", event.opened_at
    else:
        name, ce_id, at = CASE_AMENDED, f"case-amended:{event.case_id}:{event.revision}", event.amended_at
    return outbox.event_record(name, message, key=message.customer_id, source=SOURCE, ce_id=ce_id, time=at)


def _count(
    deps: Deps,
    channel: str,
    commands: Sequence[ReportFailure],
    outcomes: Sequence[ReportOutcome | InvalidFailureReport],
    decisions: Sequence[acceptance.Opened | acceptance.Amended],
    seconds: float,
) -> None:
    """Count a committed batch: refusals, duplicates, cases opened, merges, failures received, time per report."""
    metrics = deps.metrics
    for command, outcome in zip(commands, outcomes, strict=True):
        if isinstance(outcome, InvalidFailureReport):
            metrics.refused.labels(channel=channel, field=_field_family(outcome)).inc()
        elif outcome.duplicate and command.source is not None:
            metrics.duplicates.labels(source=command.source.value).inc()
    for decision in decisions:
        event = decision.event
        report = event.report if isinstance(event, CaseOpened) else event.merged_report
        if isinstance(event, CaseOpened):
            metrics.cases_opened.labels(
                severity=event.classification.severity.value, outlook=event.classification.outlook.value
            ).inc()
        else:
            metrics.merges.inc()
        metrics.failures_received.labels(source=report.source.value, category=report.category.value).inc()
    for _ in commands:  # each report's share of the batch it was handled in
        metrics.processing.labels(channel=channel).observe(seconds / len(commands))


def _field_family(exc: InvalidFailureReport) -> str:
    # "reported_costs[3].amount.currency" -> "reported_costs.amount.currency": a bounded label set.
    if not exc.violations:
        return "unknown"
    return "".join(part.split("[")[0] for part in exc.violations[0].field.split("]"))


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


async def record_compensations(conn: asyncpg.Connection, commands: Sequence[RecordCompensation]) -> None:
    """Remember authorisations on cases, for the customers' history (a set at a time); they add up per case."""
    await repository.record_compensations(conn, commands)


async def record_case_status(conn: asyncpg.Connection, command: RecordCaseStatus) -> bool:
    """Remember a case's resolution or reopening; False when intake does not know the case."""
    resolved_at = command.at if command.status is CaseStatus.RESOLVED else None
    return await repository.set_case_status(
        conn, case_id=command.case_id, status=command.status, resolved_at=resolved_at
    )


async def record_contacts(conn: asyncpg.Connection, commands: Sequence[RecordContact]) -> None:
    """Remember contact-log entries of customers' cases, for the history at the point of contact (a set at a time)."""
    await repository.record_contacts(conn, commands)


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
    # The sum of the case's authorisations, one amount per currency; empty when none.
    compensation: tuple[Money, ...]
    satisfaction: SatisfactionAnswer | None


@dataclass(frozen=True)
class HistoryView:
    """A customer's history: the summary, recent failures and recent cases, newest first."""

    summary: CustomerHistory
    failures: tuple[FailureRow, ...]
    cases: tuple[CaseView, ...]
    contacts: tuple[bytes, ...] = ()  # contact-log entries as published (recovery.events.v1.Contact), newest first


async def customer_history(conn: asyncpg.Connection, customer_id: str, *, limit: int, deps: Deps) -> HistoryView:
    """Return what intake knows of the customer, so the frontline sees whether someone already handled them."""
    policy, now = deps.policy(), deps.clock()
    states = await FailureStore(conn).customer_states(
        [customer_id], now=now, failure_lookback=policy.repeat_window, case_lookback=policy.case_lookback
    )
    state = states[customer_id]
    summary = state.history(now=now, policy=policy)
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
            compensation=compensation.get(case.case_id, ()),
            satisfaction=satisfaction.get(case.case_id),
        )
        for case in cases
    )
    contacts = await repository.customer_contacts(conn, customer_id=customer_id, limit=limit)
    return HistoryView(summary=summary, failures=tuple(failures), cases=views, contacts=tuple(contacts))
