"""Migration 0003 over cases and offers written before it: they are in no incident and no playbook, and read back
as they were."""

from __future__ import annotations

import shutil

import asyncpg
import pytest

from services.common import migrations
from services.compensation import bootstrap
from services.compensation.adapters import repository, wire
from tests.integration.conftest import now
from tests.unit.compensation.compensation_builders import facts

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(settings):
    connection = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.schema})
    yield connection
    await connection.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
    await connection.close()


async def test_cases_and_offers_stored_before_are_in_no_incident(settings, conn, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name in ("0001_compensation.sql", "0002_ledger_by_authorization.sql"):
        shutil.copy(bootstrap.MIGRATIONS / name, folder)
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=folder)

    at = now()
    case = facts(case_id="case-old", failure_at=at)
    await conn.execute(
        """INSERT INTO cases (case_id, customer_id, owning_team, revision, failure_at, opened_at, unverified_claims,
                              facts, updated_at)
           VALUES ('case-old', $1, 'front-desk', 1, $2, $2, 0, $3, $2)""",
        case.customer_id,
        at,
        wire.facts_to_proto(case, at=at).SerializeToString(),
    )
    await conn.execute(
        """INSERT INTO offers (offer_id, case_id, customer_id, version, policy_version, total_minor, currency,
                               needs_review, budget_exceeded, proposed_at, offer, facts, team_spent_minor,
                               unverified_elsewhere)
           VALUES ('offer-old', 'case-old', $1, 1, '2026.1', 0, 'EUR', false, false, $2, '', '', 0, 0)""",
        case.customer_id,
        at,
    )

    shutil.copy(bootstrap.MIGRATIONS / "0003_incidents.sql", folder)
    applied = await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=folder)
    assert applied == [f"{settings.schema}:0003_incidents.sql"]

    assert await conn.fetchval("SELECT incident_id FROM cases WHERE case_id = 'case-old'") == ""
    assert await conn.fetchval("SELECT playbook_id FROM offers WHERE offer_id = 'offer-old'") == ""
    stored = await repository.get_case(conn, "case-old")
    assert stored is not None and (stored.facts.incident_id, stored.facts.playbook_id) == ("", "")
    assert await repository.cases_of_incident(conn, "") == []
    assert await repository.playbooks_of(conn, [""]) == {}
