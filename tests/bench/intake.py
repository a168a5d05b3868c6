"""Benchmark: failure reports per second through intake, next to the raw broker rate, in the same run.

    python -m tests.bench.intake [--count N]

Starts a Tansu broker and a durable PostgreSQL (unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set).
The baseline produces N FailureReported records (CloudEvents headers, the same bodies) to a fresh topic and
consumes them with a plain aiokafka consumer: the fastest a record can go through this broker here. Then
intake runs as its own process (`python -m services.intake`, as `make run` starts it) and the same N
reports are published on recovery.failure-reported.v1; the clock stops when every failure is committed
and every CaseOpened is published from the outbox. Both rates are printed with their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from recovery.events.v1 import common_pb2, events_pb2

from services.common import cloudevents
from services.common.embedded import EmbeddedKafka, EmbeddedPostgres
from services.common.kafka import ensure_topics
from services.common.settings import KitSettings
from services.common.topics import CATALOGUE
from services.common.wire import time_to_proto
from tests.support.running import TEST_JWT_SECRET

PARTITIONS = 6
ROOT = Path(__file__).resolve().parents[2]


def reports(count: int) -> list[tuple[bytes, list, bytes]]:
    """Return ``count`` encoded failure reports (key, headers, value): many customers, a few areas."""
    now = datetime.now(UTC)
    encoded = []
    for i in range(count):
        customer = f"bench-{uuid.uuid4().hex[:12]}"
        message = events_pb2.FailureReported(
            customer_id=customer,
            source=common_pb2.SOURCE_DELIVERY_TRACKING,
            source_event_id=f"evt-{uuid.uuid4().hex}",
            reference=f"order-{i}",
            category=common_pb2.CATEGORY_LATE_DELIVERY if i % 3 else common_pb2.CATEGORY_DAMAGED_ITEM,
            occurred_at=time_to_proto(now - timedelta(minutes=i % 600)),
            description="parcel arrived two days after the promised date",
            reported_costs=[
                common_pb2.CostItem(
                    kind=common_pb2.COST_KIND_TAXI,
                    amount=common_pb2.Money(amount_minor=2500 + i % 5000, currency="EUR"),
                )
            ],
            area=common_pb2.Area(component=f"hub-{i % 20}", release=f"2025.{i % 7}", team=f"team-{i % 12}"),
            order_value=common_pb2.Money(amount_minor=8900, currency="EUR"),
        )
        headers, value, _ = cloudevents.encode(message, source="bench")
        encoded.append((customer.encode(), headers, value))
    return encoded


async def produce(bootstrap: str, topic: str, records) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=headers) for key, headers, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_rate(bootstrap: str, records) -> float:
    """Return records/s produced to a fresh topic and consumed back by a plain consumer group."""
    topic = f"bench.raw.{uuid.uuid4().hex[:8]}"
    settings = KitSettings(kafka_bootstrap_servers=bootstrap, topic_partitions=PARTITIONS)
    await ensure_topics(settings, [topic])
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        started = time.perf_counter()
        producing = asyncio.create_task(produce(bootstrap, topic, records))
        seen = 0
        while seen < len(records):
            batch = await consumer.getmany(timeout_ms=200)
            seen += sum(len(msgs) for msgs in batch.values())
        await producing
        return len(records) / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def rss_mib(pid: int) -> float:
    """Return a process's resident memory in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def intake_rate(bootstrap: str, database_url: str, records, data_dir: Path) -> tuple[float, float]:
    """Return (failures/s through an intake process, its RSS in MiB at the end)."""
    schema = f"intake_bench_{uuid.uuid4().hex[:6]}"
    env = os.environ | {
        "SERVICE_NAME": schema,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "TOPIC_PARTITIONS": str(PARTITIONS),
        "GRPC_PORT": "0",
        "METRICS_PORT": "0",
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": TEST_JWT_SECRET,  # its gRPC server needs one; the bench calls none of it
    }
    env["LOG_LEVEL"] = "INFO"  # the "ready" line is logged at INFO
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.intake", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    try:
        await _ready(process)
        conn = await asyncpg.connect(database_url)
        try:
            started = time.perf_counter()
            await produce(bootstrap, "recovery.failure-reported.v1", records)
            while True:
                done = await conn.fetchval(f"SELECT count(*) FROM {schema}.failures")
                unsent = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL")
                if done >= len(records) and unsent == 0:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            return len(records) / elapsed, rss_mib(process.pid)
        finally:
            await conn.close()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)


async def _ready(process) -> None:
    async with asyncio.timeout(120):
        while True:
            line = await process.stderr.readline()
            if not line:
                raise RuntimeError("intake exited before it was ready")
            if json.loads(line).get("message", "").startswith("ready"):
                break
    # Drain the rest of its log so a full pipe never blocks it.
    asyncio.get_running_loop().create_task(_drain(process.stderr))


async def _drain(stream) -> None:
    while await stream.readline():
        pass


async def run(count: int) -> None:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = EmbeddedKafka(log_path=Path(tmp) / "tansu.log")
            bootstrap = broker.start()
            stack.callback(broker.stop)
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(Path(tmp) / "pg")
            database_url = postgres.start()
            stack.callback(postgres.stop)
        settings = KitSettings(kafka_bootstrap_servers=bootstrap, topic_partitions=PARTITIONS)
        await ensure_topics(settings, [t.name for t in CATALOGUE])
        records = reports(count)
        raw = await raw_rate(bootstrap, records)
        through, rss = await intake_rate(bootstrap, database_url, records, Path(tmp))
        print(f"\nintake benchmark: {count} failure reports, {PARTITIONS} partitions, {os.cpu_count()} cores")
        print(f"{'path':<46}{'records/s':>12}")
        print(f"{'raw broker produce -> consume (baseline)':<46}{raw:>12.0f}")
        print(f"{'through intake (validate..classify, outbox)':<46}{through:>12.0f}")
        print(f"intake at {through / raw:.1%} of the raw broker rate; intake process RSS at the end {rss:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="failure reports to publish (default 20000)")
    asyncio.run(run(parser.parse_args().count))


if __name__ == "__main__":
    main()
