"""Followup's Postgres store: every query followup runs, each a function of a connection in a transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg

from services.common.db import lock_keys
from services.common.texts import FALLBACK_LOCALE, CustomerText
from services.followup.domain.commands import ListFollowups
from services.followup.domain.model import (
    CaseStatus,
    Category,
    Channel,
    Feedback,
    Followup,
    FollowupKind,
    FollowupStatus,
    Outlook,
    ResolvedCase,
    Severity,
)

# Follow-up ids are derived from the business key, so a redelivered event maps onto the same row.
_ID_NAMESPACE = uuid.UUID("6f0c1a52-8d0e-4b8e-9a59-0c9b7e1f6c11")
_FOLLOWUP_COLUMNS = """followup_id, case_id, customer_id, kind, occasion, status, due_at, original_due_at, contact,
    channel, owner_employee_id, customer_timezone, severity, outlook, message, action_id, action_description,
    scheduled_at, sent_at, cancelled_at, cancel_reason, locale, template_id, template_params"""


def followup_id(*, case_id: str, kind: FollowupKind, occasion: str) -> str:
    """Return the id of the follow-up (case, kind, occasion): the same key always gives the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{case_id}\x1f{kind.value}\x1f{occasion}"))


def _value(member) -> str | None:
    return None if member is None else member.value


def _member(enum_type, value):
    return None if value is None else enum_type(value)


async def lock_customer(conn: asyncpg.Connection, customer_id: str) -> None:
    """Serialise schedule changes of one customer until the transaction ends (the cap reads, then writes)."""
    await lock_customers(conn, [customer_id])


async def lock_customers(conn: asyncpg.Connection, customer_ids: Iterable[str]) -> None:
    """``lock_customer`` for a set of customers in one statement, in one global order (no deadlock between sets)."""
    await lock_keys(conn, "followup-customer", customer_ids)


# ---------------------------------------------------------------------------------------------- cases


async def save_case(conn: asyncpg.Connection, case: ResolvedCase) -> bool:
    """Store (or refresh) a resolved case; False when a later resolution of it is already stored."""
    row = await conn.fetchval(
        """INSERT INTO cases (case_id, customer_id, status, owner_employee_id, team, severity, outlook, category,
                              customer_timezone, channel, root_component, root_team, area_key, resolution_number,
                              resolved_at, incident_id, locale)
           VALUES ($1, $2, 'resolved', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           ON CONFLICT (case_id) DO UPDATE SET
               status = 'resolved', owner_employee_id = EXCLUDED.owner_employee_id, team = EXCLUDED.team,
               severity = EXCLUDED.severity, outlook = EXCLUDED.outlook, category = EXCLUDED.category,
               customer_timezone = EXCLUDED.customer_timezone, channel = EXCLUDED.channel,
               root_component = EXCLUDED.root_component, root_team = EXCLUDED.root_team,
               area_key = EXCLUDED.area_key, resolution_number = EXCLUDED.resolution_number,
               resolved_at = EXCLUDED.resolved_at, incident_id = EXCLUDED.incident_id, locale = EXCLUDED.locale,
               updated_at = now()
           WHERE cases.resolution_number <= EXCLUDED.resolution_number
           RETURNING true""",
        case.case_id,
        case.customer_id,
        case.owner_employee_id,
        case.team,
        _value(case.severity),
        _value(case.outlook),
        _value(case.category),
        case.customer_timezone,
        _value(case.channel),
        case.root_component,
        case.root_team,
        case.area_key,
        case.resolution_number,
        case.resolved_at,
        case.incident_id,
        case.locale or FALLBACK_LOCALE,
    )
    return bool(row)


def _case(row: asyncpg.Record) -> ResolvedCase:
    return ResolvedCase(
        case_id=row["case_id"],
        customer_id=row["customer_id"],
        owner_employee_id=row["owner_employee_id"],
        team=row["team"],
        severity=_member(Severity, row["severity"]),
        outlook=_member(Outlook, row["outlook"]),
        category=_member(Category, row["category"]),
        resolved_at=row["resolved_at"],
        customer_timezone=row["customer_timezone"],
        channel=_member(Channel, row["channel"]),
        root_component=row["root_component"],
        root_team=row["root_team"],
        resolution_number=row["resolution_number"],
        incident_id=row["incident_id"],
        locale=row["locale"],
    )


async def get_case(conn: asyncpg.Connection, case_id: str) -> ResolvedCase | None:
    """Return the resolved case, or None when followup never saw it resolved."""
    row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
    return None if row is None else _case(row)


async def known_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> set[str]:
    """Return which of ``case_ids`` followup has seen resolved."""
    rows = await conn.fetch("SELECT case_id FROM cases WHERE case_id = ANY($1::text[])", sorted(set(case_ids)))
    return {row["case_id"] for row in rows}


async def set_case_status(conn: asyncpg.Connection, case_id: str, status: CaseStatus) -> None:
    """Record that a remembered case was reopened (or resolved again)."""
    await conn.execute("UPDATE cases SET status = $2, updated_at = now() WHERE case_id = $1", case_id, status.value)


async def cases_for_action(
    conn: asyncpg.Connection, *, area_key: str | None, related_case_ids: Sequence[str], incident_id: str = ""
) -> list[ResolvedCase]:
    """Return one case per customer (their latest) whose root cause is the area, that the action names, or that
    was part of its incident."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (customer_id) *
           FROM cases
           WHERE (area_key = $1) OR case_id = ANY($2::text[]) OR ($3 <> '' AND incident_id = $3)
           ORDER BY customer_id, resolved_at DESC, case_id""",
        area_key,
        list(related_case_ids),
        incident_id,
    )
    return [_case(row) for row in rows]


async def note_open_case(conn: asyncpg.Connection, *, case_id: str, customer_id: str, opened_at: datetime) -> None:
    """Remember that the customer has an open case (we are failing them again)."""
    await conn.execute(
        "INSERT INTO open_cases (case_id, customer_id, opened_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        case_id,
        customer_id,
        opened_at,
    )


async def note_open_cases(conn: asyncpg.Connection, cases: Sequence[tuple[str, str, datetime]]) -> None:
    """``note_open_case`` for (case id, customer id, opened at) rows, in one statement."""
    if cases:
        await conn.execute(
            """INSERT INTO open_cases (case_id, customer_id, opened_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) ON CONFLICT DO NOTHING""",
            [case_id for case_id, _, _ in cases],
            [customer_id for _, customer_id, _ in cases],
            [opened_at for _, _, opened_at in cases],
        )


async def forget_open_case(conn: asyncpg.Connection, case_id: str) -> None:
    """The case was resolved: it no longer holds the customer's other follow-ups."""
    await conn.execute("DELETE FROM open_cases WHERE case_id = $1", case_id)


async def latest_open_case(conn: asyncpg.Connection, customer_id: str, *, except_case_id: str) -> datetime | None:
    """Return when the customer's latest other open case opened, or None when there is none."""
    return await conn.fetchval(
        "SELECT max(opened_at) FROM open_cases WHERE customer_id = $1 AND case_id <> $2", customer_id, except_case_id
    )


# ------------------------------------------------------------------------------------------ follow-ups


def _followup(row: asyncpg.Record) -> Followup:
    return Followup(
        followup_id=row["followup_id"],
        case_id=row["case_id"],
        customer_id=row["customer_id"],
        kind=FollowupKind(row["kind"]),
        occasion=row["occasion"],
        status=FollowupStatus(row["status"]),
        due_at=row["due_at"],
        original_due_at=row["original_due_at"],
        contact=row["contact"],
        channel=_member(Channel, row["channel"]),
        owner_employee_id=row["owner_employee_id"],
        customer_timezone=row["customer_timezone"],
        severity=_member(Severity, row["severity"]),
        outlook=_member(Outlook, row["outlook"]),
        text=CustomerText(
            row["template_id"], tuple(sorted(json.loads(row["template_params"]).items())), row["locale"], row["message"]
        ),
        action_id=row["action_id"],
        action_description=row["action_description"],
        scheduled_at=row["scheduled_at"],
        sent_at=row["sent_at"],
        cancelled_at=row["cancelled_at"],
        cancel_reason=row["cancel_reason"],
    )


async def contact_times(
    conn: asyncpg.Connection,
    customer_id: str,
    *,
    since: datetime,
    exclude: Iterable[str] = (),
    uncounted: Iterable[FollowupKind] = (),
) -> list[datetime]:
    """Return the due times of the customer's contacts (pending, sent or answered) from ``since`` on that the
    cap counts (not those of the ``uncounted`` kinds)."""
    rows = await conn.fetch(
        """SELECT due_at FROM followups
           WHERE customer_id = $1 AND contact AND status <> 'cancelled' AND due_at >= $2
             AND NOT followup_id = ANY($3::text[]) AND NOT kind = ANY($4::text[])""",
        customer_id,
        since,
        list(exclude),
        [kind.value for kind in uncounted],
    )
    return [row["due_at"] for row in rows]


async def insert_followups(conn: asyncpg.Connection, followups: Sequence[Followup], *, policy_version: str) -> set[str]:
    """Insert follow-ups, skipping any whose business key exists already; returns the ids that were new."""
    if not followups:
        return set()
    inserted = await conn.fetch(
        f"""INSERT INTO followups ({_FOLLOWUP_COLUMNS}, policy_version)
            SELECT * , $25::text FROM unnest(
                $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                $8::timestamptz[], $9::boolean[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                $15::text[], $16::text[], $17::text[], $18::timestamptz[], $19::timestamptz[], $20::timestamptz[],
                $21::text[], $22::text[], $23::text[], $24::jsonb[])
            ON CONFLICT DO NOTHING
            RETURNING followup_id""",
        [f.followup_id for f in followups],
        [f.case_id for f in followups],
        [f.customer_id for f in followups],
        [f.kind.value for f in followups],
        [f.occasion for f in followups],
        [f.status.value for f in followups],
        [f.due_at for f in followups],
        [f.original_due_at for f in followups],
        [f.contact for f in followups],
        [_value(f.channel) for f in followups],
        [f.owner_employee_id for f in followups],
        [f.customer_timezone for f in followups],
        [_value(f.severity) for f in followups],
        [_value(f.outlook) for f in followups],
        [f.text.text for f in followups],
        [f.action_id for f in followups],
        [f.action_description for f in followups],
        [f.scheduled_at for f in followups],
        [f.sent_at for f in followups],
        [f.cancelled_at for f in followups],
        [f.cancel_reason for f in followups],
        [f.text.locale for f in followups],
        [f.text.template_id for f in followups],
        [json.dumps(f.text.wire_params(), sort_keys=True) for f in followups],
        policy_version,
    )
    return {row["followup_id"] for row in inserted}


# A new failure holds check-ins and notices, not progress updates: they are about a case in hand.
NOT_HELD = FollowupKind.PROGRESS_UPDATE.value


async def latest_progress(conn: asyncpg.Connection, case_id: str) -> datetime | None:
    """Return when the case's newest progress update (any status) was first due, or None when it has none."""
    return await conn.fetchval(
        "SELECT max(original_due_at) FROM followups WHERE case_id = $1 AND kind = $2", case_id, NOT_HELD
    )


async def pending_of_case(conn: asyncpg.Connection, case_id: str) -> list[Followup]:
    """Return the case's pending follow-ups, locked for update."""
    rows = await conn.fetch(
        f"SELECT {_FOLLOWUP_COLUMNS} FROM followups WHERE case_id = $1 AND status = 'pending' FOR UPDATE", case_id
    )
    return [_followup(row) for row in rows]


async def pending_contacts_of_customer(
    conn: asyncpg.Connection, customer_id: str, *, except_case_id: str
) -> list[Followup]:
    """Return the customer's pending contact follow-ups of cases other than ``except_case_id``, locked."""
    rows = await conn.fetch(
        f"""SELECT {_FOLLOWUP_COLUMNS} FROM followups
            WHERE customer_id = $1 AND case_id <> $2 AND status = 'pending' AND contact AND kind <> $3
            ORDER BY due_at FOR UPDATE""",
        customer_id,
        except_case_id,
        NOT_HELD,
    )
    return [_followup(row) for row in rows]


async def customers_with_pending_contacts(conn: asyncpg.Connection, customer_ids: Iterable[str]) -> set[str]:
    """Return which of the customers have a pending contact follow-up (the ones a new case may hold)."""
    rows = await conn.fetch(
        """SELECT DISTINCT customer_id FROM followups
           WHERE customer_id = ANY($1::text[]) AND status = 'pending' AND contact AND kind <> $2""",
        sorted(set(customer_ids)),
        NOT_HELD,
    )
    return {row["customer_id"] for row in rows}


async def reschedule(conn: asyncpg.Connection, followup_id: str, due_at: datetime) -> None:
    """Move a pending follow-up to ``due_at`` (its original due time stays)."""
    await conn.execute(
        "UPDATE followups SET due_at = $2 WHERE followup_id = $1 AND status = 'pending'", followup_id, due_at
    )


async def cancel(conn: asyncpg.Connection, followup_ids: Sequence[str], *, reason: str, at: datetime) -> None:
    """Cancel pending follow-ups with a reason."""
    await conn.execute(
        """UPDATE followups SET status = 'cancelled', cancelled_at = $2, cancel_reason = $3
           WHERE followup_id = ANY($1::text[]) AND status = 'pending'""",
        list(followup_ids),
        at,
        reason,
    )


async def get_followup(conn: asyncpg.Connection, followup_id: str, *, lock: bool = False) -> Followup | None:
    """Return the follow-up (locked for update when ``lock``), or None."""
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(f"SELECT {_FOLLOWUP_COLUMNS} FROM followups WHERE followup_id = $1{suffix}", followup_id)
    return None if row is None else _followup(row)


async def mark_answered(conn: asyncpg.Connection, followup_id: str, *, at: datetime) -> bool:
    """Mark a pending or sent follow-up answered; False when it is not (cancelled, answered, unknown)."""
    return bool(
        await conn.fetchval(
            """UPDATE followups SET status = 'answered', answered_at = $2
               WHERE followup_id = $1 AND status IN ('pending', 'sent') RETURNING true""",
            followup_id,
            at,
        )
    )


async def claim_due(conn: asyncpg.Connection, *, now: datetime, limit: int) -> list[Followup]:
    """Claim up to ``limit`` pending follow-ups due at ``now`` (skipping rows other replicas hold), mark them sent.

    The update commits with the caller's outbox rows: the row is sent exactly when its event is staged.
    """
    rows = await conn.fetch(
        f"""WITH due AS (
                SELECT followup_id FROM followups
                WHERE status = 'pending' AND due_at <= $1
                ORDER BY due_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED)
            UPDATE followups f SET status = 'sent', sent_at = $1
            FROM due WHERE f.followup_id = due.followup_id
            RETURNING {", ".join("f." + c.strip() for c in _FOLLOWUP_COLUMNS.split(","))}""",
        now,
        limit,
    )
    return [_followup(row) for row in rows]


async def list_followups(conn: asyncpg.Connection, query: ListFollowups) -> list[Followup]:
    """Return one page (plus one row, to tell whether more follow) of a case's or customer's follow-ups."""
    after_due, after_id = query.after or (None, "")
    rows = await conn.fetch(
        f"""SELECT {_FOLLOWUP_COLUMNS} FROM followups
            WHERE ($1::text IS NULL OR case_id = $1) AND ($2::text IS NULL OR customer_id = $2)
              AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[]))
              AND ($4::timestamptz IS NULL OR (due_at, followup_id) > ($4, $5))
            ORDER BY due_at, followup_id
            LIMIT $6""",
        query.case_id,
        query.customer_id,
        [s.value for s in query.statuses],
        after_due,
        after_id,
        query.page_size + 1,
    )
    return [_followup(row) for row in rows]


async def counts_by_kind(conn: asyncpg.Connection, *, now: datetime) -> dict[str, tuple[int, int]]:
    """Return, per kind, (pending follow-ups, pending ones already past their due time)."""
    rows = await conn.fetch(
        """SELECT kind, count(*) AS pending, count(*) FILTER (WHERE due_at <= $1) AS overdue
           FROM followups WHERE status = 'pending' GROUP BY kind""",
        now,
    )
    return {row["kind"]: (row["pending"], row["overdue"]) for row in rows}


# --------------------------------------------------------------------------------------------- feedback


async def insert_feedback(conn: asyncpg.Connection, feedback: Feedback, *, reopen_requested: bool) -> bool:
    """Store an answer; False when (source, feedback_id) is already stored (the same answer again)."""
    return bool(
        await conn.fetchval(
            """INSERT INTO feedback (source, feedback_id, customer_id, case_id, followup_id, score, satisfied,
                                     comment, received_at, recorded_by_employee_id, reopen_requested)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               ON CONFLICT DO NOTHING RETURNING true""",
            feedback.source.value,
            feedback.feedback_id,
            feedback.customer_id,
            feedback.case_id,
            feedback.followup_id,
            feedback.score,
            feedback.satisfied,
            feedback.comment,
            feedback.received_at,
            feedback.recorded_by_employee_id,
            reopen_requested,
        )
    )


async def first_answer_of_resolution(conn: asyncpg.Connection, case_id: str, *, since: datetime) -> bool:
    """True when no answer with a satisfied/unsatisfied verdict was stored for the case since ``since``."""
    count = await conn.fetchval(
        "SELECT count(*) FROM feedback WHERE case_id = $1 AND satisfied IS NOT NULL AND received_at >= $2",
        case_id,
        since,
    )
    return count == 0
