"""Escalation's Postgres repository: asyncpg SQL in the caller's transaction, domain values in and out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from services.common.db import columns, last_per_key
from services.common.money import Money
from services.escalation.domain.model import (
    Actor,
    ActorKind,
    Approval,
    ApprovalDecision,
    ApprovalReason,
    ApprovalStatus,
    Case,
    CaseState,
    Channel,
    ClockState,
    Contact,
    ContactKind,
    ContactOutcome,
    CustomerDecision,
    Declaration,
    Delegation,
    Offer,
    OfferLine,
    OfferStatus,
    Outlook,
    Reach,
    Severity,
    SlaClock,
    SlaStatus,
    Usage,
)

# ------------------------------------------------------------------------------------------------ cases


def _opt(kind, value):
    return kind(value) if value is not None else None


def _case(row: asyncpg.Record) -> Case:
    return Case(
        case_id=row["case_id"],
        customer_id=row["customer_id"],
        state=CaseState(row["state"]),
        owner_employee_id=row["owner_employee_id"],
        owner_role=row["owner_role"],
        team=row["team"],
        severity=_opt(Severity, row["severity"]),
        outlook=_opt(Outlook, row["outlook"]),
        system_detected=row["system_detected"],
        acknowledged_at=row["acknowledged_at"],
        transfer_count=row["transfer_count"],
        transfer_limit_exceeded=row["transfer_limit_exceeded"],
        resolution_count=row["resolution_count"],
        pending_approval_id=row["pending_approval_id"],
        current_offer_id=row["current_offer_id"],
        sla_breach_count=row["sla_breach_count"],
        attention_role=row["attention_role"],
        opened_at=row["opened_at"],
        resolved_at=row["resolved_at"],
        revision=row["revision"],
        incident_id=row["incident_id"],
        reach=Reach(row["customer_timezone"], _opt(Channel, row["preferred_channel"]), row["locale"]),
    )


@dataclass(frozen=True)
class CaseRecord:
    """A stored case: its decision facts, its display facts (the CaseOpened bytes) and when it last changed."""

    case: Case
    facts: bytes
    facts_revision: int
    updated_at: datetime


def _record(row: asyncpg.Record) -> CaseRecord:
    return CaseRecord(
        case=_case(row), facts=bytes(row["facts"]), facts_revision=row["facts_revision"], updated_at=row["updated_at"]
    )


async def insert_case(conn: asyncpg.Connection, case: Case, *, facts: bytes, now: datetime) -> bool:
    """Store a new case; False when it already exists (one case per CaseOpened)."""
    return bool(await insert_cases(conn, [(case, facts)], now=now))


async def insert_cases(conn: asyncpg.Connection, cases: Sequence[tuple[Case, bytes]], *, now: datetime) -> set[str]:
    """Store new cases (each with its CaseOpened bytes) in one statement; returns the ids that were new."""
    if not cases:
        return set()
    rows = await conn.fetch(
        """INSERT INTO cases (case_id, customer_id, state, owner_employee_id, team, severity, outlook,
                              system_detected, facts, opened_at, updated_at, owner_role, incident_id,
                              customer_timezone, preferred_channel, locale)
           SELECT n.case_id, n.customer_id, n.state, n.owner_employee_id, n.team, n.severity, n.outlook,
                  n.system_detected, n.facts, n.opened_at, $11, n.owner_role, n.incident_id,
                  n.customer_timezone, n.preferred_channel, n.locale
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::bool[], $9::bytea[], $10::timestamptz[], $12::text[], $13::text[],
                       $14::text[], $15::text[], $16::text[])
                AS n(case_id, customer_id, state, owner_employee_id, team, severity, outlook, system_detected, facts,
                     opened_at, owner_role, incident_id, customer_timezone, preferred_channel, locale)
           ON CONFLICT (case_id) DO NOTHING RETURNING case_id""",
        [case.case_id for case, _ in cases],
        [case.customer_id for case, _ in cases],
        [case.state.value for case, _ in cases],
        [case.owner_employee_id for case, _ in cases],
        [case.team for case, _ in cases],
        [case.severity.value if case.severity else None for case, _ in cases],
        [case.outlook.value if case.outlook else None for case, _ in cases],
        [case.system_detected for case, _ in cases],
        [facts for _, facts in cases],
        [case.opened_at for case, _ in cases],
        now,
        [case.owner_role for case, _ in cases],
        [case.incident_id for case, _ in cases],
        [case.reach.timezone for case, _ in cases],
        [case.reach.channel.value if case.reach.channel else None for case, _ in cases],
        [case.reach.locale for case, _ in cases],
    )
    return {row["case_id"] for row in rows}


async def get_case(conn: asyncpg.Connection, case_id: str, *, lock: bool = False) -> CaseRecord | None:
    """Return the case (locked FOR UPDATE when ``lock``), or None."""
    row = await conn.fetchrow(f"SELECT * FROM cases WHERE case_id = $1{' FOR UPDATE' if lock else ''}", case_id)
    return _record(row) if row else None


async def lock_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, CaseRecord]:
    """Return the known cases among ``case_ids``, each locked FOR UPDATE (in id order)."""
    rows = await conn.fetch(
        "SELECT * FROM cases WHERE case_id = ANY($1::text[]) ORDER BY case_id FOR UPDATE", sorted(set(case_ids))
    )
    return {row["case_id"]: _record(row) for row in rows}


def _case_changes(case: Case, now: datetime) -> tuple:
    return (
        case.case_id,
        case.state.value,
        case.owner_employee_id,
        case.team,
        case.severity.value if case.severity else None,
        case.outlook.value if case.outlook else None,
        case.system_detected,
        case.acknowledged_at,
        case.transfer_count,
        case.transfer_limit_exceeded,
        case.resolution_count,
        case.pending_approval_id,
        case.current_offer_id,
        case.sla_breach_count,
        case.attention_role,
        case.resolved_at,
        now,
        case.owner_role,
    )


_SAVE_CASE = """UPDATE cases SET state = $2, owner_employee_id = $3, team = $4, severity = $5, outlook = $6,
                  system_detected = $7, acknowledged_at = $8, transfer_count = $9, transfer_limit_exceeded = $10,
                  resolution_count = $11, pending_approval_id = $12, current_offer_id = $13,
                  sla_breach_count = $14, attention_role = $15, resolved_at = $16, updated_at = $17,
                  owner_role = $18, revision = nextval('case_revision')
           WHERE case_id = $1"""


async def save_case(conn: asyncpg.Connection, case: Case, *, now: datetime) -> int:
    """Write the case's changeable facts and give it a new revision; returns the revision."""
    return await conn.fetchval(_SAVE_CASE + " RETURNING revision", *_case_changes(case, now))


async def save_cases(conn: asyncpg.Connection, cases: Sequence[Case], *, now: datetime) -> None:
    """``save_case`` for a set of cases, in one statement (a case saved twice keeps its last state)."""
    if not cases:
        return
    rows = last_per_key((_case_changes(case, now) for case in cases), key=lambda row: row[0])
    # ``case_id = ANY`` lets the planner find the rows by key; a join on unnest alone may scan the table.
    await conn.execute(
        """UPDATE cases c SET state = u.state, owner_employee_id = u.owner_employee_id, team = u.team,
                  severity = u.severity, outlook = u.outlook, system_detected = u.system_detected,
                  acknowledged_at = u.acknowledged_at, transfer_count = u.transfer_count,
                  transfer_limit_exceeded = u.transfer_limit_exceeded, resolution_count = u.resolution_count,
                  pending_approval_id = u.pending_approval_id, current_offer_id = u.current_offer_id,
                  sla_breach_count = u.sla_breach_count, attention_role = u.attention_role,
                  resolved_at = u.resolved_at, updated_at = u.updated_at, owner_role = u.owner_role,
                  revision = nextval('case_revision')
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[],
                       $8::timestamptz[], $9::int[], $10::boolean[], $11::int[], $12::text[], $13::text[],
                       $14::int[], $15::text[], $16::timestamptz[], $17::timestamptz[], $18::text[])
                AS u(case_id, state, owner_employee_id, team, severity, outlook, system_detected, acknowledged_at,
                     transfer_count, transfer_limit_exceeded, resolution_count, pending_approval_id,
                     current_offer_id, sla_breach_count, attention_role, resolved_at, updated_at, owner_role)
           WHERE c.case_id = u.case_id AND c.case_id = ANY($1::text[])""",
        *columns(rows, 18),
    )


async def save_facts(conn: asyncpg.Connection, case_id: str, *, facts: bytes, revision: int, reach: Reach) -> None:
    """Replace the case's display facts (an amendment's snapshot) and how the customer is written to."""
    await conn.execute(
        """UPDATE cases SET facts = $2, facts_revision = $3, customer_timezone = $4, preferred_channel = $5,
                            locale = $6
           WHERE case_id = $1""",
        case_id,
        facts,
        revision,
        reach.timezone,
        reach.channel.value if reach.channel else None,
        reach.locale,
    )


async def open_case_count(conn: asyncpg.Connection, employee_id: str) -> int:
    """Return how many unresolved cases ``employee_id`` owns."""
    return await conn.fetchval(
        "SELECT count(*) FROM cases WHERE owner_employee_id = $1 AND state <> 'resolved'", employee_id
    )


@dataclass(frozen=True)
class CaseFilter:
    """Which cases to list: every set field must match."""

    owner_employee_id: str = ""
    team: str = ""
    states: tuple[CaseState, ...] = ()
    at_risk: bool = False
    breached: bool = False
    # Visibility: when set, only cases owned by this employee or queued in this team (agents).
    visible_owner: str = ""
    visible_team: str = ""
    # Visibility for supervisors: only this team's cases.
    only_team: str = ""
    incident_id: str = ""


async def list_cases(conn: asyncpg.Connection, f: CaseFilter, *, limit: int, offset: int) -> list[CaseRecord]:
    """Return matching cases, most urgent first (earliest running SLA deadline), then oldest."""
    clauses, args = [], []

    def arg(value) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.owner_employee_id:
        clauses.append(f"c.owner_employee_id = {arg(f.owner_employee_id)}")
    if f.team:
        clauses.append(f"c.team = {arg(f.team)}")
    if f.states:
        clauses.append(f"c.state = ANY({arg([s.value for s in f.states])}::text[])")
    sla_states = [s for s, wanted in (("at_risk", f.at_risk), ("breached", f.breached)) if wanted]
    if sla_states:
        clauses.append(
            f"EXISTS (SELECT 1 FROM sla_clocks k WHERE k.case_id = c.case_id AND k.status = ANY({arg(sla_states)}))"
        )
    if f.visible_owner:
        clauses.append(
            f"(c.owner_employee_id = {arg(f.visible_owner)} OR (c.state = 'queued' AND c.team = {arg(f.visible_team)}))"
        )
    if f.only_team:
        clauses.append(f"c.team = {arg(f.only_team)}")
    if f.incident_id:
        clauses.append(f"c.incident_id = {arg(f.incident_id)}")
    where = " AND ".join(clauses) or "true"
    rows = await conn.fetch(
        f"""SELECT c.* FROM cases c
            LEFT JOIN LATERAL (SELECT min(deadline_at) AS due FROM sla_clocks k
                               WHERE k.case_id = c.case_id AND k.status IN ('on_track', 'at_risk')) u ON true
            WHERE {where}
            ORDER BY (c.state = 'resolved'), u.due NULLS LAST, c.opened_at, c.case_id
            LIMIT {arg(limit)} OFFSET {arg(offset)}""",
        *args,
    )
    return [_record(r) for r in rows]


@dataclass(frozen=True)
class IncidentSummary:
    """How the recovery of one disruption stands, counted over its cases."""

    cases: int
    customers: int
    by_state: dict[str, int]
    offers_authorized: int
    without_offer: int
    authorized_total: dict[str, int]  # per currency, minor units
    awaiting_approval: int = 0  # cases with a request in flight, queued ones included
    playbook_authorized: int = 0  # cases an authorisation pre-approved by the incident's declaration covered


async def incident_summary(conn: asyncpg.Connection, incident_id: str) -> IncidentSummary:
    """Count the incident's cases by state and by where their current offers are, and what was authorised."""
    return (await incident_summaries(conn, [incident_id]))[incident_id]


async def incident_summaries(conn: asyncpg.Connection, incident_ids: Sequence[str]) -> dict[str, IncidentSummary]:
    """``incident_summary`` for several incidents in three statements whatever their number (an incident without
    cases counts zero)."""
    ids = list(dict.fromkeys(incident_ids))
    rows = await conn.fetch(
        """SELECT c.incident_id, c.state, count(*) AS n,
                  count(*) FILTER (WHERE o.status = 'authorized') AS authorized,
                  count(*) FILTER (WHERE c.current_offer_id = '') AS without_offer,
                  count(*) FILTER (WHERE c.pending_approval_id <> '') AS awaiting
           FROM cases c LEFT JOIN offers o ON o.offer_id = c.current_offer_id
           WHERE c.incident_id = ANY($1::text[]) GROUP BY c.incident_id, c.state""",
        ids,
    )
    customers = await conn.fetch(
        """SELECT incident_id, count(DISTINCT customer_id) AS n FROM cases
           WHERE incident_id = ANY($1::text[]) GROUP BY incident_id""",
        ids,
    )
    totals = await conn.fetch(
        """SELECT c.incident_id, a.currency, sum(a.amount_minor)::bigint AS total,
                  count(DISTINCT a.case_id) FILTER (WHERE a.tier = 'playbook') AS playbook
           FROM authorizations a JOIN cases c USING (case_id)
           WHERE c.incident_id = ANY($1::text[]) GROUP BY c.incident_id, a.currency""",
        ids,
    )
    distinct = {r["incident_id"]: r["n"] for r in customers}
    summaries = {}
    for incident_id in ids:
        mine = [r for r in rows if r["incident_id"] == incident_id]
        summaries[incident_id] = IncidentSummary(
            cases=sum(r["n"] for r in mine),
            customers=distinct.get(incident_id, 0),
            by_state={r["state"]: r["n"] for r in mine},
            offers_authorized=sum(r["authorized"] for r in mine),
            without_offer=sum(r["without_offer"] for r in mine),
            authorized_total={r["currency"]: r["total"] for r in totals if r["incident_id"] == incident_id},
            awaiting_approval=sum(r["awaiting"] for r in mine),
            playbook_authorized=sum(r["playbook"] for r in totals if r["incident_id"] == incident_id),
        )
    return summaries


def _declaration(row: asyncpg.Record) -> Declaration:
    return Declaration(
        incident_id=row["incident_id"],
        playbook_id=row["playbook_id"],
        declared_by=row["declared_by"],
        declared_by_role=row["declared_by_role"],
        declared_by_team=row["declared_by_team"],
        reason=row["reason"],
        limits_policy_version=row["limits_policy_version"],
        declared_at=row["declared_at"],
        authorized_base_minor=row["authorized_base_minor"],
    )


async def insert_declaration(conn: asyncpg.Connection, declaration: Declaration) -> bool:
    """Store an incident's declaration; False when the incident is already declared (the first one stands)."""
    d = declaration
    status = await conn.execute(
        """INSERT INTO incident_declarations (incident_id, playbook_id, declared_by, declared_by_role,
                                              declared_by_team, reason, limits_policy_version, declared_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (incident_id) DO NOTHING""",
        d.incident_id,
        d.playbook_id,
        d.declared_by,
        d.declared_by_role,
        d.declared_by_team,
        d.reason,
        d.limits_policy_version,
        d.declared_at,
    )
    return status.endswith(" 1")


async def declarations_of(
    conn: asyncpg.Connection, incident_ids: Iterable[str], *, lock: bool = False
) -> dict[str, Declaration]:
    """Return the declarations of the declared incidents among ``incident_ids``, in one statement; ``lock``
    takes their rows FOR UPDATE (in id order), so two batches never both spend the same room."""
    ids = sorted({i for i in incident_ids if i})
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT * FROM incident_declarations WHERE incident_id = ANY($1::text[]) ORDER BY incident_id"
        + (" FOR UPDATE" if lock else ""),
        ids,
    )
    return {row["incident_id"]: _declaration(row) for row in rows}


async def add_declared_spend(conn: asyncpg.Connection, spent: dict[str, int]) -> None:
    """Add what each declaration pre-approved in this transaction (base currency), in one statement."""
    if spent:
        await conn.execute(
            """UPDATE incident_declarations d SET authorized_base_minor = d.authorized_base_minor + s.amount
               FROM unnest($1::text[], $2::bigint[]) AS s(incident_id, amount) WHERE d.incident_id = s.incident_id""",
            list(spent),
            list(spent.values()),
        )


async def incidents_changed(conn: asyncpg.Connection, *, limit: int) -> dict[str, int]:
    """Return the incidents whose cases changed since their last published update, each with its cases'
    newest revision (at most ``limit``, longest waiting first)."""
    rows = await conn.fetch(
        """SELECT c.incident_id, c.revision FROM (
               SELECT incident_id, max(revision) AS revision FROM cases WHERE incident_id <> '' GROUP BY incident_id
           ) c LEFT JOIN incident_updates u USING (incident_id)
           WHERE u.revision IS NULL OR c.revision > u.revision
           ORDER BY u.published_at NULLS FIRST LIMIT $1""",
        limit,
    )
    return {r["incident_id"]: r["revision"] for r in rows}


async def mark_incidents_updated(conn: asyncpg.Connection, revisions: dict[str, int], *, now: datetime) -> None:
    """Record the revision each incident's update was published for, in one statement."""
    await conn.execute(
        """INSERT INTO incident_updates (incident_id, revision, published_at)
           SELECT i, r, $3 FROM unnest($1::text[], $2::bigint[]) AS u(i, r)
           ON CONFLICT (incident_id)
           DO UPDATE SET revision = excluded.revision, published_at = excluded.published_at""",
        list(revisions),
        list(revisions.values()),
        now,
    )


async def cases_changed_since(
    conn: asyncpg.Connection, revision: int, *, updated_since: datetime, limit: int = 500
) -> list[CaseRecord]:
    """Return cases whose revision is above ``revision`` or that changed since ``updated_since``, in revision order.

    Revisions come from a sequence, handed out before commit: a transaction that commits late can show up
    with a revision below one already seen, so recent changes are read again by time as well.
    """
    rows = await conn.fetch(
        "SELECT * FROM cases WHERE revision > $1 OR updated_at >= $2 ORDER BY revision LIMIT $3",
        revision,
        updated_since,
        limit,
    )
    return [_record(r) for r in rows]


async def max_revision(conn: asyncpg.Connection) -> int:
    """Return the highest case revision (0 when there are no cases)."""
    return await conn.fetchval("SELECT coalesce(max(revision), 0) FROM cases")


# ----------------------------------------------------------------------------------------------- offers


@dataclass(frozen=True)
class OfferRecord:
    """A stored offer: the domain value, the OfferProposed bytes, the customer's answer and its authorisations
    (oldest first: the whole offer, or the owner's share and then the approved remainder)."""

    offer: Offer
    message: bytes
    proposed_at: datetime
    customer_decision: CustomerDecision | None
    authorizations: tuple[asyncpg.Record, ...] = ()


async def insert_offer(
    conn: asyncpg.Connection, case_id: str, offer: Offer, *, message: bytes, proposed_at: datetime
) -> bool:
    """Store an offer version; False when it (or its version) is already known."""
    return bool(await insert_offers(conn, [(case_id, offer, message, proposed_at)]))


async def insert_offers(conn: asyncpg.Connection, offers: Sequence[tuple[str, Offer, bytes, datetime]]) -> set[str]:
    """Store offer versions (case id, offer, OfferProposed bytes, proposed at) in one statement; returns the ids
    that were new (an offer, or another with its version, already known is skipped)."""
    if not offers:
        return set()
    rows = await conn.fetch(
        """INSERT INTO offers (offer_id, case_id, version, total_minor, currency, needs_review, budget_exceeded,
                               status, message, proposed_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::bool[], $7::bool[],
                                $8::text[], $9::bytea[], $10::timestamptz[])
           ON CONFLICT DO NOTHING RETURNING offer_id""",
        [offer.offer_id for _, offer, _, _ in offers],
        [case_id for case_id, _, _, _ in offers],
        [offer.version for _, offer, _, _ in offers],
        [offer.total.amount_minor for _, offer, _, _ in offers],
        [offer.total.currency for _, offer, _, _ in offers],
        [offer.needs_review for _, offer, _, _ in offers],
        [offer.budget_exceeded for _, offer, _, _ in offers],
        [offer.status.value for _, offer, _, _ in offers],
        [message for _, _, message, _ in offers],
        [proposed_at for _, _, _, proposed_at in offers],
    )
    return {row["offer_id"] for row in rows}


async def get_offer(conn: asyncpg.Connection, offer_id: str, *, lines_of) -> OfferRecord | None:
    """Return the offer with its authorisations; ``lines_of(message bytes)`` decodes its lines."""
    row = await conn.fetchrow("SELECT * FROM offers WHERE offer_id = $1", offer_id)
    if row is None:
        return None
    grants = await conn.fetch(
        "SELECT * FROM authorizations WHERE offer_id = $1 ORDER BY authorized_at, authorization_id", offer_id
    )
    message = bytes(row["message"])
    lines: tuple[OfferLine, ...] = lines_of(message)
    offer = Offer(
        offer_id=row["offer_id"],
        version=row["version"],
        total=Money(row["total_minor"], row["currency"]),
        lines=lines,
        needs_review=row["needs_review"],
        budget_exceeded=row["budget_exceeded"],
        status=OfferStatus(row["status"]),
    )
    return OfferRecord(
        offer=offer,
        message=message,
        proposed_at=row["proposed_at"],
        customer_decision=_opt(CustomerDecision, row["customer_decision"]),
        authorizations=tuple(grants),
    )


async def highest_offer_version(conn: asyncpg.Connection, case_id: str) -> int:
    """Return the case's highest known offer version (0 when none)."""
    return (await highest_offer_versions(conn, [case_id])).get(case_id, 0)


async def highest_offer_versions(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, int]:
    """Return each case's highest known offer version (cases with no offer are left out)."""
    rows = await conn.fetch(
        "SELECT case_id, max(version) AS v FROM offers WHERE case_id = ANY($1::text[]) GROUP BY case_id",
        sorted(set(case_ids)),
    )
    return {row["case_id"]: row["v"] for row in rows}


async def set_offer_status(conn: asyncpg.Connection, offer_id: str, status: OfferStatus) -> None:
    """Record where the offer stands."""
    await set_offer_statuses(conn, [(offer_id, status)])


async def set_offer_statuses(conn: asyncpg.Connection, statuses: Sequence[tuple[str, OfferStatus]]) -> None:
    """``set_offer_status`` for a set of offers, in one statement (an offer set twice keeps the last)."""
    if not statuses:
        return
    rows = last_per_key(((offer_id, status.value) for offer_id, status in statuses), key=lambda row: row[0])
    await conn.execute(
        """UPDATE offers o SET status = u.status FROM unnest($1::text[], $2::text[]) AS u(offer_id, status)
           WHERE o.offer_id = u.offer_id AND o.offer_id = ANY($1::text[])""",
        *columns(rows, 2),
    )


async def set_customer_decision(conn: asyncpg.Connection, offer_id: str, decision: CustomerDecision) -> None:
    """Record the customer's answer to the offer."""
    await conn.execute("UPDATE offers SET customer_decision = $2 WHERE offer_id = $1", offer_id, decision.value)


@dataclass(frozen=True)
class Grant:
    """One authorisation as stored: which part of which offer, by whom, under whose authority, how much (and as
    booked in the base currency, at which rate), through which approval, and the OfferAuthorized published."""

    authorization_id: str
    offer_id: str
    case_id: str
    part: str
    tier: str
    actor: Actor
    authority_employee_id: str
    amount: Money
    base_minor: int
    rate: str
    rates_version: str
    approval_id: str
    at: datetime
    event: bytes


async def insert_authorizations(conn: asyncpg.Connection, grants: Sequence[Grant]) -> set[str]:
    """Record authorisations in one statement; returns the authorisation ids that were new (a part of an offer
    already authorised is skipped: the business-key guard)."""
    if not grants:
        return set()
    rows = await conn.fetch(
        """INSERT INTO authorizations (authorization_id, offer_id, case_id, part, tier, actor_kind, actor_employee_id,
                                       actor_role, actor_team, authority_employee_id, amount_minor, currency,
                                       base_minor, rate, rates_version, approval_id, authorized_at, event)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                                $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::bigint[],
                                $14::text[], $15::text[], $16::text[], $17::timestamptz[], $18::bytea[])
           ON CONFLICT DO NOTHING RETURNING authorization_id""",
        [g.authorization_id for g in grants],
        [g.offer_id for g in grants],
        [g.case_id for g in grants],
        [g.part for g in grants],
        [g.tier for g in grants],
        [g.actor.kind.value for g in grants],
        [g.actor.employee_id for g in grants],
        [g.actor.role for g in grants],
        [g.actor.team for g in grants],
        [g.authority_employee_id for g in grants],
        [g.amount.amount_minor for g in grants],
        [g.amount.currency for g in grants],
        [g.base_minor for g in grants],
        [g.rate for g in grants],
        [g.rates_version for g in grants],
        [g.approval_id for g in grants],
        [g.at for g in grants],
        [g.event for g in grants],
    )
    return {row["authorization_id"] for row in rows}


async def authorized_total(conn: asyncpg.Connection, case_id: str) -> Money | None:
    """Return what the case's authorisations granted in all (every offer, every part), or None."""
    row = await conn.fetchrow(
        """SELECT sum(amount_minor)::bigint AS total, min(currency) AS currency FROM authorizations
           WHERE case_id = $1 HAVING count(*) > 0""",
        case_id,
    )
    return Money(row["total"], row["currency"]) if row else None


# -------------------------------------------------------------------------------------- authority usage


async def lock_usage(conn: asyncpg.Connection, *, employee_id: str, day: date, month: date, currency: str) -> Usage:
    """Return the authority's usage today and this month, holding row locks until the transaction ends.

    The rows are created first (so there is always a row to lock), then locked in a fixed order (day,
    month) so two deciders never deadlock; a concurrent decision on the same authority waits here.
    """
    await conn.execute(
        """INSERT INTO authority_usage (employee_id, period, period_start, currency)
           VALUES ($1, 'day', $2, $4), ($1, 'month', $3, $4) ON CONFLICT DO NOTHING""",
        employee_id,
        day,
        month,
        currency,
    )
    rows = await conn.fetch(
        """SELECT period, used_minor FROM authority_usage
           WHERE employee_id = $1 AND currency = $4
             AND ((period = 'day' AND period_start = $2) OR (period = 'month' AND period_start = $3))
           ORDER BY period FOR UPDATE""",
        employee_id,
        day,
        month,
        currency,
    )
    used = {r["period"]: r["used_minor"] for r in rows}
    return Usage(today=used.get("day", 0), this_month=used.get("month", 0))


async def usage_of(conn: asyncpg.Connection, *, employee_id: str, day: date, month: date, currency: str) -> Usage:
    """Return the authority's usage today and this month, for reading only (no rows created, none locked)."""
    rows = await conn.fetch(
        """SELECT period, used_minor FROM authority_usage
           WHERE employee_id = $1 AND currency = $4
             AND ((period = 'day' AND period_start = $2) OR (period = 'month' AND period_start = $3))""",
        employee_id,
        day,
        month,
        currency,
    )
    used = {r["period"]: r["used_minor"] for r in rows}
    return Usage(today=used.get("day", 0), this_month=used.get("month", 0))


async def book_usage(conn: asyncpg.Connection, *, employee_id: str, day: date, month: date, amount: Money) -> None:
    """Add ``amount`` to the authority's day and month usage (rows locked by ``lock_usage``)."""
    await conn.execute(
        """UPDATE authority_usage SET used_minor = used_minor + $4
           WHERE employee_id = $1 AND currency = $5
             AND ((period = 'day' AND period_start = $2) OR (period = 'month' AND period_start = $3))""",
        employee_id,
        day,
        month,
        amount.amount_minor,
        amount.currency,
    )


# -------------------------------------------------------------------------------------------- approvals


def _actor(row: asyncpg.Record, prefix: str) -> Actor | None:
    kind = row[f"{prefix}_kind"]
    if kind is None:
        return None
    return Actor(
        kind=ActorKind(kind),
        employee_id=row[f"{prefix}_employee_id"],
        role=row[f"{prefix}_role"],
        team=row[f"{prefix}_team"],
    )


def _approval(row: asyncpg.Record) -> Approval:
    approved = row["approved_minor"]
    return Approval(
        approval_id=row["approval_id"],
        case_id=row["case_id"],
        customer_id=row["customer_id"],
        offer_id=row["offer_id"],
        offer_version=row["offer_version"],
        requested_by=_actor(row, "requested"),
        owner_employee_id=row["owner_employee_id"],
        approver_role=row["approver_role"],
        approver_team=row["approver_team"],
        amount=Money(row["amount_minor"], row["currency"]),
        reasons=tuple(ApprovalReason(r) for r in row["reasons"]),
        note=row["note"],
        decision_due_at=row["decision_due_at"],
        escalation_level=row["escalation_level"],
        requested_at=row["requested_at"],
        status=ApprovalStatus(row["status"]),
        decision=_opt(ApprovalDecision, row["decision"]),
        approved_amount=Money(approved, row["currency"]) if approved is not None else None,
        decision_reason=row["decision_reason"] or "",
        decided_by=_actor(row, "decided"),
        decided_at=row["decided_at"],
        offer_total=Money(row["offer_total_minor"], row["currency"]) if row["offer_total_minor"] is not None else None,
        owner_share=Money(row["owner_share_minor"], row["currency"]),
        line_minor=tuple(row["line_minor"] or ()),
        split=row["split"],
    )


_INSERT_APPROVAL = """INSERT INTO approvals (approval_id, case_id, customer_id, offer_id, offer_version, requested_kind,
                                  requested_employee_id, requested_role, requested_team, owner_employee_id,
                                  approver_role, approver_team, amount_minor, currency, reasons, note,
                                  decision_due_at, escalation_level, requested_at, status, offer_total_minor,
                                  owner_share_minor, line_minor, split)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                   $21, $22, $23, $24)"""


def _approval_row(a: Approval) -> tuple:
    return (
        a.approval_id,
        a.case_id,
        a.customer_id,
        a.offer_id,
        a.offer_version,
        a.requested_by.kind.value,
        a.requested_by.employee_id,
        a.requested_by.role,
        a.requested_by.team,
        a.owner_employee_id,
        a.approver_role,
        a.approver_team,
        a.amount.amount_minor,
        a.amount.currency,
        [r.value for r in a.reasons],
        a.note,
        a.decision_due_at,
        a.escalation_level,
        a.requested_at,
        a.status.value,
        a.offer_total.amount_minor if a.offer_total else None,
        a.owner_share.amount_minor if a.owner_share else 0,
        list(a.line_minor) or None,
        a.split,
    )


async def insert_approval(conn: asyncpg.Connection, a: Approval) -> None:
    """Store a new pending approval request."""
    await conn.execute(_INSERT_APPROVAL, *_approval_row(a))


async def insert_approvals(conn: asyncpg.Connection, approvals: Sequence[Approval]) -> None:
    """Store new pending approval requests in one pipelined round trip whatever their number."""
    if approvals:
        await conn.executemany(_INSERT_APPROVAL, [_approval_row(a) for a in approvals])


async def get_approval(conn: asyncpg.Connection, approval_id: str, *, lock: bool = False) -> Approval | None:
    """Return the approval (locked FOR UPDATE when ``lock``), or None."""
    row = await conn.fetchrow(
        f"SELECT * FROM approvals WHERE approval_id = $1{' FOR UPDATE' if lock else ''}", approval_id
    )
    return _approval(row) if row else None


async def decide_approval(conn: asyncpg.Connection, a: Approval) -> None:
    """Write the approval's decision."""
    by = a.decided_by
    await conn.execute(
        """UPDATE approvals SET status = $2, decision = $3, approved_minor = $4, decision_reason = $5,
                  decided_kind = $6, decided_employee_id = $7, decided_role = $8, decided_team = $9, decided_at = $10
           WHERE approval_id = $1""",
        a.approval_id,
        a.status.value,
        a.decision.value if a.decision else None,
        a.approved_amount.amount_minor if a.approved_amount else None,
        a.decision_reason,
        by.kind.value if by else None,
        by.employee_id if by else None,
        by.role if by else None,
        by.team if by else None,
        a.decided_at,
    )


async def reroute_approval(conn: asyncpg.Connection, a: Approval) -> None:
    """Write an overdue approval's new tier, level, reasons and deadline."""
    await conn.execute(
        """UPDATE approvals SET approver_role = $2, escalation_level = $3, reasons = $4, decision_due_at = $5
           WHERE approval_id = $1""",
        a.approval_id,
        a.approver_role,
        a.escalation_level,
        [r.value for r in a.reasons],
        a.decision_due_at,
    )


async def follow_requote(conn: asyncpg.Connection, a: Approval) -> None:
    """Write a pending approval moved onto the case's re-quoted offer: its offer, amount, lines and tier."""
    await conn.execute(
        """UPDATE approvals SET offer_id = $2, offer_version = $3, amount_minor = $4, approver_role = $5,
                  reasons = $6, offer_total_minor = $7, owner_share_minor = $8, line_minor = $9, split = $10
           WHERE approval_id = $1""",
        a.approval_id,
        a.offer_id,
        a.offer_version,
        a.amount.amount_minor,
        a.approver_role,
        [r.value for r in a.reasons],
        a.offer_total.amount_minor if a.offer_total else None,
        a.owner_share.amount_minor if a.owner_share else 0,
        list(a.line_minor) or None,
        a.split,
    )


async def cancel_pending_approvals(conn: asyncpg.Connection, case_id: str) -> list[str]:
    """Cancel the case's approval in progress (its offer was superseded); returns the ids cancelled."""
    rows = await conn.fetch(
        "UPDATE approvals SET status = 'cancelled' WHERE case_id = $1 AND status = 'pending' RETURNING approval_id",
        case_id,
    )
    return [r["approval_id"] for r in rows]


async def approvals_of_case(conn: asyncpg.Connection, case_id: str) -> list[Approval]:
    """Return the case's approvals, oldest first."""
    rows = await conn.fetch("SELECT * FROM approvals WHERE case_id = $1 ORDER BY requested_at", case_id)
    return [_approval(r) for r in rows]


async def pending_approvals_for(
    conn: asyncpg.Connection, routes: Sequence[tuple[str, str]], *, exclude_employee: str, limit: int, offset: int
) -> list[Approval]:
    """Return pending approvals routed to any (role, team) in ``routes`` that ``exclude_employee`` did not
    request and does not own, oldest due first."""
    if not routes:
        return []
    rows = await conn.fetch(
        """SELECT a.* FROM approvals a
           JOIN unnest($1::text[], $2::text[]) AS r(role, team)
             ON a.approver_role = r.role AND a.approver_team = r.team
           WHERE a.status = 'pending' AND a.requested_employee_id <> $3 AND a.owner_employee_id <> $3
           ORDER BY a.decision_due_at, a.approval_id LIMIT $4 OFFSET $5""",
        [r for r, _ in routes],
        [t for _, t in routes],
        exclude_employee,
        limit,
        offset,
    )
    return [_approval(r) for r in rows]


async def pending_approval_stats(conn: asyncpg.Connection, now: datetime) -> tuple[int, float]:
    """Return (approvals pending, age in seconds of the oldest)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(requested_at) AS oldest FROM approvals WHERE status = 'pending'"
    )
    oldest = row["oldest"]
    return row["n"], (now - oldest).total_seconds() if oldest else 0.0


# ------------------------------------------------------------------------------------------ delegations


def _delegation(row: asyncpg.Record) -> Delegation:
    return Delegation(
        delegation_id=row["delegation_id"],
        delegator_employee_id=row["delegator_employee_id"],
        delegate_employee_id=row["delegate_employee_id"],
        role=row["role"],
        team=row["team"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
    )


async def insert_delegation(conn: asyncpg.Connection, d: Delegation, *, reason: str, now: datetime) -> None:
    """Store a delegation."""
    await conn.execute(
        """INSERT INTO delegations (delegation_id, delegator_employee_id, delegate_employee_id, role, team,
                                    starts_at, ends_at, reason, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        d.delegation_id,
        d.delegator_employee_id,
        d.delegate_employee_id,
        d.role,
        d.team,
        d.starts_at,
        d.ends_at,
        reason,
        now,
    )


async def delegations_to(conn: asyncpg.Connection, employee_id: str, now: datetime) -> tuple[Delegation, ...]:
    """Return the delegations to ``employee_id`` active at ``now``."""
    rows = await conn.fetch(
        "SELECT * FROM delegations WHERE delegate_employee_id = $1 AND starts_at <= $2 AND ends_at > $2",
        employee_id,
        now,
    )
    return tuple(_delegation(r) for r in rows)


# ------------------------------------------------------------------------------------------- SLA clocks


def _clock(row: asyncpg.Record) -> ClockState:
    return ClockState(
        clock=SlaClock(row["clock"]),
        status=SlaStatus(row["status"]),
        budget=row["budget"],
        started_at=row["started_at"],
        deadline_at=row["deadline_at"],
        warn_at=row["warn_at"],
        paused_at=row["paused_at"],
        paused=row["paused"],
        stopped_at=row["stopped_at"],
    )


async def save_clock(conn: asyncpg.Connection, case_id: str, c: ClockState) -> None:
    """Insert or replace one SLA clock of the case."""
    await save_clocks(conn, [(case_id, c)])


async def save_clocks(conn: asyncpg.Connection, clocks: Sequence[tuple[str, ClockState]]) -> None:
    """Insert or replace SLA clocks (case id, clock), in one statement (a clock saved twice keeps the last)."""
    if not clocks:
        return
    rows = last_per_key(
        [
            (
                case_id,
                c.clock.value,
                c.status.value,
                c.budget,
                c.started_at,
                c.deadline_at,
                c.warn_at,
                c.paused_at,
                c.paused,
                c.stopped_at,
            )
            for case_id, c in clocks
        ],
        key=lambda row: (row[0], row[1]),
    )
    await conn.execute(
        """INSERT INTO sla_clocks (case_id, clock, status, budget, started_at, deadline_at, warn_at, paused_at,
                                   paused, stopped_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::interval[], $5::timestamptz[],
                                $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::interval[],
                                $10::timestamptz[])
           ON CONFLICT (case_id, clock) DO UPDATE SET status = excluded.status, budget = excluded.budget,
               started_at = excluded.started_at, deadline_at = excluded.deadline_at, warn_at = excluded.warn_at,
               paused_at = excluded.paused_at, paused = excluded.paused, stopped_at = excluded.stopped_at""",
        *columns(rows, 10),
    )


async def get_clocks(conn: asyncpg.Connection, case_id: str) -> dict[SlaClock, ClockState]:
    """Return the case's SLA clocks by clock."""
    rows = await conn.fetch("SELECT * FROM sla_clocks WHERE case_id = $1", case_id)
    return {SlaClock(r["clock"]): _clock(r) for r in rows}


# ----------------------------------------------------------------------------------------------- timers


@dataclass(frozen=True)
class Timer:
    """A claimed due timer."""

    timer_id: int
    case_id: str
    kind: str
    clock: SlaClock
    approval_id: str
    due_at: datetime


async def set_timers(
    conn: asyncpg.Connection,
    case_id: str,
    clock: SlaClock,
    timers: Sequence[tuple[str, datetime]],
    *,
    approval_id: str = "",
) -> None:
    """Replace the clock's pending timers with ``timers`` (cancel the old rows, add the new)."""
    await replace_timers(conn, [(case_id, clock, timers, approval_id)])


async def replace_timers(
    conn: asyncpg.Connection, changes: Sequence[tuple[str, SlaClock, Sequence[tuple[str, datetime]], str]]
) -> None:
    """``set_timers`` for (case id, clock, timers, approval id) changes: two statements whatever their number."""
    if not changes:
        return
    # ``case_id = ANY`` reaches the pending rows through their index; a join on unnest alone scans every timer.
    await conn.execute(
        """UPDATE timers SET status = 'cancelled'
           WHERE case_id = ANY($1::text[]) AND status = 'pending'
             AND (case_id, clock) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
        [case_id for case_id, _, _, _ in changes],
        [clock.value for _, clock, _, _ in changes],
    )
    rows = [
        (case_id, kind, clock.value, approval_id, due_at)
        for case_id, clock, timers, approval_id in changes
        for kind, due_at in timers
    ]
    if rows:
        await conn.execute(
            """INSERT INTO timers (case_id, kind, clock, approval_id, due_at)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])""",
            *columns(rows, 5),
        )


async def claim_due_timers(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Timer]:
    """Claim up to ``limit`` pending timers due at ``now`` (FOR UPDATE SKIP LOCKED), marking them fired."""
    rows = await conn.fetch(
        """WITH due AS (SELECT timer_id FROM timers WHERE status = 'pending' AND due_at <= $1
                        ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           UPDATE timers t SET status = 'fired', fired_at = $1 FROM due WHERE t.timer_id = due.timer_id
           RETURNING t.timer_id, t.case_id, t.kind, t.clock, t.approval_id, t.due_at""",
        now,
        limit,
    )
    return sorted(
        (
            Timer(r["timer_id"], r["case_id"], r["kind"], SlaClock(r["clock"]), r["approval_id"], r["due_at"])
            for r in rows
        ),
        key=lambda t: (t.due_at, t.timer_id),
    )


# ------------------------------------------------------------------------------------------------ audit


@dataclass(frozen=True)
class AuditEntry:
    """One audited decision: who, in what role, what, how much, under which limits and policy, why, when."""

    case_id: str
    action: str
    actor: Actor
    policy_version: str
    occurred_at: datetime
    amount: Money | None = None
    limits: dict | None = None
    reason: str = ""
    detail: str = ""
    offer_id: str = ""
    approval_id: str = ""
    from_state: CaseState | None = None
    to_state: CaseState | None = None
    rate: dict | None = None  # the ExchangeRate the amount was checked with, as JSON


async def append_audit(conn: asyncpg.Connection, e: AuditEntry) -> None:
    """Append ``e`` to the audit trail in the caller's transaction."""
    await append_audits(conn, [e])


async def append_audits(conn: asyncpg.Connection, entries: Sequence[AuditEntry]) -> None:
    """Append ``entries`` to the audit trail, in order (their entry ids ascending), in one statement."""
    if not entries:
        return
    rows = [
        (
            e.case_id,
            e.action,
            e.actor.kind.value,
            e.actor.employee_id,
            e.actor.role,
            e.actor.team,
            e.amount.amount_minor if e.amount else None,
            e.amount.currency if e.amount else None,
            json.dumps(e.limits) if e.limits is not None else None,
            e.policy_version,
            e.reason,
            e.detail,
            e.offer_id,
            e.approval_id,
            e.from_state.value if e.from_state else None,
            e.to_state.value if e.to_state else None,
            e.occurred_at,
            json.dumps(e.rate) if e.rate is not None else None,
        )
        for e in entries
    ]
    await conn.execute(
        """INSERT INTO audit_log (case_id, action, actor_kind, actor_employee_id, actor_role, actor_team,
                                  amount_minor, currency, limits, policy_version, reason, detail, offer_id,
                                  approval_id, from_state, to_state, occurred_at, rate)
           SELECT case_id, action, actor_kind, actor_employee_id, actor_role, actor_team, amount_minor, currency,
                  limits::jsonb, policy_version, reason, detail, offer_id, approval_id, from_state, to_state,
                  occurred_at, rate::jsonb
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                       $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                       $15::text[], $16::text[], $17::timestamptz[], $18::text[])
                WITH ORDINALITY AS u(case_id, action, actor_kind, actor_employee_id, actor_role, actor_team,
                                     amount_minor, currency, limits, policy_version, reason, detail, offer_id,
                                     approval_id, from_state, to_state, occurred_at, rate, ord)
           ORDER BY ord""",
        *columns(rows, 18),
    )


async def audit_of_case(conn: asyncpg.Connection, case_id: str) -> list[asyncpg.Record]:
    """Return the case's audit entries, oldest first."""
    return await conn.fetch("SELECT * FROM audit_log WHERE case_id = $1 ORDER BY entry_id", case_id)


# -------------------------------------------------------------------------------------------- reporters


@dataclass(frozen=True)
class Reporter:
    """A colleague whose report merged into the case."""

    employee_id: str
    failure_id: str
    reported_at: datetime


async def add_reporter(conn: asyncpg.Connection, case_id: str, reporter: Reporter) -> bool:
    """Record ``reporter`` on the case; False when they were recorded already (their first report stands)."""
    added = await conn.fetchval(
        """INSERT INTO case_reporters (case_id, employee_id, failure_id, reported_at)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
        case_id,
        reporter.employee_id,
        reporter.failure_id,
        reporter.reported_at,
    )
    return bool(added)


async def reporters_of(conn: asyncpg.Connection, case_id: str) -> list[Reporter]:
    """Return the case's colleagues who reported it too, oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM case_reporters WHERE case_id = $1 ORDER BY reported_at, employee_id", case_id
    )
    return [Reporter(r["employee_id"], r["failure_id"], r["reported_at"]) for r in rows]


async def is_reporter(conn: asyncpg.Connection, case_id: str, employee_id: str) -> bool:
    """True when ``employee_id`` reported the case too (their report merged into it)."""
    return bool(
        await conn.fetchval(
            "SELECT true FROM case_reporters WHERE case_id = $1 AND employee_id = $2", case_id, employee_id
        )
    )


# ------------------------------------------------------------------------------------------ contact log


async def insert_contact(conn: asyncpg.Connection, contact: Contact) -> None:
    """Append one entry to the case's contact log."""
    await conn.execute(
        """INSERT INTO case_contacts (contact_id, case_id, kind, channel, outcome, note, employee_id, occurred_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        contact.contact_id,
        contact.case_id,
        contact.kind.value,
        contact.channel.value if contact.channel else None,
        contact.outcome.value if contact.outcome else None,
        contact.note,
        contact.employee_id,
        contact.occurred_at,
    )


async def contacts_of(conn: asyncpg.Connection, case: Case) -> list[Contact]:
    """Return the case's contact log, oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM case_contacts WHERE case_id = $1 ORDER BY occurred_at, contact_id", case.case_id
    )
    return [
        Contact(
            contact_id=r["contact_id"],
            case_id=r["case_id"],
            customer_id=case.customer_id,
            kind=ContactKind(r["kind"]),
            channel=_opt(Channel, r["channel"]),
            outcome=_opt(ContactOutcome, r["outcome"]),
            note=r["note"],
            employee_id=r["employee_id"],
            occurred_at=r["occurred_at"],
        )
        for r in rows
    ]


# ---------------------------------------------------------------------------------------------- gauges


async def state_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Return the number of cases per state."""
    rows = await conn.fetch("SELECT state, count(*) AS n FROM cases GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def owner_loads(conn: asyncpg.Connection) -> dict[str, int]:
    """Return unresolved cases per owner."""
    rows = await conn.fetch(
        "SELECT owner_employee_id, count(*) AS n FROM cases WHERE state <> 'resolved' AND owner_employee_id <> '' "
        "GROUP BY owner_employee_id"
    )
    return {r["owner_employee_id"]: r["n"] for r in rows}


# ---------------------------------------------------------------------------------------- early events


async def park_event(conn: asyncpg.Connection, case_id: str, kind: str, payload: bytes, now: datetime) -> None:
    """Keep an event about a case not opened yet, to apply when it opens."""
    await park_events(conn, [(case_id, kind, payload)], now=now)


async def park_events(conn: asyncpg.Connection, events: Sequence[tuple[str, str, bytes]], *, now: datetime) -> None:
    """``park_event`` for (case id, kind, payload) events, in order, in one round trip."""
    await conn.executemany(
        "INSERT INTO early_events (case_id, kind, payload, received_at) VALUES ($1, $2, $3, $4)",
        [(case_id, kind, payload, now) for case_id, kind, payload in events],
    )


async def take_parked_events(conn: asyncpg.Connection, case_id: str) -> list[tuple[str, bytes]]:
    """Remove and return the case's parked events, in arrival order."""
    return (await take_parked_events_of(conn, [case_id])).get(case_id, [])


async def take_parked_events_of(
    conn: asyncpg.Connection, case_ids: Iterable[str]
) -> dict[str, list[tuple[str, bytes]]]:
    """Remove and return the parked events of each case that has any, in arrival order, in one statement."""
    rows = await conn.fetch(
        "DELETE FROM early_events WHERE case_id = ANY($1::text[]) RETURNING id, case_id, kind, payload",
        sorted(set(case_ids)),
    )
    parked: dict[str, list[tuple[str, bytes]]] = {}
    for r in sorted(rows, key=lambda r: r["id"]):
        parked.setdefault(r["case_id"], []).append((r["kind"], bytes(r["payload"])))
    return parked
