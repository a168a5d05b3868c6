"""Per-test isolation on the shared stack: a random schema and random topic names for each test."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from services.common import cloudevents, migrations
from services.common.db import Database
from services.common.kafka import ensure_topics
from services.common.metrics import KitMetrics
from services.common.settings import KitSettings
from tests.support.running import TEST_JWT_SECRET

pytestmark = pytest.mark.integration
S = TypeVar("S")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now() -> datetime:
    return datetime.now(UTC)


def service_settings(settings_class: type[S], stack, tmp: Path, *, policy_text: str, **values) -> S:
    """Settings for one service under test on the shared stack: its own schema, group and policy file.

    ``values`` are the service's own (fast polls and the like) and any test's changes; the policy file is
    written once per directory, so a test that rewrites it keeps its version.
    """
    policy = tmp / "policy.toml"
    if not policy.exists():
        policy.write_text(policy_text)
    base = {
        "service_name": f"{settings_class.__name__.removesuffix('Settings').lower()}_{uuid.uuid4().hex[:8]}",
        "kafka_bootstrap_servers": stack.kafka,
        "database_url": stack.database_url,
        "topic_partitions": 3,
        "retry_max_seconds": 0.5,
        "data_dir": str(tmp),
        "policy_path": str(policy),
        "jwt_secret": TEST_JWT_SECRET,
    }
    return settings_class(**(base | values))


@pytest.fixture(scope="module")
async def publisher(stack):
    """A producer for tests that publish as other systems do (see ``publish``)."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all", enable_idempotence=False)
    await producer.start()
    yield producer
    await producer.stop()


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    message: Message,
    *,
    source: str,
    content_type: str = cloudevents.PROTOBUF,
    ce_id: str | None = None,
) -> str:
    """Publish ``message`` as the producing system would (CloudEvents headers, keyed); returns its ce_id."""
    headers, value, event_id = cloudevents.encode(message, source=source, id=ce_id, content_type=content_type)
    await producer.send_and_wait(topic, value, key=message.customer_id.encode(), headers=headers)
    return event_id


@pytest.fixture
def settings(stack) -> KitSettings:
    name = unique("test")
    return KitSettings(
        service_name=name,
        kafka_bootstrap_servers=stack.kafka,
        database_url=stack.database_url,
        topic_partitions=3,
        retry_max_seconds=0.5,
        jwt_secret=TEST_JWT_SECRET,
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
