"""Intake's Postgres store: every query intake runs, each a function of a connection in a transaction.

Reports and classifications are kept as their protobuf messages (the versioned contract), so what the
store holds is exactly what was accepted and published.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from recovery.events.v1 import common_pb2, events_pb2

from services.common.money import Money
from services.intake.adapters import wire
from services.intake.domain.hotspots import Occurrence, WindowKey
from services.intake.domain.model import (
    Area,
    CaseStatus,
    Category,
    Classification,
    CustomerHistory,
    FailureReport,
    Outlook,
    SatisfactionAnswer,
    Severity,
)
from services.intake.domain.validation import accepted


@dataclass(frozen=True)
class CaseRow:
    """A case as intake stores it."""

    case_id: str
    customer_id: str
    reference: str
    status: CaseStatus
    category: Category
    severity: Severity
    outlook: Outlook
    owner_employee_id: str
    owning_team: str
    first_failure_at: datetime
    opened_at: datetime
    resolved_at: datetime | None
    revision: int
    classification: common_pb2.Classification
    history: common_pb2.HistorySummary


@dataclass(frozen=True)
class FailureRow:
    """A failure as intake stores it, with the case it belongs to."""

    failure_id: str
    case_id: str
    report: FailureReport
    received_at: datetime


def _case(row: asyncpg.Record) -> CaseRow:
    return CaseRow(
        case_id=row["case_id"],
        customer_id=row["customer_id"],
        reference=row["reference"],
        status=CaseStatus(row["status"]),
        category=Category(row["category"]),
        severity=Severity(row["severity"]),
        outlook=Outlook(row["outlook"]),
        owner_employee_id=row["owner_employee_id"],
        owning_team=row["owning_team"],
        first_failure_at=row["first_failure_at"],
        opened_at=row["opened_at"],
        resolved_at=row["resolved_at"],
        revision=row["revision"],
        classification=common_pb2.Classification.FromString(row["classification"]),
        history=common_pb2.HistorySummary.FromString(row["history"]),
    )


def _report(raw: bytes) -> FailureReport:
    return accepted(wire.command_from_event(events_pb2.FailureReported.FromString(raw)))


def _failure(row: asyncpg.Record) -> FailureRow:
    return FailureRow(
        failure_id=row["failure_id"],
        case_id=row["case_id"],
        report=_report(row["report"]),
        received_at=row["received_at"],
    )


def _bytes(message) -> bytes:
    return message.SerializeToString(deterministic=True)


# -------------------------------------------------------------------------------------------- locking


async def lock_customer(conn: asyncpg.Connection, customer_id: str) -> None:
    """Serialise this transaction with every other one about ``customer_id`` (dedupe and merge decisions)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('intake-customer:' || $1, 0))", customer_id)


# -------------------------------------------------------------------------------------- cases, failures


async def find_failure(conn: asyncpg.Connection, *, source: str, source_event_id: str) -> FailureRow | None:
    """Return the failure already accepted under (source, source event id), or None."""
    row = await conn.fetchrow(
        "SELECT * FROM failures WHERE source = $1 AND source_event_id = $2", source, source_event_id
    )
    return _failure(row) if row else None


async def get_case(conn: asyncpg.Connection, case_id: str) -> CaseRow | None:
    """Return the case, or None when intake does not know it."""
    row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
    return _case(row) if row else None


async def unresolved_cases(conn: asyncpg.Connection, *, customer_id: str, reference: str) -> list[CaseRow]:
    """Return the customer's unresolved cases for ``reference``, most recently opened first."""
    rows = await conn.fetch(
        """SELECT * FROM cases WHERE customer_id = $1 AND reference = $2 AND status <> 'resolved'
           ORDER BY opened_at DESC""",
        customer_id,
        reference,
    )
    return [_case(r) for r in rows]


async def case_failures(conn: asyncpg.Connection, case_id: str) -> list[FailureRow]:
    """Return the case's failures, oldest first (the first one opened the case)."""
    rows = await conn.fetch(
        "SELECT * FROM failures WHERE case_id = $1 ORDER BY occurred_at, received_at, failure_id", case_id
    )
    return [_failure(r) for r in rows]


async def insert_case(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    report: FailureReport,
    classification: Classification,
    history: CustomerHistory,
    owner_employee_id: str,
    owning_team: str,
    opened_at: datetime,
) -> None:
    """Store a new open case."""
    await conn.execute(
        """INSERT INTO cases (case_id, customer_id, reference, status, category, severity, outlook,
                              owner_employee_id, owning_team, first_failure_at, opened_at, classification, history)
           VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        case_id,
        report.customer_id,
        report.reference,
        report.category.value,
        classification.severity.value,
        classification.outlook.value,
        owner_employee_id,
        owning_team,
        report.occurred_at,
        opened_at,
        _bytes(wire.classification_to_proto(classification)),
        _bytes(wire.history_to_proto(history)),
    )


async def amend_case(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    revision: int,
    first_failure_at: datetime,
    classification: Classification,
    history: CustomerHistory,
) -> None:
    """Store a case's classification after another failure joined it."""
    await conn.execute(
        """UPDATE cases SET revision = $2, first_failure_at = $3, severity = $4, outlook = $5,
                            classification = $6, history = $7
           WHERE case_id = $1""",
        case_id,
        revision,
        first_failure_at,
        classification.severity.value,
        classification.outlook.value,
        _bytes(wire.classification_to_proto(classification)),
        _bytes(wire.history_to_proto(history)),
    )


async def insert_failure(
    conn: asyncpg.Connection, *, failure_id: str, case_id: str, report: FailureReport, received_at: datetime
) -> None:
    """Store an accepted failure in its case."""
    await conn.execute(
        """INSERT INTO failures (failure_id, case_id, customer_id, source, source_event_id, occurred_at,
                                 received_at, report)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        failure_id,
        case_id,
        report.customer_id,
        report.source.value,
        report.source_event_id,
        report.occurred_at,
        received_at,
        _bytes(wire.report_to_proto(report)),
    )


async def set_case_status(
    conn: asyncpg.Connection, *, case_id: str, status: CaseStatus, resolved_at: datetime | None
) -> bool:
    """Record a case's status from escalation's events; False when intake does not know the case."""
    result = await conn.execute(
        "UPDATE cases SET status = $2, resolved_at = $3 WHERE case_id = $1", case_id, status.value, resolved_at
    )
    return result != "UPDATE 0"


# --------------------------------------------------------------------------------------------- history


async def history(
    conn: asyncpg.Connection,
    *,
    customer_id: str,
    now: datetime,
    failure_lookback: timedelta,
    case_lookback: timedelta,
    exclude_case_id: str | None = None,
) -> CustomerHistory:
    """Return what intake knows of the customer before now, leaving out ``exclude_case_id``'s own records."""
    # One round trip: this runs for every accepted failure, so it is on intake's hot path.
    row = await conn.fetchrow(
        """SELECT
             ARRAY(SELECT occurred_at FROM failures
                   WHERE customer_id = $1 AND case_id <> $2 AND occurred_at >= $3
                   ORDER BY occurred_at) AS failure_times,
             (SELECT count(*) FROM cases
              WHERE customer_id = $1 AND case_id <> $2 AND opened_at >= $4) AS prior_cases,
             (SELECT json_object_agg(currency, total) FROM (
                 SELECT currency, sum(amount_minor) AS total FROM compensations
                 WHERE customer_id = $1 AND case_id <> $2 AND authorized_at >= $4 GROUP BY currency) AS sums
             ) AS received,
             last.score, last.satisfied, last.received_at
           FROM (SELECT 1) AS one
           LEFT JOIN LATERAL (
             SELECT score, satisfied, received_at FROM satisfaction
             WHERE customer_id = $1 ORDER BY received_at DESC LIMIT 1) AS last ON true""",
        customer_id,
        exclude_case_id or "",
        now - failure_lookback,
        now - case_lookback,
    )
    received = json.loads(row["received"] or "{}")
    return CustomerHistory(
        prior_failure_times=tuple(row["failure_times"]),
        prior_case_count=row["prior_cases"],
        compensation_received=tuple(Money(int(received[c]), c) for c in sorted(received)),
        last_satisfaction=_answer(row) if row["received_at"] else None,
        failure_lookback=failure_lookback,
        case_lookback=case_lookback,
    )


def _answer(row: asyncpg.Record | None) -> SatisfactionAnswer | None:
    if row is None:
        return None
    return SatisfactionAnswer(received_at=row["received_at"], score=row["score"], satisfied=row["satisfied"])


async def customer_failures(conn: asyncpg.Connection, *, customer_id: str, limit: int) -> list[FailureRow]:
    """Return the customer's most recent failures, newest first."""
    rows = await conn.fetch(
        "SELECT * FROM failures WHERE customer_id = $1 ORDER BY occurred_at DESC, received_at DESC LIMIT $2",
        customer_id,
        limit,
    )
    return [_failure(r) for r in rows]


async def customer_cases(conn: asyncpg.Connection, *, customer_id: str, limit: int) -> list[CaseRow]:
    """Return the customer's most recent cases, newest first."""
    rows = await conn.fetch(
        "SELECT * FROM cases WHERE customer_id = $1 ORDER BY opened_at DESC, case_id LIMIT $2", customer_id, limit
    )
    return [_case(r) for r in rows]


async def failure_ids_by_case(conn: asyncpg.Connection, case_ids: Sequence[str]) -> dict[str, list[str]]:
    """Return each case's failure ids, oldest first."""
    rows = await conn.fetch(
        """SELECT case_id, failure_id FROM failures WHERE case_id = ANY($1::text[])
           ORDER BY occurred_at, received_at, failure_id""",
        list(case_ids),
    )
    found: dict[str, list[str]] = {case_id: [] for case_id in case_ids}
    for row in rows:
        found[row["case_id"]].append(row["failure_id"])
    return found


async def compensation_by_case(conn: asyncpg.Connection, case_ids: Sequence[str]) -> dict[str, Money]:
    """Return the compensation authorised on each case that has any."""
    rows = await conn.fetch(
        "SELECT case_id, amount_minor, currency FROM compensations WHERE case_id = ANY($1::text[])", list(case_ids)
    )
    return {r["case_id"]: Money(r["amount_minor"], r["currency"]) for r in rows}


async def satisfaction_by_case(conn: asyncpg.Connection, case_ids: Sequence[str]) -> dict[str, SatisfactionAnswer]:
    """Return each case's latest satisfaction answer."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (case_id) case_id, score, satisfied, received_at FROM satisfaction
           WHERE case_id = ANY($1::text[]) ORDER BY case_id, received_at DESC""",
        list(case_ids),
    )
    return {r["case_id"]: _answer(r) for r in rows}  # type: ignore[misc]


# ------------------------------------------------------------------------------ what customers received


async def record_compensation(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    customer_id: str,
    offer_id: str,
    offer_version: int,
    amount: Money,
    authorized_at: datetime,
) -> None:
    """Record an authorised offer; a newer version of the case's offer replaces an older one, never the reverse."""
    await conn.execute(
        """INSERT INTO compensations (case_id, customer_id, offer_id, offer_version, amount_minor, currency,
                                      authorized_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (case_id) DO UPDATE SET offer_id = excluded.offer_id, offer_version = excluded.offer_version,
               amount_minor = excluded.amount_minor, currency = excluded.currency,
               authorized_at = excluded.authorized_at
           WHERE compensations.offer_version < excluded.offer_version""",
        case_id,
        customer_id,
        offer_id,
        offer_version,
        amount.amount_minor,
        amount.currency,
        authorized_at,
    )


async def record_satisfaction(
    conn: asyncpg.Connection,
    *,
    source: str,
    feedback_id: str,
    customer_id: str,
    case_id: str,
    answer: SatisfactionAnswer,
) -> None:
    """Record a satisfaction answer once per (source, feedback id)."""
    await conn.execute(
        """INSERT INTO satisfaction (source, feedback_id, customer_id, case_id, score, satisfied, received_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
        source,
        feedback_id,
        customer_id,
        case_id,
        answer.score,
        answer.satisfied,
        answer.received_at,
    )


# ------------------------------------------------------------------------------------------- hot spots


async def enqueue_for_hotspots(
    conn: asyncpg.Connection, *, failure_id: str, report: FailureReport, received_at: datetime
) -> None:
    """Queue an accepted failure for hot-spot counting (in the transaction that accepts it)."""
    area = report.area
    await conn.execute(
        """INSERT INTO hotspot_queue (failure_id, occurred_at, received_at, category, component, release, team,
                                      employee_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        failure_id,
        report.occurred_at,
        received_at,
        report.category.value,
        area.component,
        area.release,
        area.team,
        area.employee_id,
    )


async def claim_hotspot_queue(conn: asyncpg.Connection, *, limit: int) -> list[tuple[Occurrence, datetime]]:
    """Take up to ``limit`` queued failures, oldest first, skipping those another replica holds."""
    rows = await conn.fetch(
        """DELETE FROM hotspot_queue WHERE failure_id IN (
               SELECT failure_id FROM hotspot_queue ORDER BY received_at LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING *""",
        limit,
    )
    return [
        (
            Occurrence(
                occurred_at=r["occurred_at"],
                category=Category(r["category"]),
                area=Area(component=r["component"], release=r["release"], team=r["team"], employee_id=r["employee_id"]),
            ),
            r["received_at"],
        )
        for r in rows
    ]


async def add_counts(conn: asyncpg.Connection, counts: dict[WindowKey, int]) -> dict[WindowKey, int]:
    """Add ``counts`` to the stored window counts; returns each window's new total."""
    totals = {}
    # In key order, so two replicas adding to the same windows lock them in the same order (no deadlock).
    for key in sorted(counts):
        totals[key] = await conn.fetchval(
            """INSERT INTO hotspot_counts (dimension, value, window_start, count) VALUES ($1, $2, $3, $4)
               ON CONFLICT (dimension, value, window_start) DO UPDATE SET count = hotspot_counts.count + excluded.count
               RETURNING count""",
            key.dimension,
            key.value,
            key.window_start,
            counts[key],
        )
    return totals


async def baseline_total(conn: asyncpg.Connection, key: WindowKey, *, since: datetime) -> int:
    """Return the failures counted for the key's dimension value in windows from ``since`` up to the key's."""
    return await conn.fetchval(
        """SELECT coalesce(sum(count), 0)::bigint FROM hotspot_counts
           WHERE dimension = $1 AND value = $2 AND window_start >= $3 AND window_start < $4""",
        key.dimension,
        key.value,
        since,
        key.window_start,
    )


async def insert_hotspot(
    conn: asyncpg.Connection,
    *,
    hotspot_id: str,
    key: WindowKey,
    window_end: datetime,
    count: int,
    baseline_total: int,
    baseline_windows: int,
    detected_at: datetime,
) -> bool:
    """Record a hot window; False when this window was already reported (it is reported once)."""
    return bool(
        await conn.fetchval(
            """INSERT INTO hotspots (hotspot_id, dimension, value, window_start, window_end, count, baseline_total,
                                     baseline_windows, detected_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING true""",
            hotspot_id,
            key.dimension,
            key.value,
            key.window_start,
            window_end,
            count,
            baseline_total,
            baseline_windows,
            detected_at,
        )
    )


async def hotspot_windows(conn: asyncpg.Connection, *, dimension: str, value: str) -> list[tuple[datetime, int]]:
    """Return a dimension value's counted windows (start, count), oldest first."""
    rows = await conn.fetch(
        "SELECT window_start, count FROM hotspot_counts WHERE dimension = $1 AND value = $2 ORDER BY window_start",
        dimension,
        value,
    )
    return [(r["window_start"], r["count"]) for r in rows]


def ids(rows: Iterable) -> list[str]:
    """Return the case ids of ``rows``."""
    return [row.case_id for row in rows]
