"""Escalation's incident updates: how the recovery of each disruption stands, told to other systems.

A loop publishes an ``IncidentUpdated`` for every incident whose cases changed since its last update, so a
thousand cases of one cancelled flight changing in a minute make a handful of updates, not a thousand. Each
update is complete in itself (counted from the cases, not accumulated), so a lost or late one is repaired by
the next. One replica publishes per round (a transaction-scoped advisory lock); the ``ce_id`` names the
incident and the revision, so an update published twice (a crash after publishing) is deduped by consumers.
"""

from __future__ import annotations

from services.common import outbox
from services.common.topics import topic
from services.common.unit_of_work import UnitOfWork
from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.service_layer import steps

INCIDENT_UPDATED = topic("recovery.incident-updated.v1").name


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
