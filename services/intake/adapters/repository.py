"""Intake's Postgres store: every query intake runs, each a function of a connection in a transaction.

Reports and classifications are kept as their protobuf messages (the versioned contract), so what the
store holds is exactly what was accepted and published.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from google.protobuf.message import Message
from recovery.events.v1 import common_pb2, events_pb2

from services.common.db import columns, lock_keys
from services.common.money import Money
from services.intake.adapters import wire
from services.intake.domain.acceptance import Amended, CustomerState, Granted, KnownCase, KnownFailure, Opened
from services.intake.domain.commands import RecordCompensation, RecordContact
from services.intake.domain.events import CaseAmended, CaseOpened
from services.intake.domain.hotspots import Occurrence, WindowKey
from services.intake.domain.model import (
    Area,
    CaseStatus,
    Category,
    FailureReport,
    Outlook,
    SatisfactionAnswer,
    Severity,
)
from services.intake.domain.rules import dedupe_key
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


# ------------------------------------------------------------------------------- accepting failures


class FailureStore:
    """What accepting failure reports reads and writes, on the unit of work's connection; a fixed number of
    statements per set of reports. Handlers get it with ``uow.repository(FailureStore)``; unit tests give them
    an in-memory fake instead."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def lock_customers(self, customer_ids: Iterable[str]) -> None:
        """Serialise this transaction with every other one about these customers (dedupe and merge decisions).

        One statement, the locks in one global order, so two transactions sharing customers queue, never deadlock.
        """
        await lock_keys(self._conn, "intake-customer", customer_ids)

    async def accepted_under(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], KnownFailure]:
        """Return the failures already accepted under these (source, source event id) keys."""
        keys = sorted(set(keys))
        rows = await self._conn.fetch(
            """SELECT f.failure_id, f.case_id, f.customer_id, f.occurred_at, f.received_at, f.source, f.source_event_id
               FROM failures f JOIN unnest($1::text[], $2::text[]) AS k(source, event_id)
                 ON f.source = k.source AND f.source_event_id = k.event_id""",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {
            (r["source"], r["source_event_id"]): KnownFailure(
                r["failure_id"], r["case_id"], r["customer_id"], r["occurred_at"], r["received_at"]
            )
            for r in rows
        }

    async def customer_states(
        self,
        customer_ids: Iterable[str],
        *,
        now: datetime,
        failure_lookback: timedelta,
        case_lookback: timedelta,
        references: Iterable[str] = (),
        related: Iterable[str] = (),
    ) -> dict[str, CustomerState]:
        """Return what intake knows of each customer: recent cases and failures, the unresolved cases under
        ``references`` and the ``related`` cases (which reports may join, with their failures' reports),
        compensation received and the last satisfaction answer. One statement, whatever the number of customers:
        each kind of row in its own branch of one result, told apart by ``kind``.
        """
        customers = sorted(set(customer_ids))
        states = {c: CustomerState(customer_id=c) for c in customers}
        references = sorted(set(references) - {""})
        related = sorted(set(related) - {""})
        rows = await self._conn.fetch(
            """WITH known AS (
                   SELECT case_id, customer_id, reference, status, first_failure_at, opened_at, revision,
                          case_id = ANY($4::text[]) OR (status <> 'resolved' AND reference = ANY($3::text[]))
                              AS joinable
                   FROM cases
                   WHERE customer_id = ANY($1::text[])
                     AND (opened_at >= $2 OR (status <> 'resolved' AND reference = ANY($3::text[]))
                          OR case_id = ANY($4::text[]))
               )
               SELECT 'case' AS kind, case_id, customer_id, reference, status, first_failure_at, opened_at, revision,
                      NULL::text AS failure_id, NULL::timestamptz AS occurred_at, NULL::timestamptz AS received_at,
                      NULL::bytea AS report, NULL::bigint AS amount_minor, NULL::text AS currency,
                      NULL::integer AS score, NULL::boolean AS satisfied
               FROM known
               UNION ALL
               -- Recent failures, and every failure of a case a report may join (with its report, to merge into).
               SELECT 'failure', f.case_id, f.customer_id, NULL, NULL, NULL, NULL, NULL, f.failure_id, f.occurred_at,
                      f.received_at, CASE WHEN j.case_id IS NOT NULL THEN f.report END, NULL, NULL, NULL, NULL
               -- Two selections, each through its own index: one WHERE with OR between them scans the table.
               FROM (SELECT * FROM failures WHERE customer_id = ANY($1::text[]) AND occurred_at >= $5
                     UNION
                     SELECT * FROM failures WHERE case_id IN (SELECT case_id FROM known WHERE joinable)) AS f
                    LEFT JOIN known j ON j.case_id = f.case_id AND j.joinable
               UNION ALL
               -- A case's authorisations add up (a split offer's two parts, a re-quote's difference): one sum per
               -- case and currency, dated by its latest authorisation in the window.
               SELECT 'granted', case_id, customer_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                      max(authorized_at), NULL, sum(amount_minor)::bigint, currency, NULL, NULL
               FROM compensations WHERE customer_id = ANY($1::text[]) AND authorized_at >= $2
               GROUP BY customer_id, case_id, currency
               UNION ALL
               SELECT * FROM (
                   SELECT DISTINCT ON (customer_id) 'answer', NULL::text, customer_id, NULL::text, NULL::text,
                          NULL::timestamptz, NULL::timestamptz, NULL::integer, NULL::text, NULL::timestamptz,
                          received_at, NULL::bytea, NULL::bigint, NULL::text, score, satisfied
                   FROM satisfaction WHERE customer_id = ANY($1::text[]) ORDER BY customer_id, received_at DESC
               ) AS last_answers""",
            customers,
            now - case_lookback,
            references,
            related,
            now - failure_lookback,
        )
        for r in rows:
            state = states[r["customer_id"]]
            match r["kind"]:
                case "case":
                    state.cases[r["case_id"]] = KnownCase(
                        case_id=r["case_id"],
                        customer_id=r["customer_id"],
                        reference=r["reference"],
                        resolved=r["status"] == "resolved",
                        first_failure_at=r["first_failure_at"],
                        opened_at=r["opened_at"],
                        revision=r["revision"],
                    )
                case "failure":
                    report = _report(r["report"]) if r["report"] is not None else None
                    state.failures[r["failure_id"]] = KnownFailure(
                        r["failure_id"], r["case_id"], r["customer_id"], r["occurred_at"], r["received_at"], report
                    )
                case "granted":
                    state.granted.append(
                        Granted(r["case_id"], Money(r["amount_minor"], r["currency"]), r["received_at"])
                    )
                case "answer":
                    state.last_satisfaction = _answer(r)
        return states

    async def save_decisions(self, decisions: Sequence[tuple[Opened | Amended, Message]]) -> None:
        """Write a batch's new cases, amended cases, failures and hot-spot queue entries in one statement.

        Each decision comes with its event message, whose classification, history and merged report are what the
        store keeps (encoded once for both). The failures' foreign key to their case is checked at the end of the
        statement, after the cases it inserts.
        """
        if not decisions:
            return
        # Each case's row as the batch leaves it: its last amendment wins (in decision order), and a case opened in
        # this batch is inserted with its amendments already in it (an UPDATE does not see a sibling's insert).
        opened = {d.event.case_id: (d.event, d.event, m, m) for d, m in decisions if isinstance(d, Opened)}
        amended: dict[str, tuple] = {}
        for d, m in decisions:
            if isinstance(d, Amended):
                case_id = d.event.case_id
                if case_id in opened:
                    opening, _, opening_message, _ = opened[case_id]
                    opened[case_id] = (opening, d.event, opening_message, m)
                else:
                    amended[case_id] = (d.event, m)
        rows = list(opened.values())
        changes = list(amended.values())
        failures = [
            (e.failure_id, e.case_id, e.report, e.opened_at, _bytes(wire.report_to_proto(e.report)))
            if isinstance(e, CaseOpened)
            else (e.failure_id, e.case_id, e.merged_report, e.amended_at, _bytes(m.merged_failure))
            for e, m in ((d.event, m) for d, m in decisions)
        ]
        await self._conn.execute(
            """WITH opened AS (
                   INSERT INTO cases (case_id, customer_id, reference, status, category, severity, outlook,
                                      owner_employee_id, owning_team, first_failure_at, opened_at, classification,
                                      history, revision)
                   SELECT case_id, customer_id, reference, 'open', category, severity, outlook, owner_employee_id,
                          owning_team, first_failure_at, opened_at, classification, history, revision
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                               $8::text[], $9::timestamptz[], $10::timestamptz[], $11::bytea[], $12::bytea[],
                               $34::int[])
                        AS n(case_id, customer_id, reference, category, severity, outlook, owner_employee_id,
                             owning_team, first_failure_at, opened_at, classification, history, revision)
               ), amended AS (
                   UPDATE cases c SET revision = a.revision, first_failure_at = a.first_failure_at,
                                      severity = a.severity, outlook = a.outlook,
                                      classification = a.classification, history = a.history
                   FROM unnest($13::text[], $14::int[], $15::timestamptz[], $16::text[], $17::text[], $18::bytea[],
                               $19::bytea[])
                        AS a(case_id, revision, first_failure_at, severity, outlook, classification, history)
                   WHERE c.case_id = a.case_id
               ), accepted AS (
                   INSERT INTO failures (failure_id, case_id, customer_id, source, source_event_id, occurred_at,
                                         received_at, report)
                   SELECT * FROM unnest($20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
                                        $25::timestamptz[], $26::timestamptz[], $27::bytea[])
               )
               -- Queued for hot-spot counting in the transaction that accepts them (no shared row to lock).
               INSERT INTO hotspot_queue (failure_id, occurred_at, received_at, category, component, release, team,
                                          employee_id, incident_id, risk_tags, location, customer_timezone)
               SELECT * FROM unnest($20::text[], $25::timestamptz[], $26::timestamptz[], $28::text[], $29::text[],
                                    $30::text[], $31::text[], $32::text[], $33::text[], $35::text[], $36::text[],
                                    $37::text[])""",
            [o.case_id for o, _, _, _ in rows],
            [o.report.customer_id for o, _, _, _ in rows],
            [o.report.reference for o, _, _, _ in rows],
            [o.report.category.value for o, _, _, _ in rows],
            [last.classification.severity.value for _, last, _, _ in rows],
            [last.classification.outlook.value for _, last, _, _ in rows],
            [o.owner_employee_id for o, _, _, _ in rows],
            [o.owning_team for o, _, _, _ in rows],
            [_first_failure_at(last) for _, last, _, _ in rows],
            [o.opened_at for o, _, _, _ in rows],
            [_bytes(m.classification) for _, _, _, m in rows],
            [_bytes(m.history) for _, _, _, m in rows],
            [e.case_id for e, _ in changes],
            [e.revision for e, _ in changes],
            [e.case_report.occurred_at for e, _ in changes],
            [e.classification.severity.value for e, _ in changes],
            [e.classification.outlook.value for e, _ in changes],
            [_bytes(m.classification) for _, m in changes],
            [_bytes(m.history) for _, m in changes],
            [failure_id for failure_id, *_ in failures],
            [case_id for _, case_id, *_ in failures],
            [report.customer_id for _, _, report, _, _ in failures],
            [report.source.value for _, _, report, _, _ in failures],
            # The dedupe id: the publisher's event id, prefixed by the publisher when the report is known by its
            # publisher only (rules.dedupe_key).
            [key[1] if (key := dedupe_key(r)) else r.source_event_id for _, _, r, _, _ in failures],
            [report.occurred_at for _, _, report, _, _ in failures],
            [received_at for _, _, _, received_at, _ in failures],
            [stored for *_, stored in failures],
            [report.category.value for _, _, report, _, _ in failures],
            [report.area.component for _, _, report, _, _ in failures],
            [report.area.release for _, _, report, _, _ in failures],
            [report.area.team for _, _, report, _, _ in failures],
            [report.area.employee_id for _, _, report, _, _ in failures],
            [report.incident_id for _, _, report, _, _ in failures],
            [_revision(last) for _, last, _, _ in rows],
            [",".join(sorted(t.value for t in report.risk_tags)) for _, _, report, _, _ in failures],
            [report.area.location for _, _, report, _, _ in failures],
            [report.customer_timezone for _, _, report, _, _ in failures],
        )


def _first_failure_at(event: CaseOpened | CaseAmended) -> datetime:
    """When the case's first failure happened, as of ``event`` (an amendment may bring an earlier one)."""
    return event.report.occurred_at if isinstance(event, CaseOpened) else event.case_report.occurred_at


def _revision(event: CaseOpened | CaseAmended) -> int:
    return 1 if isinstance(event, CaseOpened) else event.revision


# -------------------------------------------------------------------------------------- cases, failures


async def get_case(conn: asyncpg.Connection, case_id: str) -> CaseRow | None:
    """Return the case, or None when intake does not know it."""
    row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
    return _case(row) if row else None


async def get_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, CaseRow]:
    """Return the known cases among ``case_ids``, by id, in one query (none for no ids)."""
    ids = sorted(set(case_ids))
    if not ids:
        return {}
    rows = await conn.fetch("SELECT * FROM cases WHERE case_id = ANY($1::text[])", ids)
    return {row["case_id"]: _case(row) for row in rows}


async def set_case_status(
    conn: asyncpg.Connection, *, case_id: str, status: CaseStatus, resolved_at: datetime | None
) -> bool:
    """Record a case's status from escalation's events; False when intake does not know the case."""
    result = await conn.execute(
        "UPDATE cases SET status = $2, resolved_at = $3 WHERE case_id = $1", case_id, status.value, resolved_at
    )
    return result != "UPDATE 0"


# --------------------------------------------------------------------------------------------- history


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


async def failure_by_event(
    conn: asyncpg.Connection, *, source_event_id: str, source: str | None, publisher: str
) -> FailureRow | None:
    """Return the failure a publisher's event became, under either dedupe id it may have (rules.dedupe_key)."""
    ids = [source_event_id] + ([f"{publisher}/{source_event_id}"] if publisher else [])
    row = await conn.fetchrow(
        """SELECT * FROM failures WHERE source_event_id = ANY($1::text[]) AND ($2::text IS NULL OR source = $2)
           ORDER BY received_at LIMIT 1""",
        ids,
        source,
    )
    return _failure(row) if row else None


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


async def compensation_by_case(conn: asyncpg.Connection, case_ids: Sequence[str]) -> dict[str, tuple[Money, ...]]:
    """Return the compensation authorised on each case that has any: the sum of its authorisations, one amount per
    currency in currency order."""
    rows = await conn.fetch(
        """SELECT case_id, currency, sum(amount_minor)::bigint AS amount_minor FROM compensations
           WHERE case_id = ANY($1::text[]) GROUP BY case_id, currency ORDER BY case_id, currency""",
        list(case_ids),
    )
    found: dict[str, tuple[Money, ...]] = {}
    for r in rows:
        found[r["case_id"]] = (*found.get(r["case_id"], ()), Money(r["amount_minor"], r["currency"]))
    return found


async def satisfaction_by_case(conn: asyncpg.Connection, case_ids: Sequence[str]) -> dict[str, SatisfactionAnswer]:
    """Return each case's latest satisfaction answer."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (case_id) case_id, score, satisfied, received_at FROM satisfaction
           WHERE case_id = ANY($1::text[]) ORDER BY case_id, received_at DESC""",
        list(case_ids),
    )
    return {r["case_id"]: _answer(r) for r in rows}  # type: ignore[misc]


# ------------------------------------------------------------------------------ what customers received


async def record_compensations(conn: asyncpg.Connection, grants: Sequence[RecordCompensation]) -> None:
    """Record authorisations in one statement, each once under its authorisation id: a case's authorisations add
    up, and one delivered again (a redelivery, a republished copy) changes nothing."""
    if not grants:
        return
    rows = [
        (
            g.authorization_id,
            g.case_id,
            g.customer_id,
            g.offer_id,
            g.offer_version,
            g.part.value,
            g.amount.amount_minor,
            g.amount.currency,
            g.authorized_at,
        )
        for g in grants
    ]
    await conn.execute(
        """INSERT INTO compensations (authorization_id, case_id, customer_id, offer_id, offer_version, part,
                                      amount_minor, currency, authorized_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
                                $7::bigint[], $8::text[], $9::timestamptz[])
           ON CONFLICT (authorization_id) DO NOTHING""",
        *columns(rows, 9),
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


async def record_contacts(conn: asyncpg.Connection, contacts: Sequence[RecordContact]) -> None:
    """Record contact-log entries in one statement, each once under its id (a redelivery changes nothing)."""
    if not contacts:
        return
    await conn.execute(
        """INSERT INTO customer_contacts (contact_id, customer_id, case_id, occurred_at, entry)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bytea[])
           ON CONFLICT (contact_id) DO NOTHING""",
        *columns([(c.contact_id, c.customer_id, c.case_id, c.occurred_at, c.entry) for c in contacts], 5),
    )


async def customer_contacts(conn: asyncpg.Connection, *, customer_id: str, limit: int) -> list[bytes]:
    """Return the customer's most recent contact-log entries as published, newest first."""
    rows = await conn.fetch(
        """SELECT entry FROM customer_contacts WHERE customer_id = $1
           ORDER BY occurred_at DESC, contact_id LIMIT $2""",
        customer_id,
        limit,
    )
    return [bytes(r["entry"]) for r in rows]


# ------------------------------------------------------------------------------------------- hot spots


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
                area=Area(
                    component=r["component"],
                    release=r["release"],
                    team=r["team"],
                    employee_id=r["employee_id"],
                    location=r["location"],
                ),
                incident_id=r["incident_id"],
                risk_tags=tuple(tag for tag in r["risk_tags"].split(",") if tag),
                timezone=r["customer_timezone"],
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
