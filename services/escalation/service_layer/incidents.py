"""Escalation's incidents: declaring one with a playbook (Plan B), and how the recovery of each stands.

A supervisor declares a disruption with one of compensation's playbooks: the declaration is stored once and
published as ``IncidentDeclared``; compensation then offers every case of the incident the playbook (unless the
normal rules give the customer more), and each playbook offer arriving here is authorised at once within the
declarer's limits (see ``authority.playbook_limits``), on the case's audit trail with the declaration.

A loop publishes an ``IncidentUpdated`` for every incident whose cases changed since its last update, so a
thousand cases of one cancelled flight changing in a minute make a handful of updates, not a thousand. Each
update is complete in itself (counted from the cases, not accumulated), so a lost or late one is repaired by
the next. One replica publishes per round (a transaction-scoped advisory lock); the ``ce_id`` names the
incident and the revision, so an update published twice (a crash after publishing) is deduped by consumers.
"""

from __future__ import annotations

import asyncpg

from services.common import outbox
from services.common.errors import AlreadyExists
from services.common.topics import topic
from services.common.unit_of_work import UnitOfWork
from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.domain import authority
from services.escalation.domain.errors import FieldViolation, InvalidCommand
from services.escalation.domain.model import Actor, Declaration, Limits
from services.escalation.service_layer import steps

INCIDENT_UPDATED = topic("recovery.incident-updated.v1").name
INCIDENT_DECLARED = topic("recovery.incident-declared.v1").name


async def declare_incident(
    conn: asyncpg.Connection, *, incident_id: str, playbook_id: str, reason: str, by: Actor, deps: steps.Deps
) -> tuple[Declaration, Limits]:
    """Declare the incident with a playbook under ``by``'s authority and publish it; returns the declaration and
    the limits it pre-approves with. The same declaration again returns the stored one (nothing published
    twice); another playbook or declarer for a declared incident is refused."""
    policy = deps.policy()
    limits = authority.check_may_declare(policy, by=by, playbook_id=playbook_id)  # who first: nothing else leaks
    missing = [
        FieldViolation(name, "required")
        for name, value in (("incident_id", incident_id), ("reason", reason.strip()))
        if not value
    ]
    if missing:
        raise InvalidCommand.of(*missing)
    declaration = Declaration(
        incident_id=incident_id,
        playbook_id=playbook_id,
        declared_by=by.employee_id,
        declared_by_role=by.role,
        declared_by_team=by.team,
        reason=reason.strip(),
        limits_policy_version=policy.version,
        declared_at=deps.clock(),
    )
    if not await repo.insert_declaration(conn, declaration):
        stored = (await repo.declarations_of(conn, [incident_id]))[incident_id]
        if (stored.playbook_id, stored.declared_by) != (playbook_id, by.employee_id):
            raise AlreadyExists(
                f"incident {incident_id} is already declared with playbook {stored.playbook_id} "
                f"by {stored.declared_by} at {stored.declared_at:%Y-%m-%d %H:%M} UTC"
            )
        return stored, limits
    await steps.stage_event(
        conn,
        INCIDENT_DECLARED,
        wire.incident_declared(declaration, limits=limits),
        key=wire.incident_key(incident_id),
        ce_id=f"incident-declared:{incident_id}",
        at=declaration.declared_at,
    )
    deps.metrics.incidents_declared.inc()
    return declaration, limits


async def publish_updates(uow: UnitOfWork, *, deps: steps.Deps, limit: int = 50) -> int:
    """Stage an update for each incident (at most ``limit``) whose cases changed since its last; returns how many."""
    conn, now = uow.conn, deps.clock()
    # The schema is part of the lock (advisory locks are per database): only this service's replicas exclude each other.
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ':incident-updates'))"):
        return 0  # another replica's round is publishing them
    changed = await repo.incidents_changed(conn, limit=limit)
    summaries = await repo.incident_summaries(conn, list(changed))
    for incident_id, revision in changed.items():
        summary = summaries[incident_id]
        uow.stage(
            outbox.event_record(
                INCIDENT_UPDATED,
                wire.incident_updated(incident_id, revision=revision, summary=summary, at=now),
                key=wire.incident_key(incident_id),
                source=steps.SOURCE,
                ce_id=f"incident-updated:{incident_id}:{revision}",
                time=now,
            )
        )
    if changed:
        await repo.mark_incidents_updated(conn, changed, now=now)
    return len(changed)
