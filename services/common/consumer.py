"""The consumer harness: faust agents that never lose a record and never apply one twice.

One agent per input topic, ``concurrency=1``, batches from ``stream.noack_take()``. Each batch runs in
one transaction; each record inside it in a savepoint, so a bad record is rolled back alone and
replaced by a dead-letter row in the outbox while the rest of the batch commits. Records are acked only
after that commit, so a crash or a cancelled batch re-delivers them; the inbox makes the re-delivery a
no-op. Transient failures (database or broker unavailable) roll the batch back and retry it with
backoff, never moving past it. No exception escapes an agent: faust would ack the message and lose it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import faust
from faust.types import TP
from google.protobuf.message import Message

from services.common import cloudevents, inbox, outbox
from services.common.cloudevents import CloudEvent
from services.common.db import Database, is_transient
from services.common.deadletter import RawRecord, deadletter_record
from services.common.errors import UndecodableRecord
from services.common.logs import record_context
from services.common.metrics import KitMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """A decoded record handed to a handler: its CloudEvents attributes, message and raw form."""

    event: CloudEvent
    message: Message
    record: RawRecord

    @property
    def customer_id(self) -> str:
        return (self.record.key or b"").decode("utf-8", "replace")


Handler = Callable[[asyncpg.Connection, Incoming], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """One input topic: the message types it accepts and the handler that applies them."""

    topic: str
    types: Mapping[str, type[Message]]
    handler: Handler


def check_key(record: RawRecord, message: Message) -> None:
    """Raise UndecodableRecord when the record key is not the message's customer id (the topic contract)."""
    if "customer_id" not in message.DESCRIPTOR.fields_by_name:
        return
    key = (record.key or b"").decode("utf-8", "replace")
    customer_id = message.customer_id  # type: ignore[attr-defined]
    if not key:
        raise UndecodableRecord("record has no key (the key must be the customer_id)")
    if key != customer_id:
        raise UndecodableRecord(f"record key {key!r} is not the message's customer_id {customer_id!r}")


async def _lock_keys(conn: asyncpg.Connection, records: Sequence[RawRecord]) -> None:
    """Take a lock per record key (customer) for the batch, all in one global order, before any handler runs.

    Handlers lock rows and cases in record order; two batches of different topics sharing customers (a case
    opening and its offer) could then each wait for the other, and Postgres would abort one as a deadlock.
    Queued behind each other in the same order, they cannot.
    """
    keys = sorted({record.key.decode("utf-8", "replace") for record in records if record.key})
    if keys:
        await conn.execute(
            """SELECT pg_advisory_xact_lock(h) FROM (
                   SELECT DISTINCT hashtext('consumer-key:' || k) AS h FROM unnest($1::text[]) AS k ORDER BY h
               ) AS ordered""",
            keys,
        )


class ConsumerHarness:
    """Runs ``subscriptions`` as faust agents of consumer group ``group``."""

    def __init__(
        self,
        *,
        db: Database,
        group: str,
        subscriptions: Sequence[Subscription],
        metrics: KitMetrics,
        retry_initial_seconds: float = 0.1,
        retry_max_seconds: float = 10.0,
    ) -> None:
        self._db = db
        self._group = group
        self._subscriptions = {s.topic: s for s in subscriptions}
        self._metrics = metrics
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._stopping = False
        self._app: faust.App | None = None
        # Next offset to process per (topic, partition), advanced only after a batch commits.
        self._next_offsets: dict[tuple[str, int], int] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def attach(self, app: faust.App, *, batch_size: int, batch_window_seconds: float) -> None:
        """Declare one faust agent per subscription on ``app``."""
        self._app = app
        for topic_name in self._subscriptions:
            channel = app.topic(topic_name, key_type=bytes, value_type=bytes)
            app.agent(channel, name=f"{self._group}.{topic_name}", concurrency=1)(
                self._agent_for(topic_name, batch_size, batch_window_seconds)
            )

    def _agent_for(self, topic_name: str, batch_size: int, window: float):
        async def agent(stream):
            async for events in stream.noack_take(batch_size, within=window):
                if self._stopping:
                    # Shutting down: leave the batch unacked; the next owner of the partition gets it.
                    continue
                records = [_raw(event.message) for event in events]
                await self.process_batch(topic_name, records)
                for event in events:
                    await stream.ack(event)
                for record in records:
                    key = (record.topic, record.partition)
                    self._next_offsets[key] = max(self._next_offsets.get(key, 0), record.offset + 1)
                self.observe_lag()

        agent.__name__ = agent.__qualname__ = f"consume_{topic_name.replace('.', '_').replace('-', '_')}"
        return agent

    async def process_batch(self, topic_name: str, records: Sequence[RawRecord]) -> None:
        """Apply ``records`` in one transaction, retrying transient failures until it commits."""
        self._in_flight += 1
        self._idle.clear()
        try:
            delay = self._retry_initial
            while True:
                try:
                    with self._metrics.time_batch(topic_name):
                        outcomes = await self._apply(topic_name, records)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Transient or not, the batch is not skipped: a bug here must stall loudly, not lose data.
                    self._metrics.batch_retries.labels(topic=topic_name).inc()
                    log.warning(
                        "batch of %d on %s rolled back (%s: %s); retrying in %.2fs",
                        len(records),
                        topic_name,
                        type(exc).__name__,
                        exc,
                        delay,
                        exc_info=not is_transient(exc),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
            for outcome in outcomes:
                self._metrics.records_consumed.labels(topic=topic_name, outcome=outcome).inc()
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _apply(self, topic_name: str, records: Sequence[RawRecord]) -> list[str]:
        subscription = self._subscriptions[topic_name]
        outcomes = []
        async with self._db.transaction() as conn:
            await _lock_keys(conn, records)
            for record in records:
                outcomes.append(await self._apply_one(conn, subscription, record))
        return outcomes

    async def _apply_one(self, conn: asyncpg.Connection, subscription: Subscription, record: RawRecord) -> str:
        try:
            async with conn.transaction():  # a savepoint: a failing record is undone alone
                event, message = cloudevents.decode(record.headers, record.value, subscription.types)
                check_key(record, message)
                with record_context(ce_id=event.id, customer_id=record.key):
                    if not await inbox.claim(conn, consumer=self._group, ce_id=event.id, topic=record.topic):
                        return "duplicate"
                    await subscription.handler(conn, Incoming(event=event, message=message, record=record))
                return "processed"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise  # the whole batch rolls back and is retried
            await self._deadletter(conn, record, exc)
            return "deadlettered"

    async def _deadletter(self, conn: asyncpg.Connection, record: RawRecord, exc: Exception) -> None:
        level = logging.WARNING if isinstance(exc, UndecodableRecord) else logging.ERROR
        log.log(
            level,
            "dead-lettering %s[%d]@%d: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            type(exc).__name__,
            exc,
            exc_info=level == logging.ERROR,
        )
        await outbox.stage(conn, deadletter_record(record, group=self._group, error=exc))
        self._metrics.records_deadlettered.labels(topic=record.topic, error_class=type(exc).__name__).inc()

    def observe_lag(self) -> None:
        """Set each partition's lag: records on the broker this consumer has not committed an effect for yet."""
        if self._app is None:
            return
        consumer = self._app.consumer
        for (topic_name, partition), next_offset in self._next_offsets.items():
            try:
                highwater = consumer.highwater(TP(topic_name, partition))
            except Exception:  # not assigned (any more) or not fetched yet: nothing to say about it
                continue
            if highwater is not None:
                self._metrics.consumer_lag.labels(topic=topic_name, partition=str(partition)).set(
                    max(0, highwater - next_offset)
                )

    async def watch_lag(self, interval: float = 5.0) -> None:
        """Refresh the lag gauges until cancelled, so a stalled consumer's lag keeps growing where alerts see it."""
        while True:
            await asyncio.sleep(interval)
            self.observe_lag()

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop taking new batches and wait for the one in hand to commit (graceful shutdown)."""
        self._stopping = True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("consumer drain timed out; the unfinished batch will be re-delivered")


def _raw(message) -> RawRecord:
    headers = message.headers or ()
    if isinstance(headers, Mapping):
        headers = headers.items()
    return RawRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple((k, bytes(v) if v is not None else b"") for k, v in headers),
    )
