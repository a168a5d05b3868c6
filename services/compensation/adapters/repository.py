"""Compensation's store in Postgres (asyncpg SQL only; callers own the transaction)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg
from recovery.compensation.v1 import compensation_pb2

from services.common.db import columns, lock_keys
from services.compensation.adapters import texts, wire
from services.compensation.domain.model import (
    AuthorizationPart,
    CaseFacts,
    CostKind,
    CustomerHistory,
    GrantedLine,
    Money,
    Offer,
    RemedyKind,
)
from services.compensation.domain.offer import granted_within, summarise_granted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredCase:
    """A case's latest facts (with the recovery's own failures counted in) and its bookkeeping."""

    facts: CaseFacts
    revision: int
    opened_at: datetime


@dataclass(frozen=True)
class StoredPolicy:
    """A policy version's text as it was loaded."""

    version: str
    sha256: str
    text: str
    loaded_at: datetime


# ------------------------------------------------------------------------------------ cases


async def insert_case(
    conn: asyncpg.Connection, facts: CaseFacts, *, revision: int, opened_at: datetime, unverified: int
) -> bool:
    """Store a new case's facts; False when the case id is already known (a duplicate: nothing written)."""
    return bool(await insert_cases(conn, [(facts, opened_at, unverified)], revision=revision))


async def insert_cases(
    conn: asyncpg.Connection, cases: Sequence[tuple[CaseFacts, datetime, int]], *, revision: int = 1
) -> set[str]:
    """Store new cases (facts, opened at, unverified claims) in one statement; returns the ids not known before."""
    if not cases:
        return set()
    rows = await conn.fetch(
        """INSERT INTO cases (case_id, customer_id, owning_team, revision, failure_at, opened_at, unverified_claims,
                              facts, updated_at, reference, incident_id)
           SELECT case_id, customer_id, owning_team, $8::int, failure_at, opened_at, unverified_claims, facts,
                  opened_at, reference, incident_id
           FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int[],
                       $7::bytea[], $9::text[], $10::text[]) AS n(case_id, customer_id, owning_team, failure_at,
                                                                  opened_at, unverified_claims, facts, reference,
                                                                  incident_id)
           ON CONFLICT (case_id) DO NOTHING RETURNING case_id""",
        [f.case_id for f, _, _ in cases],
        [f.customer_id for f, _, _ in cases],
        [f.owning_team for f, _, _ in cases],
        [f.failure_at for f, _, _ in cases],
        [opened_at for _, opened_at, _ in cases],
        [unverified for _, _, unverified in cases],
        [wire.facts_to_proto(f, at=f.failure_at).SerializeToString() for f, _, _ in cases],
        revision,
        [f.reference for f, _, _ in cases],
        [f.incident_id for f, _, _ in cases],
    )
    return {row["case_id"] for row in rows}


async def counted_for(conn: asyncpg.Connection, case_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Return the SLA breaches and reopenings already counted for each case (they may arrive before the case)."""
    rows = await conn.fetch(
        """SELECT id,
                  (SELECT count(*) FROM sla_breaches b WHERE b.case_id = id) AS breaches,
                  (SELECT count(*) FROM reopenings r WHERE r.case_id = id) AS reopens
           FROM unnest($1::text[]) AS id""",
        list(case_ids),
    )
    return {row["id"]: (row["breaches"], row["reopens"]) for row in rows}


@dataclass(frozen=True)
class RecentCase:
    """One of a customer's cases, for the abuse guard: when it opened and its costs without receipt."""

    case_id: str
    customer_id: str
    opened_at: datetime
    unverified_claims: int


async def recent_cases(conn: asyncpg.Connection, customer_ids: Sequence[str], *, since: datetime) -> list[RecentCase]:
    """Return the customers' cases opened since ``since``."""
    rows = await conn.fetch(
        """SELECT case_id, customer_id, opened_at, unverified_claims FROM cases
           WHERE customer_id = ANY($1::text[]) AND opened_at >= $2""",
        sorted(set(customer_ids)),
        since,
    )
    return [RecentCase(r["case_id"], r["customer_id"], r["opened_at"], r["unverified_claims"]) for r in rows]


async def update_case(
    conn: asyncpg.Connection, facts: CaseFacts, *, revision: int, unverified: int, at: datetime
) -> None:
    """Replace a case's facts with a newer revision (the caller holds the row lock)."""
    await conn.execute(
        """UPDATE cases SET revision = $2, unverified_claims = $3, facts = $4, updated_at = $5, reference = $6
           WHERE case_id = $1""",
        facts.case_id,
        revision,
        unverified,
        wire.facts_to_proto(facts, at=facts.failure_at).SerializeToString(),
        at,
        facts.reference,
    )


async def lock_case(conn: asyncpg.Connection, case_id: str) -> StoredCase | None:
    """Return the case with its row locked for this transaction (re-quotes of one case run one at a time)."""
    return await _case(conn, case_id, lock=True)


async def get_case(conn: asyncpg.Connection, case_id: str) -> StoredCase | None:
    """Return the case's latest facts, or None when compensation never saw it opened."""
    return await _case(conn, case_id, lock=False)


async def _case(conn: asyncpg.Connection, case_id: str, *, lock: bool) -> StoredCase | None:
    row = await conn.fetchrow(
        "SELECT * FROM cases WHERE case_id = $1" + (" FOR UPDATE" if lock else ""),
        case_id,
    )
    if row is None:
        return None
    stored = compensation_pb2.CaseFacts.FromString(row["facts"])
    facts = wire.facts_from_proto(stored, at=row["failure_at"], case_id=case_id)
    breaches = await conn.fetchval("SELECT count(*) FROM sla_breaches WHERE case_id = $1", case_id)
    reopens = await conn.fetchval("SELECT count(*) FROM reopenings WHERE case_id = $1", case_id)
    facts = replace(
        facts,
        owning_team=row["owning_team"],
        sla_breaches=breaches,
        reopen_count=reopens,
        reference=row["reference"],
        incident_id=row["incident_id"],
    )
    return StoredCase(facts=facts, revision=row["revision"], opened_at=row["opened_at"])


async def unverified_claims_elsewhere(
    conn: asyncpg.Connection, *, customer_id: str, case_id: str, since: datetime
) -> int:
    """Return the costs without receipt on the customer's other cases opened since ``since``."""
    value = await conn.fetchval(
        """SELECT coalesce(sum(unverified_claims), 0) FROM cases
           WHERE customer_id = $1 AND case_id <> $2 AND opened_at >= $3""",
        customer_id,
        case_id,
        since,
    )
    return int(value)


async def compensated_references(
    conn: asyncpg.Connection, keys: Iterable[tuple[str, str]], *, since: datetime
) -> dict[tuple[str, str], set[str]]:
    """Return, per (customer, non-empty reference), the cases on it with an authorisation since ``since``; one query."""
    keys = sorted({(customer, reference) for customer, reference in keys if reference})
    if not keys:
        return {}
    rows = await conn.fetch(
        """SELECT DISTINCT c.customer_id, c.reference, c.case_id
           FROM unnest($1::text[], $2::text[]) AS k(customer_id, reference)
           JOIN cases c ON c.customer_id = k.customer_id AND c.reference = k.reference
           JOIN spend s ON s.case_id = c.case_id AND s.authorized_at >= $3""",
        [customer for customer, _ in keys],
        [reference for _, reference in keys],
        since,
    )
    found: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        found.setdefault((r["customer_id"], r["reference"]), set()).add(r["case_id"])
    return found


async def record_breach(
    conn: asyncpg.Connection,
    *,
    case_id: str,
    clock: str,
    deadline_at: datetime,
    approval_id: str,
    breached_at: datetime,
) -> bool:
    """Record a missed deadline once; False when it was already counted."""
    status = await conn.execute(
        """INSERT INTO sla_breaches (case_id, clock, deadline_at, approval_id, breached_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        case_id,
        clock,
        deadline_at,
        approval_id,
        breached_at,
    )
    return status.endswith(" 1")


async def record_reopening(
    conn: asyncpg.Connection, *, case_id: str, dedupe_key: str, reason: str, reopened_at: datetime
) -> bool:
    """Record a reopening once; False when it was already counted."""
    status = await conn.execute(
        """INSERT INTO reopenings (case_id, dedupe_key, reason, reopened_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        case_id,
        dedupe_key,
        reason,
        reopened_at,
    )
    return status.endswith(" 1")


# ------------------------------------------------------------------------------------ incidents


async def lock_incidents(conn: asyncpg.Connection, incident_ids: Iterable[str]) -> None:
    """Hold a lock per incident until the transaction ends (one statement).

    A declaration and the opening of one of its cases take it before reading each other's rows, so the one that
    commits second sees the first: a case opened while its incident is being declared still gets the playbook.
    """
    await lock_keys(conn, "compensation-incident", incident_ids)


async def record_playbook(
    conn: asyncpg.Connection,
    *,
    incident_id: str,
    playbook_id: str,
    declared_by: str,
    declared_at: datetime,
    recorded_at: datetime,
) -> bool:
    """Record an incident's declaration once; False when the incident was already declared (nothing written)."""
    status = await conn.execute(
        """INSERT INTO incident_playbooks (incident_id, playbook_id, declared_by, declared_at, recorded_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (incident_id) DO NOTHING""",
        incident_id,
        playbook_id,
        declared_by,
        declared_at,
        recorded_at,
    )
    return status.endswith(" 1")


async def playbooks_of(conn: asyncpg.Connection, incident_ids: Iterable[str]) -> dict[str, str]:
    """Return the playbook of each declared incident among ``incident_ids``, in one query."""
    rows = await conn.fetch(
        "SELECT incident_id, playbook_id FROM incident_playbooks WHERE incident_id = ANY($1::text[])",
        sorted({i for i in incident_ids if i}),
    )
    return {row["incident_id"]: row["playbook_id"] for row in rows}


async def cases_of_incident(conn: asyncpg.Connection, incident_id: str) -> list[str]:
    """Return the ids of the incident's known cases, oldest first (none for the empty id: no incident)."""
    # The second condition is what lets the planner use the partial index (a parameter alone proves nothing).
    rows = await conn.fetch(
        "SELECT case_id FROM cases WHERE incident_id = $1 AND incident_id <> '' ORDER BY opened_at, case_id",
        incident_id,
    )
    return [row["case_id"] for row in rows]


# ------------------------------------------------------------------------------------ offers


def _lines_json(lines: Sequence[GrantedLine], *, with_currency: bool) -> str:
    """Return granted lines as JSON; a spend row has one currency (validated), so its lines leave it out."""
    return json.dumps(
        [
            {
                "kind": g.kind.value,
                "cost_kind": g.cost_kind.value if g.cost_kind else None,
                "amount_minor": g.amount.amount_minor,
            }
            | ({"currency": g.amount.currency} if with_currency else {})
            for g in lines
        ]
    )


def _granted_from_json(text: str | None, *, currency: str = "") -> tuple[GrantedLine, ...]:
    """Return stored granted lines (spend rows keep their currency on the row: ``currency``)."""
    return tuple(
        GrantedLine(
            kind=RemedyKind(item["kind"]),
            amount=Money(item["amount_minor"], item.get("currency") or currency),
            cost_kind=CostKind(item["cost_kind"]) if item.get("cost_kind") else None,
        )
        for item in json.loads(text or "[]")
    )


def _offer(row: asyncpg.Record) -> Offer:
    offer = wire.offer_from_proto(compensation_pb2.Offer.FromString(row["offer"]))
    # The API's offer message has no granted_before: it is derived from the grants the offer was computed against.
    granted = summarise_granted(_granted_from_json(row["granted"]), offer.total.currency)
    granted_before = texts.localise_lines(granted, offer.locale)
    return replace(offer, superseded_by_offer_id=row["superseded_by_offer_id"] or "", granted_before=granted_before)


@dataclass(frozen=True)
class NewOffer:
    """An offer version to store, with everything it was computed from (for recomputation)."""

    offer: Offer
    facts: CaseFacts
    history: CustomerHistory
    team_spent_minor: int
    granted: tuple[GrantedLine, ...] = ()


async def insert_offers(conn: asyncpg.Connection, offers: Sequence[NewOffer]) -> None:
    """Store new offer versions with their inputs in one statement (one execution, not one per offer)."""
    if not offers:
        return
    # unnest takes no array of arrays of different lengths: each offer's repeat-reference cases go as a JSON array.
    await conn.execute(
        """INSERT INTO offers (offer_id, case_id, customer_id, version, policy_version, total_minor, currency,
                               playbook_id, needs_review, budget_exceeded, proposed_at, offer, facts,
                               team_spent_minor, unverified_elsewhere, granted, repeat_reference_cases)
           SELECT offer_id, case_id, customer_id, version, policy_version, total_minor, currency, playbook_id,
                  needs_review, budget_exceeded, proposed_at, offer, facts, team_spent_minor, unverified_elsewhere,
                  granted::jsonb,
                  ARRAY(SELECT c FROM jsonb_array_elements_text(repeat_cases::jsonb) WITH ORDINALITY AS r(c, i)
                        ORDER BY i)
           FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bigint[], $7::text[],
                       $8::text[], $9::boolean[], $10::boolean[], $11::timestamptz[], $12::bytea[], $13::bytea[],
                       $14::bigint[], $15::int[], $16::text[], $17::text[])
                WITH ORDINALITY AS n(offer_id, case_id, customer_id, version, policy_version, total_minor, currency,
                                     playbook_id, needs_review, budget_exceeded, proposed_at, offer, facts,
                                     team_spent_minor, unverified_elsewhere, granted, repeat_cases, ord)
           ORDER BY ord""",
        *columns([_offer_row(new) for new in offers], 17),
    )


def _offer_row(new: NewOffer) -> tuple:
    offer = new.offer
    return (
        offer.offer_id,
        offer.case_id,
        offer.customer_id,
        offer.version,
        offer.policy_version,
        offer.total.amount_minor,
        offer.total.currency,
        offer.playbook_id,
        offer.needs_review,
        offer.budget_exceeded,
        offer.proposed_at,
        wire.offer_to_proto(offer).SerializeToString(),
        wire.facts_to_proto(new.facts, at=offer.proposed_at).SerializeToString(),
        new.team_spent_minor,
        new.history.unverified_claims_in_window,
        _lines_json(new.granted, with_currency=True),
        json.dumps(list(new.history.repeat_reference_cases)),
    )


async def supersede(conn: asyncpg.Connection, *, offer_id: str, by: str) -> None:
    """Mark ``offer_id`` as replaced by ``by``."""
    await conn.execute("UPDATE offers SET superseded_by_offer_id = $2 WHERE offer_id = $1", offer_id, by)


async def current_offer(conn: asyncpg.Connection, case_id: str) -> Offer | None:
    """Return the case's current offer (the one not superseded), or None."""
    row = await conn.fetchrow("SELECT * FROM offers WHERE case_id = $1 AND superseded_by_offer_id IS NULL", case_id)
    return None if row is None else _offer(row)


async def get_offer(conn: asyncpg.Connection, offer_id: str) -> Offer | None:
    """Return one offer version, or None."""
    row = await conn.fetchrow("SELECT * FROM offers WHERE offer_id = $1", offer_id)
    return None if row is None else _offer(row)


@dataclass(frozen=True)
class OfferInputs:
    """An offer with everything it was computed from."""

    offer: Offer
    facts: CaseFacts
    history: CustomerHistory
    team_spent_minor: int
    granted: tuple[GrantedLine, ...] = ()


async def offer_inputs(conn: asyncpg.Connection, offer_id: str) -> OfferInputs | None:
    """Return an offer with the facts, history, team spend and grants it was computed from, or None."""
    row = await conn.fetchrow("SELECT * FROM offers WHERE offer_id = $1", offer_id)
    if row is None:
        return None
    offer = _offer(row)
    facts = wire.facts_from_proto(
        compensation_pb2.CaseFacts.FromString(row["facts"]), at=row["proposed_at"], case_id=row["case_id"]
    )
    history = CustomerHistory(
        unverified_claims_in_window=row["unverified_elsewhere"],
        repeat_reference_cases=tuple(row["repeat_reference_cases"]),
    )
    return OfferInputs(offer, facts, history, row["team_spent_minor"], _granted_from_json(row["granted"]))


async def list_offers(
    conn: asyncpg.Connection, case_id: str, *, include_superseded: bool, below_version: int | None, limit: int
) -> list[Offer]:
    """Return the case's offers, newest version first, below ``below_version`` when given."""
    rows = await conn.fetch(
        """SELECT * FROM offers
           WHERE case_id = $1 AND ($2 OR superseded_by_offer_id IS NULL) AND ($3::int IS NULL OR version < $3)
           ORDER BY version DESC LIMIT $4""",
        case_id,
        include_superseded,
        below_version,
        limit,
    )
    return [_offer(row) for row in rows]


# ------------------------------------------------------------------------------------ policies


async def save_policy(conn: asyncpg.Connection, *, version: str, sha256: str, text: str, loaded_at: datetime) -> None:
    """Keep a policy version's text (the first text seen for a version stays)."""
    await conn.execute(
        """INSERT INTO policy_versions (version, sha256, text, loaded_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (version) DO NOTHING""",
        version,
        sha256,
        text,
        loaded_at,
    )


async def get_policy(conn: asyncpg.Connection, version: str) -> StoredPolicy | None:
    """Return a stored policy version, or None."""
    row = await conn.fetchrow("SELECT * FROM policy_versions WHERE version = $1", version)
    return None if row is None else StoredPolicy(row["version"], row["sha256"], row["text"], row["loaded_at"])


async def policy_checksums(conn: asyncpg.Connection) -> dict[str, str]:
    """Return every stored policy version's SHA-256."""
    return {row["version"]: row["sha256"] for row in await conn.fetch("SELECT version, sha256 FROM policy_versions")}


# ------------------------------------------------------------------------------------ spend ledger


def period_of(at: datetime) -> str:
    """Return the budget period ``at`` falls in: its UTC month, 'YYYY-MM'."""
    return at.astimezone(UTC).strftime("%Y-%m")


@dataclass(frozen=True)
class Spend:
    """One authorisation (of an offer or of a part of it) as its team's spend, with the lines it granted."""

    authorization_id: str
    offer_id: str
    case_id: str
    team: str
    currency: str
    amount_minor: int
    authorized_at: datetime
    part: AuthorizationPart = AuthorizationPart.WHOLE
    lines: tuple[GrantedLine, ...] = ()


async def record_spends(conn: asyncpg.Connection, spends: Sequence[Spend]) -> set[str]:
    """Add authorisations to their teams' spend once each, in one statement; returns the ids that were new.

    The statement's trigger adds the rows it inserted to their teams' running totals (migration 0005), so a
    duplicate, inserted nothing, counts nothing, and the totals commit or roll back with the rows.
    """
    if not spends:
        return set()
    rows = await conn.fetch(
        """INSERT INTO spend (authorization_id, offer_id, case_id, team, period, currency, amount_minor, authorized_at,
                              part, lines)
           SELECT authorization_id, offer_id, case_id, team, period, currency, amount_minor, authorized_at, part,
                  lines::jsonb
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                       $8::timestamptz[], $9::text[], $10::text[])
                AS n(authorization_id, offer_id, case_id, team, period, currency, amount_minor, authorized_at, part,
                     lines)
           ON CONFLICT (authorization_id) DO NOTHING RETURNING authorization_id""",
        [x.authorization_id for x in spends],
        [x.offer_id for x in spends],
        [x.case_id for x in spends],
        [x.team for x in spends],
        [period_of(x.authorized_at) for x in spends],
        [x.currency for x in spends],
        [x.amount_minor for x in spends],
        [x.authorized_at for x in spends],
        [x.part.value for x in spends],
        [_lines_json(x.lines, with_currency=False) for x in spends],
    )
    return {row["authorization_id"] for row in rows}


async def granted_lines(conn: asyncpg.Connection, case_id: str) -> tuple[GrantedLine, ...]:
    """Return the lines every authorisation of the case granted, oldest authorisation first.

    Rows recorded before the ledger kept lines have none: the authorised offer's own lines stand in, taken in
    order up to the amount authorised (an approver's cut is not known line by line for them).
    """
    rows = await conn.fetch(
        """SELECT s.authorization_id, s.currency, s.amount_minor, s.lines::text AS lines, o.offer
           FROM spend s LEFT JOIN offers o ON s.lines IS NULL AND o.offer_id = s.offer_id
           WHERE s.case_id = $1 ORDER BY s.authorized_at, s.authorization_id""",
        case_id,
    )
    found: list[GrantedLine] = []
    for r in rows:
        if r["lines"] is not None:
            found += _granted_from_json(r["lines"], currency=r["currency"])
        elif r["offer"] is not None:
            offered = wire.offer_from_proto(compensation_pb2.Offer.FromString(r["offer"])).line_items
            found += granted_within(offered, Money(r["amount_minor"], r["currency"]))
        else:
            log.warning("authorisation %s of case %s names no offer of this service", r["authorization_id"], case_id)
    return tuple(found)


async def owning_teams(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, str]:
    """Return the owning team of each known case among ``case_ids``."""
    rows = await conn.fetch(
        "SELECT case_id, owning_team FROM cases WHERE case_id = ANY($1::text[])", sorted(set(case_ids))
    )
    return {row["case_id"]: row["owning_team"] for row in rows}


async def teams_spent(
    conn: asyncpg.Connection, keys: Iterable[tuple[str, str]], *, at: datetime
) -> dict[tuple[str, str], int]:
    """Return what each (team, currency) has had authorised in the month of ``at``, in one query.

    Read from the running totals (migration 0005), not summed from the ledger: a team's month of spend rows
    grows with every authorisation, and a mass disruption puts every case in one team.
    """
    keys = sorted(set(keys))
    rows = await conn.fetch(
        """SELECT k.team, k.currency, coalesce(t.amount_minor, 0) AS spent
           FROM unnest($1::text[], $2::text[]) AS k(team, currency)
           LEFT JOIN spend_totals t ON t.team = k.team AND t.period = $3 AND t.currency = k.currency""",
        [team for team, _ in keys],
        [currency for _, currency in keys],
        period_of(at),
    )
    return {(r["team"], r["currency"]): int(r["spent"]) for r in rows}


async def team_spent(conn: asyncpg.Connection, *, team: str, currency: str, at: datetime) -> int:
    """Return what ``team`` has had authorised in ``currency`` in the month of ``at`` (its running total)."""
    value = await conn.fetchval(
        """SELECT coalesce((SELECT amount_minor FROM spend_totals WHERE team = $1 AND period = $2 AND currency = $3),
                           0)""",
        team,
        period_of(at),
        currency,
    )
    return int(value)


async def claim_adjustment(conn: asyncpg.Connection, adjustment_id: str, *, case_id: str, at: datetime) -> bool:
    """Record that the adjustment is applied; False when it was already (a republished copy)."""
    return bool(
        await conn.fetchval(
            """INSERT INTO adjustments (adjustment_id, case_id, applied_at) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING true""",
            adjustment_id,
            case_id,
            at,
        )
    )
