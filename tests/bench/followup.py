"""Benchmark: the followup scheduler's claim-and-emit rate and lateness with 1,000,000 pending follow-ups,
next to the same with 10,000 pending, in one run; plus the service process's memory at both sizes.

    python -m tests.bench.followup [--pending N] [--burst N] [--trickle N]

Starts a Tansu broker and a PostgreSQL (fsync off) unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set.
For each size, a fresh schema is migrated and filled server-side (generate_series) with follow-ups due far
in the future; then followup runs as its own process (`python -m services.followup`, default settings), and
two measured slices are inserted while it runs:

- burst: ``--burst`` follow-ups all due at the same instant. Rate = burst / (last one on Kafka - due time):
  the real fire_due (claim FOR UPDATE SKIP LOCKED, FollowupDue staged, row marked sent) + outbox relay.
- trickle: ``--trickle`` follow-ups due evenly over 4 seconds, the steady state. Lateness = time from due to
  the outbox row committed (claimed) and to the record acknowledged by Kafka (outbox sent_at).

RSS is read from /proc for the service process: once idle with all rows pending, and after both slices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.common import migrations
from services.common.embedded import EmbeddedKafka, EmbeddedPostgres
from services.common.kafka import ensure_topics
from services.common.settings import KitSettings
from services.common.topics import CATALOGUE
from services.followup.bootstrap import MIGRATIONS
from tests.support.running import TEST_JWT_SECRET

PARTITIONS = 6
ROOT = Path(__file__).resolve().parents[2]
TRICKLE_SECONDS = 4.0


@dataclass(frozen=True)
class Result:
    pending: int
    fill_seconds: float
    burst: int
    rate: float
    burst_p99: float
    trickle: int
    claim_p50: float
    claim_p99: float
    kafka_p50: float
    kafka_p99: float
    rss_idle: float
    rss_after: float


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Return a process's resident memory in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def fill(conn: asyncpg.Connection, *, prefix: str, count: int, due: str, customers: int, step: str = "0") -> None:
    """Insert ``count`` pending check-ins server-side; ``due`` is an SQL expression, ``step`` spreads them."""
    await conn.execute(
        f"""INSERT INTO followups (followup_id, case_id, customer_id, kind, occasion, status, due_at,
                                   original_due_at, contact, channel, owner_employee_id, customer_timezone, message,
                                   policy_version, scheduled_at)
            SELECT '{prefix}-' || i, '{prefix}-case-' || i, 'bench-cust-' || (i % {customers}), 'check_in',
                   'resolution:1', 'pending', d, d, true, 'email', 'emp-1', 'Europe/Vilnius',
                   'A few days on: is everything working as it should?', 'bench', now()
            FROM generate_series(1, {count}) AS i,
                 LATERAL (SELECT ({due}) + (i - 1) * '{step}'::interval AS d) AS t"""
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def start_service(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.followup", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(120):
        while True:
            line = await process.stderr.readline()
            if not line:
                raise RuntimeError("followup exited before it was ready")
            try:
                if json.loads(line).get("message", "").startswith("ready"):
                    break
            except ValueError:
                continue
    asyncio.get_running_loop().create_task(_drain(process.stderr))
    return process


async def _drain(stream) -> None:
    while await stream.readline():
        pass


async def wait_published(conn: asyncpg.Connection, schema: str, prefix: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = await conn.fetchval(
            f"""SELECT count(*) FROM {schema}.outbox
                WHERE ce_id LIKE 'followup-due:' || $1 || '-%' AND sent_at IS NOT NULL""",
            prefix,
        )
        if done >= count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{prefix}: not all {count} follow-ups were published within {timeout}s")


async def latenesses(conn: asyncpg.Connection, schema: str, prefix: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT extract(epoch FROM o.created_at - f.due_at) AS claim,
                   extract(epoch FROM o.sent_at - f.due_at) AS kafka
            FROM {schema}.followups f JOIN {schema}.outbox o ON o.ce_id = 'followup-due:' || f.followup_id
            WHERE f.followup_id LIKE $1 || '-%'""",
        prefix,
    )


async def measure(
    *, bootstrap: str, database_url: str, pending: int, burst: int, trickle: int, data_dir: Path
) -> Result:
    schema = f"followup_bench_{uuid.uuid4().hex[:6]}"
    await migrations.migrate(database_url, schema=schema, service_migrations=MIGRATIONS)
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    process = None
    try:
        started = time.perf_counter()
        # The pending follow-ups: from 30 days out, one every 2 seconds (23 days for a million), many customers.
        far = pending
        await fill(conn, prefix="far", count=far, due="now() + interval '30 days'", customers=200_000, step="2 seconds")
        await conn.execute(f"ANALYZE {schema}.followups")
        fill_seconds = time.perf_counter() - started
        env = os.environ | {
            "SERVICE_NAME": schema,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DATABASE_URL": database_url,
            "TOPIC_PARTITIONS": str(PARTITIONS),
            "GRPC_PORT": "0",
            "METRICS_PORT": "0",
            "DATA_DIR": str(data_dir),
            "JWT_SECRET": TEST_JWT_SECRET,  # its gRPC server needs one; the bench calls none of it
            "LOG_LEVEL": "INFO",  # the "ready" line is logged at INFO
        }
        process = await start_service(env)
        await asyncio.sleep(3.0)  # the first gauge count and the consumer group settle
        rss_idle = rss_mib(process.pid)

        # Burst: every row due at one instant two seconds from now.
        burst_prefix = f"burst{uuid.uuid4().hex[:6]}"
        await fill(conn, prefix=burst_prefix, count=burst, due="now() + interval '2 seconds'", customers=burst)
        due_at = await conn.fetchval(f"SELECT min(due_at) FROM followups WHERE followup_id LIKE '{burst_prefix}-%'")
        await wait_published(conn, schema, burst_prefix, burst, timeout=180)
        last = await conn.fetchval(f"SELECT max(sent_at) FROM outbox WHERE ce_id LIKE 'followup-due:{burst_prefix}-%'")
        rate = burst / max((last - due_at).total_seconds(), 1e-6)
        burst_p99 = percentile([float(r["kafka"]) for r in await latenesses(conn, schema, burst_prefix)], 0.99)

        # Trickle: rows due evenly over a few seconds, the scheduler's steady state.
        trickle_prefix = f"trickle{uuid.uuid4().hex[:6]}"
        step = f"{TRICKLE_SECONDS / max(trickle, 1):.6f} seconds"
        await fill(
            conn, prefix=trickle_prefix, count=trickle, due="now() + interval '1 second'", customers=trickle, step=step
        )
        await wait_published(conn, schema, trickle_prefix, trickle, timeout=120)
        rows = await latenesses(conn, schema, trickle_prefix)
        claim = [float(r["claim"]) for r in rows]
        kafka = [float(r["kafka"]) for r in rows]
        rss_after = rss_mib(process.pid)
        assert min(claim) >= 0, "a follow-up was emitted before its due time"
        return Result(
            pending=far,
            fill_seconds=fill_seconds,
            burst=burst,
            rate=rate,
            burst_p99=burst_p99,
            trickle=trickle,
            claim_p50=statistics.median(claim),
            claim_p99=percentile(claim, 0.99),
            kafka_p50=statistics.median(kafka),
            kafka_p99=percentile(kafka, 0.99),
            rss_idle=rss_idle,
            rss_after=rss_after,
        )
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def run(pending: int, burst: int, trickle: int) -> None:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-followup-") as tmp:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = EmbeddedKafka(log_path=Path(tmp) / "tansu.log")
            bootstrap = broker.start()
            stack.callback(broker.stop)
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(Path(tmp) / "pg", durable=False)
            database_url = postgres.start()
            stack.callback(postgres.stop)
        await ensure_topics(
            KitSettings(kafka_bootstrap_servers=bootstrap, topic_partitions=PARTITIONS), [t.name for t in CATALOGUE]
        )
        small = min(10_000, pending)
        results = []
        for size in (small, pending):
            results.append(
                await measure(
                    bootstrap=bootstrap,
                    database_url=database_url,
                    pending=size,
                    burst=burst,
                    trickle=trickle,
                    data_dir=Path(tmp),
                )
            )
        print(f"\nfollowup scheduler benchmark: {PARTITIONS} partitions, {os.cpu_count()} cores, default settings")
        print(
            f"pending = follow-ups due 30+ days out, in the table throughout; on top of them, burst: {burst} due "
            f"at one instant, trickle: {trickle} due over {TRICKLE_SECONDS:.0f} s"
        )
        head = (
            f"{'pending':>10} {'fill s':>7} {'burst/s':>9} {'burst p99':>10} "
            f"{'claim p50':>10} {'claim p99':>10} {'kafka p50':>10} {'kafka p99':>10} {'RSS idle':>9} {'RSS after':>10}"
        )
        print(head)
        for r in results:
            print(
                f"{r.pending:>10,} {r.fill_seconds:>7.1f} {r.rate:>9.0f} {r.burst_p99:>9.2f}s "
                f"{r.claim_p50:>9.3f}s {r.claim_p99:>9.3f}s {r.kafka_p50:>9.3f}s {r.kafka_p99:>9.3f}s "
                f"{r.rss_idle:>7.0f}Mi {r.rss_after:>8.0f}Mi"
            )
        print("claim = due -> FollowupDue committed in the outbox; kafka = due -> acknowledged by the broker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=1_000_000, help="pending follow-ups at the large size")
    parser.add_argument("--burst", type=int, default=5_000, help="follow-ups due at one instant (default 5000)")
    parser.add_argument("--trickle", type=int, default=2_000, help="follow-ups due over 4 s (default 2000)")
    args = parser.parse_args()
    asyncio.run(run(args.pending, args.burst, args.trickle))


if __name__ == "__main__":
    main()
