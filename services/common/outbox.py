"""Transactional outbox: events are rows written with the state change, published after commit.

``stage()`` runs inside the caller's transaction. ``OutboxRelay`` publishes committed rows with
aiokafka (``acks=all``) in id order and marks them sent. A crash between publish and mark publishes the
row again with the same ``ce_id`` (consumers dedupe on it); a row is never dropped.

Per-key order: ``stage()`` takes a transaction-scoped advisory lock on the record key, so two
transactions staging events for the same key commit one after the other and their rows get ids in
commit order. Only one relay per schema publishes at a time (a session advisory lock), so id order is
publish order; other replicas stand by and take over if it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from google.protobuf.message import Message

from services.common import cloudevents, tracing
from services.common.db import Database, is_transient
from services.common.metrics import KitMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingRecord:
    """A Kafka record to publish: topic, key, value, headers and its CloudEvents id."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    ce_id: str


def event_record(
    topic: str,
    message: Message,
    *,
    key: str,
    source: str,
    ce_id: str | None = None,
    time: datetime | None = None,
    content_type: str = cloudevents.PROTOBUF,
) -> OutgoingRecord:
    """Return the record for ``message`` on ``topic``, keyed by ``key`` (the customer id)."""
    headers, value, event_id = cloudevents.encode(
        message, source=source, id=ce_id, time=time, content_type=content_type
    )
    return OutgoingRecord(topic=topic, key=key.encode(), value=value, headers=tuple(headers), ce_id=event_id)


NOTIFY_CHANNEL = "outbox"  # suffixed with the schema: each service's relay hears its own outbox only


async def stage(conn: asyncpg.Connection, record: OutgoingRecord) -> None:
    """Write ``record`` to the outbox in the caller's transaction (published only if it commits)."""
    await stage_many(conn, [record])


async def stage_many(conn: asyncpg.Connection, records: Sequence[OutgoingRecord]) -> None:
    """Write ``records`` to the outbox in the caller's transaction, in order, in one statement whatever their number.

    Before a row is inserted the statement serialises transactions per key, so outbox ids follow commit order
    for each key (the locks are taken in one global order, so two transactions sharing keys queue instead of
    deadlocking; the schema is part of the lock key, since each service's outbox orders only its own rows),
    and it queues a NOTIFY that Postgres delivers on commit: the relay publishes at once instead of at its
    next poll. Headers travel as two flat arrays; each record takes its slice of them, trace context included.
    """
    if not records:
        return
    lock_keys = sorted({record.key for record in records if record.key is not None})
    header_keys: list[str] = []
    header_values: list[bytes] = []
    firsts: list[int] = []
    lasts: list[int] = []
    for record in records:
        headers = tracing.staged_headers(record.key, record.headers)  # the trace it was caused in goes along
        firsts.append(len(header_keys) + 1)  # Postgres arrays count from 1; an empty slice is [n+1:n]
        header_keys.extend(k for k, _ in headers)
        header_values.extend(v for _, v in headers)
        lasts.append(len(header_keys))
    await conn.execute(
        """WITH locked AS MATERIALIZED (
               SELECT pg_notify($1 || ':' || current_schema(), '') AS notified,
                      (SELECT count(pg_advisory_xact_lock(h)) FROM (
                           SELECT DISTINCT
                                  hashtextextended(current_schema() || ':outbox-key:' || encode(k, 'hex'), 0) AS h
                           FROM unnest($2::bytea[]) AS k ORDER BY h) AS ordered) AS locks)
           INSERT INTO outbox (topic, key, value, header_keys, header_values, ce_id)
           SELECT r.topic, r.key, r.value, ($9::text[])[r.first:r.last], ($10::bytea[])[r.first:r.last], r.ce_id
           FROM locked,
                unnest($3::text[], $4::bytea[], $5::bytea[], $6::int[], $7::int[], $8::text[])
                    WITH ORDINALITY AS r(topic, key, value, first, last, ce_id, ord)
           WHERE locked.locks >= 0  -- the locks are taken before any row (and its id) is made
           ORDER BY r.ord""",
        NOTIFY_CHANNEL,
        lock_keys,
        [r.topic for r in records],
        [r.key for r in records],
        [r.value for r in records],
        firsts,
        lasts,
        [r.ce_id for r in records],
        header_keys,
        header_values,
    )


class OutboxRelay:
    """Publishes committed outbox rows to Kafka and marks them sent; one active relay per schema."""

    def __init__(
        self,
        *,
        db: Database,
        producer,
        metrics: KitMetrics,
        batch_size: int = 500,
        poll_seconds: float = 0.05,
        retry_max_seconds: float = 10.0,
        retention_seconds: float = 3600.0,
    ) -> None:
        self._db = db
        self._producer = producer
        self._metrics = metrics
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._retry_max_seconds = retry_max_seconds
        self._retention_seconds = retention_seconds
        self._lock_conn: asyncpg.Connection | None = None
        self._lock_key = f"outbox-relay:{db.schema}"
        self._last_prune = 0.0
        # Set by a NOTIFY from a committed stage(): the next round starts at once. The poll stays as the
        # safety net (a notification is lost while the lock connection is down).
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Publish until cancelled; transient failures back off and retry, nothing is skipped."""
        delay = self._poll_seconds
        while True:
            try:
                self._wake.clear()  # before reading: a commit during the round wakes the next one
                published = await self.publish_once()
                delay = self._poll_seconds
                if published == 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_seconds):
                            await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep going whatever happened: a relay that dies silently loses nothing but stalls everything.
                log.warning(
                    "outbox relay round failed (%s: %s); retrying in %.2fs",
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=not is_transient(exc),
                )
                await self._release_lock()
                await asyncio.sleep(delay)
                delay = min(delay * 2 or 0.05, self._retry_max_seconds)

    async def publish_once(self) -> int:
        """Publish one batch of unsent rows in id order; returns how many were marked sent."""
        if not await self._hold_lock():
            return 0
        rows = await self._db.pool.fetch(
            """SELECT id, topic, key, value, header_keys, header_values
               FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1""",
            self._batch_size,
        )
        if rows:
            await self._publish(rows)
        await self._observe_backlog()
        return len(rows)

    async def _publish(self, rows: list[asyncpg.Record]) -> None:
        spans: list[tracing.Span] = []
        try:
            futures = []
            for row in rows:
                # The publish span continues the trace the row was staged in; the record names it as the parent.
                headers = tuple(zip(row["header_keys"], row["header_values"], strict=True))
                span, headers = tracing.publish_span(row["topic"], headers)
                spans.append(span)
                futures.append(
                    await self._producer.send(row["topic"], value=row["value"], key=row["key"], headers=list(headers))
                )
            results = await asyncio.gather(*futures, return_exceptions=True)
        except BaseException as exc:
            for span in spans:
                tracing.end(span, error=exc)
            raise
        for span, result in zip(spans, results, strict=True):
            tracing.end(span, error=result if isinstance(result, BaseException) else None)
        # Mark only the prefix that succeeded: a row after a failed one is re-sent (a duplicate with the
        # same ce_id) rather than letting it overtake the failed row.
        sent_ids: list[int] = []
        failure: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                failure = result
                break
            sent_ids.append(row["id"])
            self._metrics.outbox_published.labels(topic=row["topic"]).inc()
        if sent_ids:
            await self._mark_sent(sent_ids)
        if failure is not None:
            raise failure

    async def _mark_sent(self, ids: list[int]) -> None:
        await self._db.pool.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", ids)

    async def _observe_backlog(self) -> None:
        backlog, oldest = await self._db.pool.fetchrow(
            """SELECT count(*), extract(epoch FROM clock_timestamp() - min(created_at))
               FROM outbox WHERE sent_at IS NULL"""
        )
        self._metrics.outbox_backlog.set(backlog)
        self._metrics.outbox_oldest_age.set(float(oldest or 0))
        now = time.monotonic()
        if now - self._last_prune > 60:
            self._last_prune = now
            await self._db.pool.execute(
                "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)",
                self._retention_seconds,
            )

    async def flush(self, timeout: float = 10.0) -> bool:
        """Publish until the outbox is empty or ``timeout`` passes; True when empty (used at shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.publish_once() == 0 and await self.backlog() == 0:
                    return True
            except Exception as exc:
                log.warning("outbox flush round failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(0.1)
        return False

    async def backlog(self) -> int:
        """Return how many committed rows are not yet published."""
        return await self._db.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")

    async def _hold_lock(self) -> bool:
        if self._lock_conn is not None and _alive(self._lock_conn):
            return True
        await self._release_lock()  # a lock connection that died took the lock with it: take it again
        conn = await self._db.pool.acquire()
        try:
            locked = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self._lock_key)
        except BaseException:
            # Cancelled (a shutdown right after start) or failed mid-query: the connection must go back,
            # or closing the pool waits for it forever. Terminating it also drops a lock just taken.
            conn.terminate()
            await self._db.pool.release(conn)
            raise
        if locked:
            self._lock_conn = conn
            await conn.add_listener(f"{NOTIFY_CHANNEL}:{self._db.schema}", self._notified)
            return True
        await self._db.pool.release(conn)
        return False

    def _notified(self, *_args) -> None:
        self._wake.set()

    async def _release_lock(self) -> None:
        """Give the lock and its connection back; never raises (the relay loop calls it after any failure)."""
        conn, self._lock_conn = self._lock_conn, None
        if conn is None:
            return
        try:
            if _alive(conn):
                await conn.remove_listener(f"{NOTIFY_CHANNEL}:{self._db.schema}", self._notified)
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", self._lock_key)
            await self._db.pool.release(conn)
        except Exception:  # the connection is gone, and the lock with it
            with contextlib.suppress(Exception):  # a connection the pool already took back refuses even this
                conn.terminate()

    async def close(self) -> None:
        """Give up the relay lock so a standby replica can take over at once."""
        await self._release_lock()


def _alive(conn: asyncpg.Connection) -> bool:
    """True while ``conn`` is usable. When the server drops a pooled connection, asyncpg takes it back into
    the pool and the proxy we hold refuses every call, even is_closed(): that is dead too, not an error."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False
