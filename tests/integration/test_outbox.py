"""Outbox: only committed events are published, with their ce_id; a crash re-publishes, never loses."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from google.protobuf.wrappers_pb2 import StringValue

from services.common import outbox
from services.common.kafka import make_producer
from services.common.outbox import OutboxRelay
from tests.integration.conftest import eventually, read_topic

pytestmark = pytest.mark.integration


def record(topic: str, text: str, key: str = "customer-1") -> outbox.OutgoingRecord:
    return outbox.event_record(topic, StringValue(value=text), key=key, source="test")


@pytest.fixture
async def relay_producer(settings):
    producer = make_producer(settings)
    await producer.start()
    yield producer
    await producer.stop()


async def drain(relay: OutboxRelay) -> None:
    while await relay.publish_once():
        pass


async def test_rolled_back_transaction_publishes_nothing_committed_publishes_its_events(
    db, topic, settings, metrics, relay_producer
):
    committed = [record(topic, "a"), record(topic, "b")]
    async with db.transaction() as conn:
        for r in committed:
            await outbox.stage(conn, r)
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await outbox.stage(conn, record(topic, "rolled back"))
            raise RuntimeError("abort the transaction")

    relay = OutboxRelay(db=db, producer=relay_producer, metrics=metrics)
    assert await relay.backlog() == 2
    await drain(relay)

    published = await read_topic(settings.kafka_bootstrap_servers, topic, until=lambda rs: len(rs) >= 2, settle=1.0)
    ce_ids = [dict(m.headers)["ce_id"].decode() for m in published]
    assert sorted(ce_ids) == sorted(r.ce_id for r in committed)
    assert [StringValue.FromString(m.value).value for m in published] == ["a", "b"]  # same key: in order
    assert await relay.backlog() == 0
    assert metrics.registry.get_sample_value("recovery_outbox_backlog") == 0
    await relay.close()


class CrashAfterPublish(OutboxRelay):
    """A relay that dies after Kafka acknowledged the records but before it marked them sent."""

    async def _mark_sent(self, ids):
        raise ConnectionResetError("relay killed between publish and mark")


async def test_crash_between_publish_and_mark_duplicates_with_same_ce_id_never_loses(
    db, topic, settings, metrics, relay_producer
):
    staged = record(topic, "only once in the database")
    async with db.transaction() as conn:
        await outbox.stage(conn, staged)

    crashing = CrashAfterPublish(db=db, producer=relay_producer, metrics=metrics)
    with pytest.raises(ConnectionResetError):
        await crashing.publish_once()
    await crashing.close()
    assert await crashing.backlog() == 1  # still unsent as far as the database knows

    restarted = OutboxRelay(db=db, producer=relay_producer, metrics=metrics)
    await drain(restarted)
    assert await restarted.backlog() == 0

    published = await read_topic(settings.kafka_bootstrap_servers, topic, until=lambda rs: len(rs) >= 2, settle=1.0)
    assert len(published) == 2
    assert {dict(m.headers)["ce_id"].decode() for m in published} == {staged.ce_id}
    await restarted.close()


async def test_only_one_relay_publishes_at_a_time(db, topic, metrics, relay_producer):
    async with db.transaction() as conn:
        await outbox.stage(conn, record(topic, "x"))
    first = OutboxRelay(db=db, producer=relay_producer, metrics=metrics)
    second = OutboxRelay(db=db, producer=relay_producer, metrics=metrics)
    assert await first.publish_once() == 1
    async with db.transaction() as conn:
        await outbox.stage(conn, record(topic, "y"))
    assert await second.publish_once() == 0  # standby while the first holds the relay lock
    await first.close()
    assert await second.publish_once() == 1  # takes over once the first lets go
    await second.close()


async def test_backlog_metrics_report_unsent_rows_and_their_age(db, topic, metrics, relay_producer):
    async with db.transaction() as conn:
        await outbox.stage(conn, record(topic, "waiting"))
    relay = OutboxRelay(db=db, producer=relay_producer, metrics=metrics, batch_size=1)
    await relay._observe_backlog()
    assert metrics.registry.get_sample_value("recovery_outbox_backlog") == 1
    assert metrics.registry.get_sample_value("recovery_outbox_oldest_unsent_age_seconds") > 0
    await drain(relay)
    assert metrics.registry.get_sample_value("recovery_outbox_oldest_unsent_age_seconds") == 0
    await relay.close()


async def test_a_relay_whose_lock_connection_the_server_dropped_takes_the_lock_again_and_keeps_publishing(
    db, topic, settings, metrics, relay_producer
):
    async with db.transaction() as conn:
        await outbox.stage(conn, record(topic, "before"))
    relay = OutboxRelay(db=db, producer=relay_producer, metrics=metrics, poll_seconds=0.05)
    running = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _backlog_is(relay, 0))
        # The server drops the lock connection (a Postgres restart, an admin's pg_terminate_backend): asyncpg
        # takes it back into the pool, and the proxy the relay holds refuses every call from then on.
        killer = await asyncpg.connect(settings.database_url)
        try:
            dropped = await killer.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()) AS t"
            )
        finally:
            await killer.close()
        assert dropped >= 1
        async with db.transaction() as conn:
            await outbox.stage(conn, record(topic, "after"))
        await eventually(lambda: _backlog_is(relay, 0))
        assert not running.done(), "the relay loop died"
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await relay.close()
    published = await read_topic(settings.kafka_bootstrap_servers, topic, until=lambda rs: len(rs) >= 2)
    assert [StringValue.FromString(m.value).value for m in published][-1] == "after"


async def _backlog_is(relay: OutboxRelay, expected: int) -> bool:
    return await relay.backlog() == expected


async def test_a_commit_wakes_the_relay_at_once_instead_of_at_its_next_poll(
    db, topic, settings, metrics, relay_producer
):
    relay = OutboxRelay(db=db, producer=relay_producer, metrics=metrics, poll_seconds=300)
    task = asyncio.create_task(relay.run())
    try:
        assert await eventually(lambda: _holds_lock(relay), timeout=30)  # its first (empty) round is done
        async with db.transaction() as conn:
            await outbox.stage(conn, record(topic, "woken"))
        # With a five-minute poll, the record can only be out within the minute if the commit woke the relay.
        published = await read_topic(settings.kafka_bootstrap_servers, topic, until=lambda rs: len(rs) >= 1, timeout=60)
        assert [StringValue.FromString(m.value).value for m in published] == ["woken"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await relay.close()


async def _holds_lock(relay: OutboxRelay) -> bool:
    return relay._lock_conn is not None  # it listens for commits from the moment it holds the lock
