"""The consumer harness over a real faust agent, Tansu and Postgres."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from services.common import cloudevents, deadletter, migrations
from services.common.consumer import ConsumerHarness, Incoming, Subscription
from services.common.db import Database
from services.common.deadletter import RawRecord
from services.common.embedded import EmbeddedPostgres
from services.common.errors import FieldViolation, InvalidInput
from services.common.kafka import ensure_topics, make_faust_app, make_producer
from services.common.outbox import OutboxRelay
from tests.conftest import postgres_datadir
from tests.integration.conftest import eventually, read_topic

pytestmark = pytest.mark.integration

TYPES = cloudevents.registry(StringValue)


async def create_effects(db: Database) -> None:
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE effects (ce_id text PRIMARY KEY, value text NOT NULL)")


async def record_effect(conn, incoming: Incoming) -> None:
    """The handler under test: refuses 'invalid', otherwise writes one row per event."""
    if incoming.message.value == "invalid":
        raise InvalidInput.of(FieldViolation("value", "must not be 'invalid'"))
    await conn.execute("INSERT INTO effects VALUES ($1, $2)", incoming.event.id, incoming.message.value)


def encoded(text: str, **kwargs) -> tuple[list, bytes, str]:
    return cloudevents.encode(StringValue(value=text), source="test", **kwargs)


async def effects(db: Database) -> list[str]:
    return [r["value"] for r in await db.pool.fetch("SELECT value FROM effects ORDER BY value")]


async def test_bad_records_are_deadlettered_with_reasons_and_the_consumer_carries_on(
    db, settings, topic, metrics, producer, tmp_path
):
    await create_effects(db)
    await ensure_topics(settings, [deadletter.DEADLETTER_TOPIC])
    harness = ConsumerHarness(
        db=db,
        group=settings.service_name,
        metrics=metrics,
        subscriptions=[Subscription(topic=topic, types=TYPES, handler=record_effect)],
    )
    app = make_faust_app(settings, group=settings.service_name, datadir=tmp_path)
    harness.attach(app, batch_size=10, batch_window_seconds=0.2)
    relay_producer = make_producer(settings)
    await relay_producer.start()
    relay = OutboxRelay(db=db, producer=relay_producer, metrics=metrics)
    relay_task = asyncio.create_task(relay.run())
    await app.start()
    try:
        good_headers, good_one, _ = encoded("one")
        unknown_headers = [(k, b"recovery.events.v1.NoSuchEvent" if k == "ce_type" else v) for k, v in good_headers]
        invalid_headers, invalid_value, _ = encoded("invalid")
        headers_two, good_two, _ = encoded("two")
        key = b"customer-7"  # one key: one partition, so order is what we sent
        for value, headers in [
            (b"\x00\xffnot an event", []),  # garbage, no CloudEvents headers at all
            (b"\xff" * 12, encoded("x")[0]),  # valid headers, body is not protobuf
            (good_one, good_headers),
            (good_one, unknown_headers),  # a ce_type this topic does not carry
            (invalid_value, invalid_headers),  # decodes, fails validation
            (good_two, headers_two),
        ]:
            await producer.send_and_wait(topic, value, key=key, headers=headers)

        assert await eventually(lambda: _has(db, ["one", "two"]), timeout=30)
        dead = await read_topic(
            settings.kafka_bootstrap_servers,
            deadletter.DEADLETTER_TOPIC,
            until=lambda rs: len([r for r in rs if _from(r, topic)]) >= 4,
            settle=0.5,
        )
    finally:
        await harness.drain()
        await app.stop()
        relay_task.cancel()
        await relay.close()
        await relay_producer.stop()

    mine = [deadletter.describe(r.headers) | {"value": r.value} for r in dead if _from(r, topic)]
    assert [d["dlq_error_class"] for d in mine] == [
        "UndecodableRecord",
        "UndecodableRecord",
        "UndecodableRecord",
        "InvalidInput",
    ]
    reasons = [d["dlq_reason"] for d in mine]
    assert "missing header ce_specversion" in reasons[0]
    assert "does not decode" in reasons[1]
    assert "unexpected ce_type 'recovery.events.v1.NoSuchEvent'" in reasons[2]
    assert "value: must not be 'invalid'" in reasons[3]
    assert mine[0]["value"] == b"\x00\xffnot an event"  # the original bytes, untouched
    # Everything on the partition was processed (dead letters count as processed): no lag left.
    partition = mine[0]["dlq_original_partition"]
    assert metrics.registry.get_sample_value("recovery_consumer_lag", {"topic": topic, "partition": partition}) == 0
    assert {d["dlq_consumer_group"] for d in mine} == {settings.service_name}
    assert all(d["dlq_original_partition"].isdigit() and d["dlq_original_offset"].isdigit() for d in mine)
    assert await effects(db) == ["one", "two"]  # nothing of the bad records was written
    assert (
        metrics.registry.get_sample_value(
            "recovery_records_consumed_total", {"topic": topic, "outcome": "deadlettered"}
        )
        == 4
    )


def _from(record, topic: str) -> bool:
    return dict(record.headers).get(deadletter.ORIGINAL_TOPIC) == topic.encode()


async def _has(db: Database, values: list[str]) -> bool:
    return await effects(db) == values


def raw(topic: str, offset: int, text: str, ce_id: str) -> RawRecord:
    headers, value, _ = encoded(text, id=ce_id)
    return RawRecord(topic=topic, partition=0, offset=offset, key=b"c1", value=value, headers=tuple(headers))


async def test_the_same_record_delivered_twice_has_one_effect(db, settings, metrics):
    await create_effects(db)
    harness = ConsumerHarness(
        db=db,
        group=settings.service_name,
        metrics=metrics,
        subscriptions=[Subscription(topic="t", types=TYPES, handler=record_effect)],
    )
    first = raw("t", 0, "once", "ce-1")
    await harness.process_batch("t", [first, raw("t", 1, "once", "ce-1")])  # twice in one batch
    await harness.process_batch("t", [raw("t", 0, "once", "ce-1")])  # and again after a "rebalance"
    assert await effects(db) == ["once"]
    assert (
        metrics.registry.get_sample_value("recovery_records_consumed_total", {"topic": "t", "outcome": "duplicate"})
        == 2
    )


async def test_a_database_outage_during_a_batch_is_retried_after_it_returns_nothing_skipped(settings, metrics):
    postgres = EmbeddedPostgres(postgres_datadir())  # durable: it is crashed on purpose
    url = postgres.start()
    try:
        await migrations.migrate(url, schema="outage")
        db = await Database.connect(url, schema="outage", max_size=2)
        await create_effects(db)
        outage = {"done": False}

        async def handler(conn, incoming: Incoming) -> None:
            if incoming.message.value == "b" and not outage["done"]:
                outage["done"] = True
                # The server dies in the middle of the batch and comes back a little later.
                await asyncio.to_thread(postgres.stop, "immediate")
                asyncio.get_running_loop().call_later(
                    1.0, lambda: asyncio.ensure_future(asyncio.to_thread(postgres.start))
                )
            await record_effect(conn, incoming)

        harness = ConsumerHarness(
            db=db,
            group="outage",
            metrics=metrics,
            retry_initial_seconds=0.2,
            retry_max_seconds=0.5,
            subscriptions=[Subscription(topic="t", types=TYPES, handler=handler)],
        )
        batch = [raw("t", i, text, f"ce-{text}") for i, text in enumerate(["a", "b", "c"])]
        async with asyncio.timeout(60):
            await harness.process_batch("t", batch)
        assert await effects(db) == ["a", "b", "c"]
        assert metrics.registry.get_sample_value("recovery_consumer_batch_retries_total", {"topic": "t"}) >= 1
        assert (
            metrics.registry.get_sample_value("recovery_records_consumed_total", {"topic": "t", "outcome": "processed"})
            == 3
        )
        await db.close()
    finally:
        postgres.stop()
        shutil.rmtree(postgres.datadir.parent, ignore_errors=True)
