"""Retention over real Postgres and the real broker: inbox and request-log rows older than the dedupe retention
are pruned in batches and counted, newer ones stay; topics are created with the catalogue's retention."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.common.embedded import EmbeddedKafka, free_port
from services.common.kafka import ensure_topics
from services.common.retention import keep_pruning, prune
from services.common.topics import DEADLETTER_RETENTION, EVENT_RETENTION
from tests.integration.conftest import eventually

NOW = datetime.now(UTC)


async def seed(db, *, old: int, new: int) -> None:
    async with db.transaction() as conn:
        for i in range(old + new):
            at = NOW - (timedelta(days=40) if i < old else timedelta(days=1))
            await conn.execute(
                "INSERT INTO inbox (consumer, ce_source, ce_id, topic, processed_at) VALUES ('c', 's', $1, 't', $2)",
                f"ce-{i}",
                at,
            )
            await conn.execute(
                """INSERT INTO request_log (request_id, method, fingerprint, response, created_at)
                   VALUES ($1, '/m', '\\x00', '\\x00', $2)""",
                f"req-{i}",
                at,
            )


async def counts(db) -> tuple[int, int]:
    async with db.transaction() as conn:
        return (
            await conn.fetchval("SELECT count(*) FROM inbox"),
            await conn.fetchval("SELECT count(*) FROM request_log"),
        )


async def test_rows_older_than_the_retention_are_pruned_in_batches_and_newer_ones_stay(db):
    await seed(db, old=7, new=3)
    pruned = await prune(db, older_than=NOW - timedelta(days=30), batch=3)  # three rounds and a short one
    assert pruned == {"inbox": 7, "request_log": 7}
    assert await counts(db) == (3, 3)
    assert await prune(db, older_than=NOW - timedelta(days=30)) == {"inbox": 0, "request_log": 0}


async def test_the_pruning_loop_counts_what_it_removed(db, metrics):
    await seed(db, old=2, new=1)
    loop = asyncio.create_task(keep_pruning(db, metrics, retention=timedelta(days=30), interval=0.05))
    try:

        async def counted():
            sample = metrics.registry.get_sample_value("recovery_pruned_rows_total", {"table": "inbox"})
            return sample == 2

        await eventually(counted, timeout=10)
        assert metrics.registry.get_sample_value("recovery_pruned_rows_total", {"table": "request_log"}) == 2
        assert await counts(db) == (1, 1)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def test_topics_are_created_with_the_catalogues_retention(settings, tmp_path):
    names = ["recovery.case-opened.v1", "recovery.deadletter.v1"]
    kafka = EmbeddedKafka(port=free_port(), log_path=tmp_path / "tansu.log")  # its own: the topics are new here
    kafka.start()
    try:
        await ensure_topics(replace(settings, kafka_bootstrap_servers=kafka.bootstrap_servers), names)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
        await admin.start()
        try:
            described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        finally:
            await admin.close()
    finally:
        kafka.stop()
    retention = {
        resource[3]: dict((entry[0], entry[1]) for entry in resource[4])["retention.ms"]
        for response in described
        for resource in response.resources
    }
    ms = {n: int(v) for n, v in retention.items()}
    assert ms == {
        "recovery.case-opened.v1": int(EVENT_RETENTION.total_seconds() * 1000),
        "recovery.deadletter.v1": int(DEADLETTER_RETENTION.total_seconds() * 1000),
    }
