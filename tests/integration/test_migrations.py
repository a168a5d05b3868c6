"""Migrations: applied once, in order, recorded with checksums; edits and failures refused; replicas serialise."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import asyncpg
import pytest

from services.common import inbox, migrations
from services.common.migrations import KIT_MIGRATIONS, MigrationError
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration

KIT_VERSIONS = [f"kit:{p.name}" for p in sorted(KIT_MIGRATIONS.glob("*.sql"))]


@pytest.fixture
async def conn(settings):
    connection = await asyncpg.connect(settings.database_url)
    yield connection
    await connection.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
    await connection.close()


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


async def recorded(conn: asyncpg.Connection, schema: str) -> dict[str, str]:
    rows = await conn.fetch(f"SELECT version, checksum FROM {schema}.schema_migrations ORDER BY applied_at, version")
    return {r["version"]: r["checksum"] for r in rows}


async def table_exists(conn: asyncpg.Connection, schema: str, table: str) -> bool:
    return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.{table}")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_kit_migrations_are_applied_once_and_recorded_with_checksums(settings, conn):
    schema = settings.schema
    assert KIT_VERSIONS == [
        "kit:0001_outbox_inbox.sql",
        "kit:0002_inbox_by_source.sql",
        "kit:0003_request_claims.sql",
        "kit:0004_pruning_indexes.sql",
    ]

    assert await migrations.migrate(settings.database_url, schema=schema) == KIT_VERSIONS
    for table in ("outbox", "inbox", "request_log", "schema_migrations"):
        assert await table_exists(conn, schema, table), table
    checksums = {f"kit:{p.name}": sha256(p.read_text()) for p in sorted(KIT_MIGRATIONS.glob("*.sql"))}
    assert await recorded(conn, schema) == checksums

    assert await migrations.migrate(settings.database_url, schema=schema) == []
    assert await recorded(conn, schema) == checksums


async def test_inbox_rows_from_before_sources_move_with_no_source_and_still_cover_their_id(settings, conn):
    schema = settings.schema
    first = migrations.discover(("kit", KIT_MIGRATIONS))[:1]
    assert await migrations.apply(conn, schema=schema, migrations=first) == ["kit:0001_outbox_inbox.sql"]
    await conn.execute(f"INSERT INTO {schema}.inbox (consumer, ce_id, topic) VALUES ('intake', 'a1', 't')")
    assert (await migrations.migrate(settings.database_url, schema=schema))[0] == "kit:0002_inbox_by_source.sql"
    rows = await conn.fetch(f"SELECT consumer, ce_source, ce_id FROM {schema}.inbox")
    assert [tuple(r) for r in rows] == [("intake", "", "a1")]
    await conn.execute(f"SET search_path TO {schema}")
    claimed = await inbox.claim_many(conn, consumer="intake", events=[("billing", "a1"), ("billing", "a2")], topic="t")
    assert claimed == {("billing", "a2")}  # the old row still stands for a1, whoever sends it


async def test_service_migrations_come_after_the_kit_in_file_name_order(settings, conn, folder):
    schema = settings.schema
    # 0002 needs 0001's table and 0010 needs 0002's column: any other order fails.
    (folder / "0010_index.sql").write_text("CREATE INDEX cases_severity ON cases (severity);")
    (folder / "0002_severity.sql").write_text("ALTER TABLE cases ADD COLUMN severity int NOT NULL DEFAULT 0;")
    (folder / "0001_cases.sql").write_text("CREATE TABLE cases (id text PRIMARY KEY, outbox_id bigint);")
    (folder / "README.md").write_text("not a migration")

    applied = await migrations.migrate(settings.database_url, schema=schema, service_migrations=folder)

    service = [f"{schema}:0001_cases.sql", f"{schema}:0002_severity.sql", f"{schema}:0010_index.sql"]
    assert applied == KIT_VERSIONS + service
    assert set(await recorded(conn, schema)) == set(applied)
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'cases'", schema
        )
        == 3
    )
    assert not await table_exists(conn, "public", "cases")  # created inside the service's schema

    (folder / "0011_more.sql").write_text("CREATE TABLE more (id int);")
    assert await migrations.migrate(settings.database_url, schema=schema, service_migrations=folder) == [
        f"{schema}:0011_more.sql"
    ]


async def test_an_applied_migration_that_was_edited_is_refused_naming_it(settings, conn, folder):
    schema = settings.schema
    (folder / "0001_cases.sql").write_text("CREATE TABLE cases (id text PRIMARY KEY);")
    await migrations.migrate(settings.database_url, schema=schema, service_migrations=folder)
    before = await recorded(conn, schema)

    (folder / "0001_cases.sql").write_text("CREATE TABLE cases (id text PRIMARY KEY, extra int);")
    (folder / "0002_new.sql").write_text("CREATE TABLE new_table (id int);")
    with pytest.raises(MigrationError, match=f"migration {schema}:0001_cases.sql was changed after it was applied"):
        await migrations.migrate(settings.database_url, schema=schema, service_migrations=folder)

    assert await recorded(conn, schema) == before
    assert not await table_exists(conn, schema, "new_table")


async def test_a_failing_migration_leaves_nothing_of_itself(settings, conn, folder):
    schema = settings.schema
    (folder / "0001_cases.sql").write_text("CREATE TABLE cases (id text PRIMARY KEY);")
    await migrations.migrate(settings.database_url, schema=schema, service_migrations=folder)
    before = await recorded(conn, schema)

    (folder / "0002_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nINSERT INTO cases (id) VALUES ('a');\nSELECT no_such_function();"
    )
    with pytest.raises(MigrationError, match=f"migration {schema}:0002_broken.sql failed") as caught:
        await migrations.migrate(settings.database_url, schema=schema, service_migrations=folder)

    assert "no_such_function" in str(caught.value)
    assert isinstance(caught.value.__cause__, asyncpg.PostgresError)
    assert not await table_exists(conn, schema, "half_done")
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.cases") == 0
    assert await recorded(conn, schema) == before

    (folder / "0002_broken.sql").write_text("CREATE TABLE half_done (id int);")  # fixed before it ever applied
    assert await migrations.migrate(settings.database_url, schema=schema, service_migrations=folder) == [
        f"{schema}:0002_broken.sql"
    ]


async def test_a_bad_schema_name_is_refused(settings):
    with pytest.raises(ValueError, match="schema name"):
        await migrations.migrate(settings.database_url, schema="bad; DROP SCHEMA public")


async def test_concurrent_migrations_of_one_fresh_schema_apply_each_file_exactly_once(settings, conn, folder):
    schema = settings.schema
    (folder / "0001_cases.sql").write_text("CREATE TABLE cases (id text PRIMARY KEY);")
    (folder / "0002_seed.sql").write_text("INSERT INTO cases (id) VALUES ('seed');")
    lock_key = f"migrations:{schema}"

    # Hold the migration lock so both replicas are provably waiting on it before either runs.
    holder = await asyncpg.connect(settings.database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtext($1))", lock_key)
        replicas = [
            asyncio.create_task(migrations.migrate(settings.database_url, schema=schema, service_migrations=folder))
            for _ in range(2)
        ]

        async def both_waiting() -> bool:
            return (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objid::bigint = (hashtext($1)::bigint & 4294967295)",
                    lock_key,
                )
                == 2
            )

        await eventually(both_waiting, timeout=10)
        await holder.execute("SELECT pg_advisory_unlock(hashtext($1))", lock_key)
        results = await asyncio.gather(*replicas)
    finally:
        await holder.close()

    everything = [*KIT_VERSIONS, f"{schema}:0001_cases.sql", f"{schema}:0002_seed.sql"]
    assert sorted(results, key=len) == [[], everything]
    assert set(await recorded(conn, schema)) == set(everything)
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.cases") == 1
