"""Per-test isolation on the shared stack: a random schema and random topic names for each test."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from services.common import migrations
from services.common.db import Database
from services.common.kafka import ensure_topics
from services.common.metrics import KitMetrics
from services.common.settings import KitSettings

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(stack) -> KitSettings:
    name = unique("test")
    return KitSettings(
        service_name=name,
        kafka_bootstrap_servers=stack.kafka,
        database_url=stack.database_url,
        topic_partitions=3,
        retry_max_seconds=0.5,
    )


@pytest.fixture
async def db(settings):
    await migrations.migrate(settings.database_url, schema=settings.schema)
    database = await Database.connect(settings.database_url, schema=settings.schema, max_size=5)
    yield database
    await database.close()
    conn = await asyncpg.connect(settings.database_url)
    await conn.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
    await conn.close()


@pytest.fixture
def metrics() -> KitMetrics:
    return KitMetrics(CollectorRegistry())


@pytest.fixture
async def topic(settings) -> str:
    name = f"test.{uuid.uuid4().hex[:10]}.v1"
    await ensure_topics(settings, [name])
    return name


@pytest.fixture
async def producer(settings):
    p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=False)
    await p.start()
    yield p
    await p.stop()


async def read_topic(
    bootstrap: str, topic: str, *, until, timeout: float = 20.0, settle: float = 0.0, partitions: int = 3
):
    """Read ``topic`` from the start until ``until(records)``, then ``settle`` seconds more; returns the records."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found_partitions = consumer.partitions_for_topic(topic) or set(range(partitions))
        consumer.assign([TopicPartition(topic, p) for p in found_partitions])
        await consumer.seek_to_beginning()
        records = []
        async with asyncio.timeout(timeout):
            while not until(records):
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    records.extend(msgs)
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + settle
        while loop.time() < quiet_until:  # anything extra (a record that should not exist) shows up here
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(msgs)
        return records
    finally:
        await consumer.stop()


async def eventually(check, *, timeout: float = 20.0, interval: float = 0.1):
    """Await ``check()`` until it returns a truthy value; returns it, or fails the test after ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(interval)
