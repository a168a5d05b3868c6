"""The consumer harness over a real faust agent, Tansu and Postgres."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from google.protobuf.wrappers_pb2 import StringValue

from services.common import cloudevents, deadletter, migrations, outbox
from services.common.consumer import ConsumerHarness, Incoming, Subscription, each
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
    await conn.execute("INSERT INTO effects VALUES ($1, $2)", "/".join(incoming.identity), incoming.message.value)


def encoded(text: str, *, source: str = "test", **kwargs) -> tuple[list, bytes, str]:
    return cloudevents.encode(StringValue(value=text), source=source, **kwargs)


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
        subscriptions=[Subscription(topic=topic, types=TYPES, handler=each(record_effect))],
    )
    app = make_faust_app(settings, group=settings.service_name, datadir=tmp_path)
    harness.attach(app, batch_size=10)
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


def raw(topic: str, offset: int, text: str, ce_id: str, source: str = "test") -> RawRecord:
    headers, value, _ = encoded(text, id=ce_id, source=source)
    return RawRecord(topic=topic, partition=0, offset=offset, key=b"c1", value=value, headers=tuple(headers))


async def test_the_same_record_delivered_twice_has_one_effect(db, settings, metrics):
    await create_effects(db)
    harness = ConsumerHarness(
        db=db,
        group=settings.service_name,
        metrics=metrics,
        subscriptions=[Subscription(topic="t", types=TYPES, handler=each(record_effect))],
    )
    first = raw("t", 0, "once", "ce-1")
    await harness.process_batch("t", [first, raw("t", 1, "once", "ce-1")])  # twice in one batch
    await harness.process_batch("t", [raw("t", 0, "once", "ce-1")])  # and again after a "rebalance"
    assert await effects(db) == ["once"]
    assert (
        metrics.registry.get_sample_value("recovery_records_consumed_total", {"topic": "t", "outcome": "duplicate"})
        == 2
    )


async def test_equal_ids_from_two_sources_are_two_events_and_a_resent_one_is_a_duplicate(db, settings, metrics):
    await create_effects(db)
    harness = harness_for(db, settings, metrics, SetHandler())
    billing, warehouse = raw("t", 0, "billing-a1", "a1", "billing"), raw("t", 1, "warehouse-a1", "a1", "warehouse")
    await harness.process_batch("t", [billing, warehouse, raw("t", 2, "billing-a1", "a1", "billing")])
    await harness.process_batch("t", [raw("t", 3, "warehouse-a1", "a1", "warehouse")])
    assert await effects(db) == ["billing-a1", "warehouse-a1"]
    assert (outcome(metrics, "processed"), outcome(metrics, "duplicate")) == (2, 2)


async def test_an_inbox_row_kept_from_before_sources_still_covers_its_id(db, settings, metrics):
    # What migration 0002 leaves of a row processed before the inbox knew sources: its id, with no source.
    await create_effects(db)
    await db.pool.execute(
        "INSERT INTO inbox (consumer, ce_source, ce_id, topic) VALUES ($1, '', 'old-1', 't')", settings.service_name
    )
    harness = harness_for(db, settings, metrics, SetHandler())
    await harness.process_batch("t", [raw("t", 0, "again", "old-1", "billing"), raw("t", 1, "new", "new-1")])
    assert await effects(db) == ["new"]
    assert outcome(metrics, "duplicate") == 1


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
            subscriptions=[Subscription(topic="t", types=TYPES, handler=each(handler))],
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


# ------------------------------------------------------------------------------------ the set-based path


class SetHandler:
    """A set-based handler: one multi-row insert per batch; records its calls; refuses 'invalid'."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(self, uow, records) -> None:
        values = [incoming.message.value for incoming in records]
        self.calls.append(values)
        if "invalid" in values:
            raise InvalidInput.of(FieldViolation("value", "must not be 'invalid'"))
        await uow.conn.executemany(
            "INSERT INTO effects VALUES ($1, $2)", [("/".join(i.identity), i.message.value) for i in records]
        )
        uow.stage(*(outbox.event_record("out", i.message, key=i.customer_id, source="test") for i in records))


def harness_for(db, settings, metrics, handler) -> ConsumerHarness:
    return ConsumerHarness(
        db=db,
        group=settings.service_name,
        metrics=metrics,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.1,
        subscriptions=[Subscription(topic="t", types=TYPES, handler=handler)],
    )


def outcome(metrics, name: str) -> float:
    return metrics.registry.get_sample_value("recovery_records_consumed_total", {"topic": "t", "outcome": name}) or 0


async def staged_values(db: Database) -> list[str]:
    rows = await db.pool.fetch("SELECT value FROM outbox WHERE topic = 'out' ORDER BY id")
    return [StringValue.FromString(r["value"]).value for r in rows]


async def test_a_batch_is_one_handler_call_with_duplicates_inside_it_claimed_once(db, settings, metrics):
    await create_effects(db)
    handler = SetHandler()
    harness = harness_for(db, settings, metrics, handler)
    batch = [raw("t", 0, "a", "ce-a"), raw("t", 1, "b", "ce-b"), raw("t", 2, "a", "ce-a"), raw("t", 3, "c", "ce-c")]
    await harness.process_batch("t", batch)
    assert handler.calls == [["a", "b", "c"]]  # one call, the repeated id left out
    assert await effects(db) == ["a", "b", "c"]
    assert await staged_values(db) == ["a", "b", "c"]  # staged in one statement, in record order
    assert (outcome(metrics, "processed"), outcome(metrics, "duplicate")) == (3, 1)


async def test_two_records_of_one_customer_in_one_batch_keep_their_order(db, settings, metrics):
    await create_effects(db)
    harness = harness_for(db, settings, metrics, SetHandler())
    batch = [raw("t", i, text, f"ce-{text}") for i, text in enumerate(["first", "second", "third"])]
    await harness.process_batch("t", batch)
    assert await staged_values(db) == ["first", "second", "third"]


async def test_a_poison_record_in_the_middle_of_a_batch_is_deadlettered_alone(db, settings, metrics):
    await create_effects(db)
    handler = SetHandler()
    harness = harness_for(db, settings, metrics, handler)
    garbage = RawRecord(topic="t", partition=0, offset=1, key=b"c1", value=b"\xff\xff", headers=())
    batch = [raw("t", 0, "a", "ce-a"), garbage, raw("t", 2, "invalid", "ce-i"), raw("t", 3, "c", "ce-c")]
    await harness.process_batch("t", batch)
    # The undecodable record never reaches the handler; the invalid one fails the set, so the batch is
    # redone one record at a time and only that record is dead-lettered.
    assert handler.calls == [["a", "invalid", "c"], ["a"], ["invalid"], ["c"]]
    assert await effects(db) == ["a", "c"]
    dead = await db.pool.fetch("SELECT ce_id FROM outbox WHERE topic = $1 ORDER BY id", deadletter.DEADLETTER_TOPIC)
    assert len(dead) == 2 and dead[1]["ce_id"] == "ce-i"
    assert (outcome(metrics, "processed"), outcome(metrics, "deadlettered")) == (2, 2)
    # A dead-lettered record is not in the inbox: replayed after a fix, it is processed.
    assert await db.pool.fetchval("SELECT count(*) FROM inbox WHERE ce_id = 'ce-i'") == 0


async def test_a_batch_that_fails_mid_way_on_a_transient_error_is_retried_whole(db, settings, metrics):
    await create_effects(db)
    calls = {"n": 0}

    async def flaky(uow, records) -> None:
        await uow.conn.executemany(
            "INSERT INTO effects VALUES ($1, $2)", [(i.event.id, i.message.value) for i in records[:1]]
        )
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionResetError("the database went away mid-batch")  # transient: retried, not isolated
        await uow.conn.executemany(
            "INSERT INTO effects VALUES ($1, $2)", [(i.event.id, i.message.value) for i in records[1:]]
        )

    harness = harness_for(db, settings, metrics, flaky)
    await harness.process_batch("t", [raw("t", i, v, f"ce-{v}") for i, v in enumerate(["a", "b", "c"])])
    assert calls["n"] == 2  # the whole batch again, in one call: the first attempt left nothing behind
    assert await effects(db) == ["a", "b", "c"]
    assert metrics.registry.get_sample_value("recovery_consumer_batch_retries_total", {"topic": "t"}) == 1
    assert outcome(metrics, "processed") == 3


async def test_after_commit_hooks_run_only_for_committed_records(db, settings, metrics):
    await create_effects(db)
    counted: list[str] = []

    async def handler(uow, records) -> None:
        for incoming in records:
            uow.after_commit(lambda v=incoming.message.value: counted.append(v))
        if any(i.message.value == "invalid" for i in records):
            raise InvalidInput.of(FieldViolation("value", "must not be 'invalid'"))

    harness = harness_for(db, settings, metrics, handler)
    await harness.process_batch("t", [raw("t", i, v, f"ce-{v}") for i, v in enumerate(["a", "invalid", "b"])])
    assert counted == ["a", "b"]  # not the rolled-back set attempt, not the dead-lettered record
