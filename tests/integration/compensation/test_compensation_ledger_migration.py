"""Migration 0002 over a ledger written before it: rows keyed by offer become keyed by authorisation, and a
re-quote still knows what their offers granted."""

from __future__ import annotations

import shutil
from dataclasses import replace

import asyncpg
import pytest

from services.common import migrations
from services.compensation import bootstrap
from services.compensation.adapters import repository, wire
from services.compensation.domain.model import AuthorizationPart, CostKind, GrantedLine, Money, RemedyKind
from tests.integration.conftest import now
from tests.unit.compensation.compensation_builders import cost, facts, offer

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(settings):
    connection = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.schema})
    yield connection
    await connection.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
    await connection.close()


async def test_spend_recorded_before_the_split_is_keyed_by_its_offer_and_granted_by_its_offers_lines(
    settings, conn, tmp_path
):
    folder = tmp_path / "migrations"
    folder.mkdir()
    shutil.copy(bootstrap.MIGRATIONS / "0001_compensation.sql", folder)
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=folder)

    # A case and its offer (taxi 40 EUR, voucher 15 EUR) as the service stored them before 0002, authorised with
    # an approver's cut to 45 EUR: the old ledger kept the amount only.
    at = now()
    case = facts(case_id="case-old", reported_costs=(cost(CostKind.TAXI, 4000, receipt=True),), failure_at=at)
    old = replace(offer(case, now=at), offer_id="offer-old", version=1)
    await conn.execute(
        """INSERT INTO offers (offer_id, case_id, customer_id, version, policy_version, total_minor, currency,
                               needs_review, budget_exceeded, proposed_at, offer, facts, team_spent_minor,
                               unverified_elsewhere)
           VALUES ($1, $2, $3, 1, $4, $5, 'EUR', false, false, $6, $7, $8, 0, 0)""",
        old.offer_id, old.case_id, old.customer_id, old.policy_version, old.total.amount_minor, at,
        wire.offer_to_proto(old).SerializeToString(), wire.facts_to_proto(case, at=at).SerializeToString(),
    )  # fmt: skip
    await conn.execute(
        """INSERT INTO spend (offer_id, case_id, team, period, currency, amount_minor, authorized_at)
           VALUES ('offer-old', 'case-old', 'front-desk', $1, 'EUR', 4500, $2)""",
        repository.period_of(at),
        at,
    )

    shutil.copy(bootstrap.MIGRATIONS / "0002_ledger_by_authorization.sql", folder)
    applied = await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=folder)
    assert applied == [f"{settings.schema}:0002_ledger_by_authorization.sql"]

    legacy = await conn.fetch("SELECT authorization_id, offer_id, part, lines FROM spend")
    assert [tuple(r) for r in legacy] == [("offer-old", "offer-old", "whole", None)]

    # Today's repository wants today's schema: the later migrations too (0005 counts the old row in its totals).
    for path in sorted(bootstrap.MIGRATIONS.glob("*.sql")):
        shutil.copy(path, folder)
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=folder)
    assert await repository.team_spent(conn, team="front-desk", currency="EUR", at=at) == 4500
    # The offer's lines in order, up to the 45 EUR authorised.
    assert await repository.granted_lines(conn, "case-old") == (
        GrantedLine(RemedyKind.REIMBURSEMENT, Money(4000, "EUR"), CostKind.TAXI),
        GrantedLine(RemedyKind.VOUCHER, Money(500, "EUR")),
    )

    # The approved remainder of the same offer, recorded after the split: a second row, not a conflict.
    remainder = repository.Spend(
        authorization_id="auth-remainder",
        offer_id="offer-old",
        case_id="case-old",
        team="front-desk",
        currency="EUR",
        amount_minor=1000,
        authorized_at=at,
        part=AuthorizationPart.REMAINDER,
        lines=(GrantedLine(RemedyKind.VOUCHER, Money(1000, "EUR")),),
    )
    assert await repository.record_spends(conn, [remainder, remainder]) == {"auth-remainder"}
    assert await repository.team_spent(conn, team="front-desk", currency="EUR", at=at) == 5500
    granted = await repository.granted_lines(conn, "case-old")
    assert sum(g.amount.amount_minor for g in granted if g.kind is RemedyKind.VOUCHER) == 1500
