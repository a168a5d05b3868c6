"""Postgres access: one asyncpg pool per service, pinned to the service's own schema.

``Database.transaction()`` is the unit of work: it yields a connection inside a transaction that rolls
back unless the block finishes. ``is_transient`` tells a retryable outage from a real error, by
exception class and SQLSTATE class, never by message text.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

R = TypeVar("R")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# SQLSTATE classes that mean "try again later": connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources, operator intervention (admin shutdown).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means the database or network is unavailable for now, not that the work is wrong."""
    if isinstance(exc, asyncpg.exceptions.DataError):
        return False  # an argument asyncpg cannot encode (out of range): retrying changes nothing
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES


async def lock_keys(conn: asyncpg.Connection, namespace: str, keys: Iterable[str]) -> None:
    """Hold a lock per key of ``namespace`` until the transaction ends: one statement, one global order.

    Two transactions sharing keys then queue instead of deadlocking. Advisory locks are per database, so the
    schema is part of each lock: another service's locks on the same keys never make this one wait.
    """
    unique = sorted(set(keys))
    if unique:
        await conn.execute(
            """SELECT count(pg_advisory_xact_lock(h)) FROM (
                   SELECT DISTINCT hashtextextended(current_schema() || ':' || $1 || ':' || k, 0) AS h
                   FROM unnest($2::text[]) AS k ORDER BY h) AS ordered""",
            namespace,
            unique,
        )


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Return ``rows`` as ``width`` column lists: the arguments of one ``unnest($1::t[], $2::u[], ...)``.

    One statement over arrays writes a set in one execution; ``executemany`` executes its statement once per
    row (a round trip saved, but not the per-row planning and execution in the server).
    """
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def last_per_key(rows: Iterable[R], key: Callable[[R], Hashable]) -> list[R]:
    """Return ``rows`` keeping only the last row of each ``key(row)``, in the order of those last rows.

    A set-based UPDATE or upsert touches each target row once (two source rows for one target make an upsert
    fail and an UPDATE apply either), so a set writing one row twice keeps the last, as one-by-one writes would.
    """
    last: dict[Hashable, R] = {}
    for row in rows:
        k = key(row)
        last.pop(k, None)  # re-inserted: the order is that of the last writes
        last[k] = row
    return list(last.values())


def check_schema_name(schema: str) -> str:
    """Return ``schema`` if it is a safe unquoted identifier; raises ValueError otherwise."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


class PooledConnection(asyncpg.Connection):
    """A pooled connection that goes back to the pool without asyncpg's reset statement.

    Every borrower leaves the session as it found it: transactions are scoped by ``async with`` (asyncpg still
    rolls back one left open), and the outbox relay unlocks its session lock and stops listening before its
    connection goes back (or terminates it). The reset (unlock all, CLOSE ALL, UNLISTEN, RESET ALL) would be one
    more round trip for every unit of work.
    """

    def get_reset_query(self) -> str:
        return ""


class Database:
    """A connection pool whose connections see only ``schema`` (plus ``public`` for extensions)."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    @classmethod
    async def connect(cls, url: str, *, schema: str, min_size: int = 1, max_size: int = 10) -> Database:
        """Open a pool on ``url`` whose search_path is ``schema``; creates the schema if missing."""
        check_schema_name(schema)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        except asyncpg.UniqueViolationError:
            pass  # two replicas racing to create it; the other one won
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            server_settings={"search_path": schema, "application_name": schema},
            # A statement stuck on a dead server must fail, so the caller's retry loop can take over.
            command_timeout=60,
            connection_class=PooledConnection,
        )
        return cls(pool, schema)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """Yield a connection in a transaction; commits if the block returns, rolls back if it raises."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def ping(self, timeout: float = 2.0) -> bool:
        """True when the database answers ``SELECT 1`` within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                return await self.pool.fetchval("SELECT 1") == 1
        except Exception:
            return False

    def pool_usage(self) -> tuple[int, int]:
        """Return (connections open, connections checked out)."""
        size = self.pool.get_size()
        return size, size - self.pool.get_idle_size()

    async def close(self) -> None:
        """Close the pool, waiting for checked-out connections to come back."""
        await self.pool.close()
