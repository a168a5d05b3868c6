"""The consumer harness: faust agents that handle records a set at a time, never losing or repeating one.

One agent per input topic, ``concurrency=1``. A batch is what is waiting on the topic's assigned
partitions, up to a count: at idle a single record goes at once, under load the batch grows by itself.
Each batch is one unit of work: decode and validate every record (pure; a bad one becomes a dead letter),
claim the inbox for the rest in one statement, and hand the fresh ones to the subscription's set-based
handler, which loads what it needs in a few queries and stages its events in one statement. When the
set-based path fails on something unexpected, the batch is rolled back and redone record by record, each in
a savepoint, so a bad record is dead-lettered alone and its neighbours commit. Records are acked only after
commit, so a crash or a cancelled batch re-delivers them; the inbox makes the re-delivery a no-op. Transient
failures (database or broker unavailable) roll the batch back and retry it with backoff, never moving past it.
No exception escapes an agent: faust would ack the message and lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
import faust
from faust.types import TP
from google.protobuf.message import Message

from services.common import cloudevents, inbox, tracing
from services.common.cloudevents import CloudEvent
from services.common.db import Database, is_transient, lock_keys
from services.common.deadletter import RawRecord, deadletter_record
from services.common.errors import UndecodableRecord
from services.common.logs import record_context
from services.common.metrics import KitMetrics
from services.common.unit_of_work import UnitOfWork, unit_of_work

log = logging.getLogger(__name__)
C = TypeVar("C")


@dataclass(frozen=True)
class Incoming:
    """A decoded record handed to a handler: its CloudEvents attributes, message and raw form."""

    event: CloudEvent
    message: Message
    record: RawRecord

    @property
    def customer_id(self) -> str:
        return (self.record.key or b"").decode("utf-8", "replace")

    @property
    def identity(self) -> inbox.Identity:
        """What makes the event unique: its source and id together (CloudEvents)."""
        return self.event.source, self.event.id


# A set-based handler applies the records it is given and returns those it refuses, each with the error
# that says why (bad input found against the state): they are dead-lettered in the same transaction.
Rejections = Sequence[tuple[Incoming, Exception]]
BatchHandler = Callable[[UnitOfWork, Sequence[Incoming]], Awaitable[Rejections | None]]
RecordHandler = Callable[[asyncpg.Connection, Incoming], Awaitable[None]]


def convert(
    records: Sequence[Incoming], to_command: Callable[[Incoming], C]
) -> tuple[list[tuple[Incoming, C]], list[tuple[Incoming, Exception]]]:
    """Turn each record into its command (pure): the records with their commands, and the ones refused with why."""
    converted: list[tuple[Incoming, C]] = []
    refused: list[tuple[Incoming, Exception]] = []
    for incoming in records:
        try:
            converted.append((incoming, to_command(incoming)))
        except Exception as exc:  # a pure conversion that fails is the record's fault
            refused.append((incoming, exc))
    return converted, refused


def each(handler: RecordHandler) -> BatchHandler:
    """Adapt a per-record handler to a batch: the records one after another, in order, on the batch's connection.

    For inputs too rare to be worth a set-based handler; a hot topic gets a handler that takes the set.
    """

    async def batch(uow: UnitOfWork, records: Sequence[Incoming]) -> None:
        # A record the handler refuses fails the set; the harness then isolates it in its own savepoint.
        for incoming in records:
            with record_context(ce_id=incoming.event.id, customer_id=incoming.record.key):
                await handler(uow.conn, incoming)

    batch.__name__ = getattr(handler, "__name__", "handler")
    return batch


@dataclass(frozen=True)
class Subscription:
    """One input topic: the message types it accepts and the set-based handler that applies them."""

    topic: str
    types: Mapping[str, type[Message]]
    handler: BatchHandler


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
    Queued behind each other in the same order, they cannot. Advisory locks are per database, so the schema is
    part of the key: another service's batch about the same customers must not wait for this one.
    """
    await lock_keys(conn, "consumer-key", (record.key.decode("utf-8", "replace") for record in records if record.key))


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

    def attach(self, app: faust.App, *, batch_size: int) -> None:
        """Declare one faust agent per subscription on ``app``."""
        self._app = app
        for topic_name in self._subscriptions:
            channel = app.topic(topic_name, key_type=bytes, value_type=bytes)
            app.agent(channel, name=f"{self._group}.{topic_name}", concurrency=1)(
                self._agent_for(topic_name, batch_size)
            )

    def _agent_for(self, topic_name: str, batch_size: int):
        async def agent(stream):
            async for events in _waiting_batches(stream, batch_size):
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
        """Apply ``records`` as one unit of work, retrying transient failures until it commits."""
        self._in_flight += 1
        self._idle.clear()
        try:
            subscription = self._subscriptions[topic_name]
            decoded, rejected = decode_batch(records, subscription.types)
            if timeless := sum(1 for incoming in decoded if incoming.event.time_from_receipt):
                self._metrics.records_timeless.labels(topic=topic_name).inc(timeless)
            traced = tracing.BatchTrace(topic=topic_name, group=self._group, records=records)
            try:
                with traced.staging():
                    await self._retry_until_committed(subscription, records, decoded, rejected, traced)
            finally:
                traced.end()
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _retry_until_committed(
        self,
        subscription: Subscription,
        records: Sequence[RawRecord],
        decoded: Sequence[Incoming],
        rejected: Sequence[tuple[RawRecord, Exception]],
        traced: tracing.BatchTrace,
    ) -> None:
        topic_name = subscription.topic
        delay = self._retry_initial
        while True:
            try:
                with self._metrics.time_batch(topic_name):
                    await self._apply(subscription, records, decoded, rejected)
                self._observe_age(topic_name, decoded)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Transient or not, the batch is not skipped: a bug here must stall loudly, not lose data.
                self._metrics.batch_retries.labels(topic=topic_name).inc()
                traced.span.add_event("rolled back", {"exception.type": type(exc).__name__})
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

    async def _apply(
        self,
        subscription: Subscription,
        records: Sequence[RawRecord],
        decoded: Sequence[Incoming],
        rejected: Sequence[tuple[RawRecord, Exception]],
    ) -> None:
        try:
            async with unit_of_work(self._db) as uow:
                await _lock_keys(uow.conn, records)
                self._stage_deadletters(uow, rejected)
                fresh = await self._claim(uow, subscription.topic, decoded)
                refused = list(await subscription.handler(uow, fresh) or ())
                if refused:
                    await inbox.release(uow.conn, consumer=self._group, events=[i.identity for i, _ in refused])
                    self._stage_deadletters(uow, [(incoming.record, exc) for incoming, exc in refused])
                self._count(
                    uow,
                    subscription.topic,
                    processed=len(fresh) - len(refused),
                    duplicate=len(decoded) - len(fresh),
                )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise  # the whole batch rolls back and is retried
            log.warning(
                "set-based handling of %d records on %s failed (%s: %s); redoing them one by one",
                len(records),
                subscription.topic,
                type(exc).__name__,
                exc,
            )
        await self._apply_one_by_one(subscription, records, decoded, rejected)

    async def _apply_one_by_one(
        self,
        subscription: Subscription,
        records: Sequence[RawRecord],
        decoded: Sequence[Incoming],
        rejected: Sequence[tuple[RawRecord, Exception]],
    ) -> None:
        """The fallback for one batch: each record in a savepoint, so a failing one is dead-lettered alone."""
        async with unit_of_work(self._db) as uow:
            await _lock_keys(uow.conn, records)
            self._stage_deadletters(uow, rejected)
            failed: list[tuple[RawRecord, Exception]] = []
            outcomes: Counter[str] = Counter()
            for incoming in decoded:
                try:
                    async with uow.savepoint():  # a failing record is undone alone
                        fresh = await self._claim(uow, subscription.topic, [incoming])
                        for _, exc in await subscription.handler(uow, fresh) or ():
                            raise exc
                    outcomes["processed" if fresh else "duplicate"] += 1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    failed.append((incoming.record, exc))
            self._stage_deadletters(uow, failed)
            self._count(uow, subscription.topic, **outcomes)

    async def _claim(self, uow: UnitOfWork, topic_name: str, decoded: Sequence[Incoming]) -> list[Incoming]:
        """Claim the inbox for ``decoded`` in one statement; returns the records to apply, first of each id."""
        claimed = await inbox.claim_many(
            uow.conn, consumer=self._group, events=[i.identity for i in decoded], topic=topic_name
        )
        fresh = []
        for incoming in decoded:
            if incoming.identity in claimed:
                claimed.discard(incoming.identity)  # a second record with the same identity in the batch: duplicate
                fresh.append(incoming)
        return fresh

    def _stage_deadletters(self, uow: UnitOfWork, failed: Sequence[tuple[RawRecord, Exception]]) -> None:
        for record, exc in failed:
            level = logging.WARNING if isinstance(exc, UndecodableRecord) else logging.ERROR
            log.log(
                level,
                "dead-lettering %s[%d]@%d: %s: %.2000s",  # a reason can quote a huge value: one line stays short
                record.topic,
                record.partition,
                record.offset,
                type(exc).__name__,
                exc,
                exc_info=(type(exc), exc, exc.__traceback__) if level == logging.ERROR else None,
            )
            uow.stage(deadletter_record(record, group=self._group, error=exc))
        classes = Counter((record.topic, type(exc).__name__) for record, exc in failed)

        def count() -> None:
            for (topic_name, error_class), n in classes.items():
                self._metrics.records_deadlettered.labels(topic=topic_name, error_class=error_class).inc(n)
                self._metrics.records_consumed.labels(topic=topic_name, outcome="deadlettered").inc(n)

        if classes:
            uow.after_commit(count)

    def _count(self, uow: UnitOfWork, topic_name: str, **outcomes: int) -> None:
        def count() -> None:
            for outcome, n in outcomes.items():
                if n:
                    self._metrics.records_consumed.labels(topic=topic_name, outcome=outcome).inc(n)

        uow.after_commit(count)

    def _observe_age(self, topic_name: str, decoded: Sequence[Incoming]) -> None:
        """Record how old the batch's events were when it committed (records without a time say nothing)."""
        now = datetime.now(UTC)
        for incoming in decoded:
            if not incoming.event.time_from_receipt:
                age = (now - incoming.event.time).total_seconds()
                self._metrics.event_age.labels(topic=topic_name).observe(max(0.0, age))

    def observe_lag(self) -> None:
        """Set each partition's lag: records on the broker this consumer has not committed an effect for yet.

        A partition no longer assigned (revoked: another replica has it now) loses its series: its last value
        would otherwise stay put and read as a stalled consumer.
        """
        if self._app is None:
            return
        consumer = self._app.consumer
        assigned = consumer.assignment()
        for (topic_name, partition), next_offset in list(self._next_offsets.items()):
            if TP(topic_name, partition) not in assigned:
                del self._next_offsets[(topic_name, partition)]
                with contextlib.suppress(KeyError):
                    self._metrics.consumer_lag.remove(topic_name, str(partition))
                continue
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


def decode_batch(
    records: Sequence[RawRecord], types: Mapping[str, type[Message]]
) -> tuple[list[Incoming], list[tuple[RawRecord, Exception]]]:
    """Decode and check every record (pure): the ones to apply, and the ones to dead-letter with their error."""
    decoded: list[Incoming] = []
    rejected: list[tuple[RawRecord, Exception]] = []
    for record in records:
        try:
            event, message = cloudevents.decode(record.headers, record.value, types)
            check_key(record, message)
        except Exception as exc:  # whatever a record makes the decoder raise is that record's fault
            rejected.append((record, exc))
            continue
        decoded.append(Incoming(event=event, message=message, record=record))
    return decoded, rejected


async def _waiting_batches(stream, max_: int):
    """Yield lists of events: what is waiting in the stream's queue, up to ``max_``, with no linger.

    At idle a record is handled the moment it arrives; under load the queue fills while a batch is being
    handled, so the next batch is larger by itself (natural batching: no timer trades latency for size).
    """
    batch = []
    channel = stream.channel
    async for event in stream.noack().events():
        batch.append(event)
        if len(batch) < max_ and not channel.empty():
            continue
        yield batch
        batch = []


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
