"""Team spend as running totals on the real Postgres: every authorisation counted once (a duplicate not at all),
per team, month and currency, equal to the ledger's sums whatever changes the ledger; migration 0005 starts them
from the rows already there. And offers stored in one statement read back as they were computed."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.common import migrations
from services.compensation import bootstrap
from services.compensation.adapters import repository, wire
from services.compensation.domain.model import CostKind, CustomerHistory, GrantedLine, Money, RemedyKind
from tests.integration.conftest import new_id
from tests.unit.compensation.compensation_builders import cost, facts, offer

pytestmark = pytest.mark.integration

MARCH = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
APRIL = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)


def spend(amount: int, *, team: str = "front-desk", currency: str = "EUR", at: datetime = MARCH, auth: str = ""):
    return repository.Spend(
        authorization_id=auth or new_id("auth"),
        offer_id=new_id("offer"),
        case_id=new_id("case"),
        team=team,
        currency=currency,
        amount_minor=amount,
        authorized_at=at,
        lines=(GrantedLine(RemedyKind.VOUCHER, Money(amount, currency)),),
    )


async def ledger_sums(conn) -> dict[tuple[str, str, str], int]:
    rows = await conn.fetch("SELECT team, period, currency, sum(amount_minor) AS s FROM spend GROUP BY 1, 2, 3")
    return {(r["team"], r["period"], r["currency"]): int(r["s"]) for r in rows}


async def totals(conn) -> dict[tuple[str, str, str], int]:
    rows = await conn.fetch("SELECT team, period, currency, amount_minor FROM spend_totals WHERE amount_minor <> 0")
    return {(r["team"], r["period"], r["currency"]): r["amount_minor"] for r in rows}


async def test_each_authorisation_is_counted_once_per_team_month_and_currency(db):
    again = spend(700)
    async with db.transaction() as conn:
        batch = [spend(1500), again, again, spend(300, currency="PLN"), spend(900, team="night-desk")]
        assert len(await repository.record_spends(conn, batch)) == 4  # the copy in the batch inserts nothing
    async with db.transaction() as conn:
        # Redelivered in a later batch, beside a new one and one of April: only the new ones count.
        assert await repository.record_spends(conn, [again, spend(100), spend(5000, at=APRIL)]) != set()
        assert await repository.record_spends(conn, [again]) == set()

    async with db.transaction() as conn:
        assert await repository.team_spent(conn, team="front-desk", currency="EUR", at=MARCH) == 1500 + 700 + 100
        assert await repository.team_spent(conn, team="front-desk", currency="EUR", at=APRIL) == 5000
        assert await repository.team_spent(conn, team="front-desk", currency="GBP", at=MARCH) == 0
        assert await repository.teams_spent(
            conn, [("front-desk", "EUR"), ("front-desk", "PLN"), ("night-desk", "EUR"), ("nobody", "EUR")], at=MARCH
        ) == {("front-desk", "EUR"): 2300, ("front-desk", "PLN"): 300, ("night-desk", "EUR"): 900, ("nobody", "EUR"): 0}
        assert await repository.teams_spent(conn, [], at=MARCH) == {}
        assert await totals(conn) == await ledger_sums(conn)


async def test_a_batch_rolled_back_leaves_the_totals_as_they_were(db):
    async with db.transaction() as conn:
        await repository.record_spends(conn, [spend(1000)])
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await repository.record_spends(conn, [spend(4000)])
            raise RuntimeError("the batch fails after its spend")
    async with db.transaction() as conn:
        assert await repository.team_spent(conn, team="front-desk", currency="EUR", at=MARCH) == 1000


async def test_the_totals_follow_the_ledger_through_corrections_by_hand(settings, db):
    async with db.transaction() as conn:
        await repository.record_spends(conn, [spend(1000, auth="a1"), spend(2000, auth="a2"), spend(400, auth="a3")])
        # An operator's session, on another search path, naming the table with its schema.
        await conn.execute("SET LOCAL search_path TO public")
        await conn.execute(f"DELETE FROM {settings.schema}.spend WHERE authorization_id = 'a1'")
        await conn.execute(f"SET LOCAL search_path TO {settings.schema}")
        await conn.execute("UPDATE spend SET amount_minor = 2500 WHERE authorization_id = 'a2'")
        await conn.execute("UPDATE spend SET team = 'night-desk' WHERE authorization_id = 'a3'")
        assert await repository.team_spent(conn, team="front-desk", currency="EUR", at=MARCH) == 2500
        assert await repository.team_spent(conn, team="night-desk", currency="EUR", at=MARCH) == 400
        assert await totals(conn) == await ledger_sums(conn)
        await conn.execute("TRUNCATE spend")
        assert await repository.team_spent(conn, team="front-desk", currency="EUR", at=MARCH) == 0


async def test_migration_0005_starts_the_totals_from_the_ledger_already_there(settings, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in sorted(bootstrap.MIGRATIONS.glob("*.sql")):
        if path.name < "0005":
            shutil.copy(path, folder)
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=folder)
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.schema})
    try:
        # Spend recorded by the version before: two teams, two months, two currencies.
        for auth, team, period, currency, amount in [
            ("a1", "front-desk", "2026-03", "EUR", 1500),
            ("a2", "front-desk", "2026-03", "EUR", 2500),
            ("a3", "front-desk", "2026-02", "EUR", 9000),
            ("a4", "front-desk", "2026-03", "PLN", 300),
            ("a5", "night-desk", "2026-03", "EUR", 700),
        ]:
            await conn.execute(
                """INSERT INTO spend (authorization_id, offer_id, case_id, team, period, currency, amount_minor,
                                      authorized_at, part)
                   VALUES ($1, $1, 'case-old', $2, $3, $4, $5, $6, 'whole')""",
                auth, team, period, currency, amount, MARCH,
            )  # fmt: skip

        shutil.copy(bootstrap.MIGRATIONS / "0005_spend_totals.sql", folder)
        applied = await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=folder)
        assert applied == [f"{settings.schema}:0005_spend_totals.sql"]

        assert await totals(conn) == {
            ("front-desk", "2026-03", "EUR"): 4000,
            ("front-desk", "2026-02", "EUR"): 9000,
            ("front-desk", "2026-03", "PLN"): 300,
            ("night-desk", "2026-03", "EUR"): 700,
        }
        # What is recorded after goes on top; an old authorisation redelivered still counts once.
        old = replace(spend(1500, auth="a1"), offer_id="a1", case_id="case-old")
        assert await repository.record_spends(conn, [old, spend(100)]) != set()
        assert await repository.team_spent(conn, team="front-desk", currency="EUR", at=MARCH) == 4100
        assert await totals(conn) == await ledger_sums(conn)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
        await conn.close()


def new_offer(repeat: tuple[str, ...], *, granted: tuple[GrantedLine, ...] = (), spent: int = 0) -> repository.NewOffer:
    case = facts(
        case_id=new_id("case"),
        customer_id=new_id("cust"),
        reported_costs=(cost(CostKind.TAXI, 4000, receipt=True),),
        failure_at=MARCH - timedelta(hours=3),
    )
    history = CustomerHistory(unverified_claims_in_window=len(repeat), repeat_reference_cases=repeat)
    computed = offer(case, history=history, now=MARCH, spent=spent, given=granted)
    computed = replace(computed, offer_id=new_id("offer"), version=1)
    return repository.NewOffer(computed, case, history, spent, granted)


async def test_offers_stored_in_one_statement_read_back_as_computed_in_order(db):
    taxi = GrantedLine(RemedyKind.REIMBURSEMENT, Money(4000, "EUR"), CostKind.TAXI)
    stored = [
        new_offer(()),
        new_offer(("case-b", "case-a", "case-c"), spent=120_000),
        new_offer(("case-z",), granted=(taxi, GrantedLine(RemedyKind.VOUCHER, Money(500, "EUR")))),
        new_offer(()),
    ]
    async with db.transaction() as conn:
        await repository.insert_offers(conn, stored)
        await repository.insert_offers(conn, [])
    async with db.transaction() as conn:
        # Physically in the order given (one statement, row order kept).
        rows = await conn.fetch("SELECT offer_id, repeat_reference_cases FROM offers ORDER BY ctid")
        assert [(r["offer_id"], r["repeat_reference_cases"]) for r in rows] == [
            (new.offer.offer_id, list(new.history.repeat_reference_cases)) for new in stored
        ]
        for new in stored:
            o = new.offer
            row = dict(await conn.fetchrow("SELECT * FROM offers WHERE offer_id = $1", o.offer_id))
            assert json.loads(row.pop("granted")) == [
                {
                    "kind": g.kind.value,
                    "cost_kind": g.cost_kind and g.cost_kind.value,
                    "amount_minor": g.amount.amount_minor,
                    "currency": "EUR",
                }
                for g in new.granted
            ]
            assert row == {
                "offer_id": o.offer_id,
                "case_id": o.case_id,
                "customer_id": o.customer_id,
                "version": 1,
                "policy_version": o.policy_version,
                "total_minor": o.total.amount_minor,
                "currency": "EUR",
                "needs_review": o.needs_review,
                "budget_exceeded": o.budget_exceeded,
                "superseded_by_offer_id": None,
                "proposed_at": o.proposed_at,
                "offer": wire.offer_to_proto(o).SerializeToString(),
                "facts": wire.facts_to_proto(new.facts, at=o.proposed_at).SerializeToString(),
                "team_spent_minor": new.team_spent_minor,
                "unverified_elsewhere": new.history.unverified_claims_in_window,
                "repeat_reference_cases": list(new.history.repeat_reference_cases),
                "playbook_id": "",
            }
            inputs = await repository.offer_inputs(conn, o.offer_id)
            assert inputs is not None
            assert (inputs.facts, inputs.history) == (new.facts, new.history)
            assert (inputs.team_spent_minor, inputs.granted) == (new.team_spent_minor, new.granted)
            assert (inputs.offer.offer_id, inputs.offer.total) == (o.offer_id, o.total)
