"""What a customer was granted, over real Postgres (and the running service): a case's authorisations add up.

A split offer is authorised twice (the owner's share at once, the approved remainder later) and a re-quote after
an authorisation offers only what is new; each authorisation counts once, however often it is delivered.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from recovery.events.v1 import common_pb2, events_pb2
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

from services.common import migrations
from services.common.db import Database
from services.common.money import Money
from services.common.wire import time_to_proto
from services.intake import bootstrap
from services.intake.adapters import repository, wire
from services.intake.adapters.repository import FailureStore
from services.intake.domain.acceptance import Granted
from tests.integration.conftest import eventually
from tests.integration.intake.conftest import new_id, now, publish
from tests.integration.intake.test_intake_api import agent, report
from tests.support.running import channel

OWNER_SHARE = common_pb2.AUTHORIZATION_PART_OWNER_SHARE
REMAINDER = common_pb2.AUTHORIZATION_PART_REMAINDER
WHOLE = common_pb2.AUTHORIZATION_PART_WHOLE


def authorized(customer_id: str, case_id: str, offer_id: str, minor: int, **fields) -> events_pb2.OfferAuthorized:
    base = {
        "customer_id": customer_id,
        "case_id": case_id,
        "offer_id": offer_id,
        "offer_version": 1,
        "amount": common_pb2.Money(amount_minor=minor, currency="EUR"),
        "authorized_at": time_to_proto(now()),
    }
    return events_pb2.OfferAuthorized(**(base | fields))


def split_and_requoted(customer_id: str, case_id: str) -> list[events_pb2.OfferAuthorized]:
    """An offer of 80.00 EUR split 50.00 (owner) + 30.00 (approved), then a re-quote adding 15.00."""
    offer = new_id("offer")
    return [
        authorized(customer_id, case_id, offer, 5000, authorization_id=new_id("auth"), part=OWNER_SHARE),
        authorized(customer_id, case_id, offer, 3000, authorization_id=new_id("auth"), part=REMAINDER),
        authorized(customer_id, case_id, new_id("offer"), 1500, offer_version=2, authorization_id=new_id("auth")),
    ]


# --------------------------------------------------------------------------------- the store, directly


def copy_migrations(folder: Path, *names: str) -> Path:
    """Copy intake's migrations named ``names`` (all when none) into ``folder``, as a release would ship them."""
    folder.mkdir(exist_ok=True)
    for path in sorted(bootstrap.MIGRATIONS.glob("*.sql")):
        if not names or path.name in names:
            shutil.copy(path, folder)
    return folder


@pytest.fixture
async def store(settings):
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=bootstrap.MIGRATIONS)
    database = await Database.connect(settings.database_url, schema=settings.schema, max_size=2)
    yield database
    await database.close()
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
    await conn.close()


async def record(database: Database, *messages: events_pb2.OfferAuthorized) -> None:
    async with database.transaction() as conn:
        await repository.record_compensations(conn, [wire.compensation_from_event(m, at=now()) for m in messages])


async def granted(database: Database, customer_id: str) -> list[Granted]:
    async with database.transaction() as conn:
        states = await FailureStore(conn).customer_states(
            [customer_id], now=now(), failure_lookback=timedelta(days=365), case_lookback=timedelta(days=90)
        )
    return states[customer_id].granted


async def test_every_authorisation_of_a_case_counts_once_in_what_the_customer_was_granted(store):
    customer = new_id("cust")
    owner_share, remainder, requote = split_and_requoted(customer, "case-1")
    other = authorized(customer, "case-2", new_id("offer"), 2000, authorization_id=new_id("auth"), part=WHOLE)
    await record(store, owner_share)
    await record(store, remainder, requote, other)
    # Redelivered, alone and within a batch that repeats one: nothing changes.
    await record(store, remainder)
    await record(store, owner_share, requote, owner_share)

    async with store.transaction() as conn:
        by_case = await repository.compensation_by_case(conn, ["case-1", "case-2", "case-3"])
        parts = await conn.fetch("SELECT part FROM compensations WHERE case_id = 'case-1' ORDER BY amount_minor")
    assert by_case == {"case-1": (Money(9500, "EUR"),), "case-2": (Money(2000, "EUR"),)}
    assert [r["part"] for r in parts] == ["whole", "remainder", "owner_share"]
    assert sorted((g.case_id, g.amount) for g in await granted(store, customer)) == [
        ("case-1", Money(9500, "EUR")),
        ("case-2", Money(2000, "EUR")),
    ]


async def test_an_authorisation_from_before_the_split_is_keyed_by_its_offer_and_counted_once(store):
    customer = new_id("cust")
    legacy = authorized(customer, "case-1", new_id("offer"), 4000)  # no authorization_id, no part
    await record(store, legacy)
    await record(store, legacy)
    async with store.transaction() as conn:
        [row] = await conn.fetch("SELECT authorization_id, offer_id, part FROM compensations")
        assert await repository.compensation_by_case(conn, ["case-1"]) == {"case-1": (Money(4000, "EUR"),)}
    assert (row["authorization_id"], row["part"]) == (legacy.offer_id, "whole")


async def test_rows_recorded_before_the_migration_become_an_authorisation_each_under_their_offer(settings, tmp_path):
    # Bring a schema up to 0001 only, as deployed before, and record a case's compensation the old way.
    before = copy_migrations(tmp_path / "migrations", "0001_intake.sql")
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=before)
    database = await Database.connect(settings.database_url, schema=settings.schema, max_size=2)
    try:
        customer = new_id("cust")
        async with database.transaction() as conn:
            await conn.execute(
                """INSERT INTO compensations (case_id, customer_id, offer_id, offer_version, amount_minor, currency,
                                              authorized_at)
                   VALUES ('case-1', $1, 'offer-old', 3, 7000, 'EUR', now())""",
                customer,
            )
        copy_migrations(before)
        applied = await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=before)
        assert applied[0] == f"{settings.schema}:0002_compensations_per_authorization.sql"  # then any later ones

        # The old row is the case's first authorisation; a later one adds to it, and the old one redelivered does not.
        [requote] = split_and_requoted(customer, "case-1")[2:]
        await record(database, requote, authorized(customer, "case-1", "offer-old", 7000, offer_version=3))
        async with database.transaction() as conn:
            rows = await conn.fetch("SELECT authorization_id, part FROM compensations ORDER BY amount_minor DESC")
            assert await repository.compensation_by_case(conn, ["case-1"]) == {"case-1": (Money(8500, "EUR"),)}
        assert [(r["authorization_id"], r["part"]) for r in rows] == [
            ("offer-old", "whole"),
            (requote.authorization_id, "whole"),
        ]
    finally:
        await database.close()
        conn = await asyncpg.connect(settings.database_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
        await conn.close()


# ------------------------------------------------------------------------------ the running service


@pytest.fixture
async def stub(intake):
    async with channel(intake.endpoints.grpc_port) as ch:
        yield intake_pb2_grpc.IntakeServiceStub(ch)


async def test_a_split_offer_and_a_requote_all_count_in_the_history_and_a_redelivery_changes_nothing(
    intake, stub, publisher
):
    customer = new_id("cust")
    first = await stub.ReportFailure(report(customer), metadata=agent(intake))
    second = await stub.ReportFailure(report(customer), metadata=agent(intake))
    assert first.case_id != second.case_id
    grants = split_and_requoted(customer, first.case_id)
    ce_ids = [await publish(publisher, "recovery.offer-authorized.v1", m, source="escalation") for m in grants]

    async def history(at_least: int):
        view = await stub.GetCustomerHistory(
            intake_pb2.GetCustomerHistoryRequest(customer_id=customer), metadata=agent(intake)
        )
        cases = {c.case_id: [(m.amount_minor, m.currency) for m in c.compensation_received] for c in view.cases}
        return cases if sum(a for amounts in cases.values() for a, _ in amounts) >= at_least else None

    assert (await eventually(lambda: history(9500), timeout=30))[first.case_id] == [(9500, "EUR")]

    # The remainder again: once as the same record (the inbox drops it), once republished under a new event id (the
    # authorisation id drops it). Then an authorisation of the other case, behind them on the customer's partition:
    # once it shows, the redeliveries before it were handled.
    remainder = grants[1]
    await publish(publisher, "recovery.offer-authorized.v1", remainder, source="escalation", ce_id=ce_ids[1])
    await publish(publisher, "recovery.offer-authorized.v1", remainder, source="escalation")
    sentinel = authorized(customer, second.case_id, new_id("offer"), 2000, authorization_id=new_id("auth"))
    await publish(publisher, "recovery.offer-authorized.v1", sentinel, source="escalation")
    cases = await eventually(lambda: history(11500), timeout=30)
    assert cases == {first.case_id: [(9500, "EUR")], second.case_id: [(2000, "EUR")]}

    # The customer's next case sees both cases' authorisations added up.
    third = await stub.ReportFailure(report(customer), metadata=agent(intake))
    assert [(m.amount_minor, m.currency) for m in third.history.compensation_received] == [(11500, "EUR")]
