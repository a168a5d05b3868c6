"""Versioned SQL migrations: applied in order at start-up, recorded, never re-applied.

Each service has ``migrations/NNNN_name.sql``; the kit's own tables come first. A migration is
recorded under ``<source>:<file name>`` with a checksum, and an applied file that later changes is an
error (fix forward with a new file). Replicas starting together serialise on an advisory lock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.common.db import check_schema_name

KIT_MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class Migration:
    """One SQL file: its recorded version, text and checksum."""

    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """A migration failed or an applied one was edited afterwards."""


def discover(*sources: tuple[str, Path]) -> list[Migration]:
    """Return the migrations of each (source name, folder), in source order then file-name order."""
    found = []
    for source, folder in sources:
        for path in sorted(folder.glob("*.sql")):
            found.append(Migration(version=f"{source}:{path.name}", sql=path.read_text()))
    return found


async def apply(conn: asyncpg.Connection, *, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply the not-yet-applied ``migrations`` inside ``schema``; returns the versions applied now."""
    check_schema_name(schema)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrations:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text PRIMARY KEY,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{schema}: migration {migration.version} was changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{schema}: migration {migration.version} failed: {exc}") from exc
            await conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                migration.version,
                migration.checksum,
            )
            applied_now.append(migration.version)
    return applied_now


async def migrate(url: str, *, schema: str, service_migrations: Path | None = None) -> list[str]:
    """Connect to ``url`` and bring ``schema`` up to date with the kit's and the service's migrations."""
    sources = [("kit", KIT_MIGRATIONS)]
    if service_migrations is not None:
        sources.append((schema, service_migrations))
    conn = await asyncpg.connect(url)
    try:
        return await apply(conn, schema=schema, migrations=discover(*sources))
    finally:
        await conn.close()
