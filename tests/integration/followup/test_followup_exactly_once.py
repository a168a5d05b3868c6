"""Exactly one FollowupDue per follow-up: two scheduler replicas on one schema, and a service process killed
(SIGKILL) with follow-ups coming due while it is down, then started again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import asyncpg
from prometheus_client import CollectorRegistry
from recovery.events.v1 import events_pb2

from services.common import migrations
from services.common.db import Database
from services.common.metrics import KitMetrics
from services.common.scheduler import Scheduler
from services.followup import bootstrap
from services.followup.adapters.metrics import FollowupMetrics
from services.followup.domain.policy import load_policy
from services.followup.service_layer import handlers
from tests.integration.conftest import eventually
from tests.integration.followup.conftest import (
    DUE,
    RESOLVED,
    TEST_POLICY,
    new_id,
    now,
    publish,
    read_all,
    resolved,
    rows,
)
from tests.support.running import TEST_JWT_SECRET

ROOT = Path(__file__).resolve().parents[3]


async def seed(conn: asyncpg.Connection, *, count: int, customers: int, due_in: timedelta, prefix: str) -> None:
    """Insert ``count`` pending follow-ups of ``customers`` customers, due ``due_in`` from now."""
    await conn.execute(
        """INSERT INTO followups (followup_id, case_id, customer_id, kind, occasion, status, due_at, original_due_at,
                                  contact, owner_employee_id, customer_timezone, message, policy_version, scheduled_at)
           SELECT $1 || '-' || i, $1 || '-case-' || i, $1 || '-cust-' || (i % $3), 'check_in', 'resolution:1',
                  'pending', now() + $4::interval, now() + $4::interval, true, 'emp', 'UTC', 'hello', 'test', now()
           FROM generate_series(1, $2) AS i""",
        prefix,
        count,
        customers,
        due_in,
    )


async def test_two_scheduler_replicas_emit_each_follow_up_once_and_never_early(stack, settings):
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=bootstrap.MIGRATIONS)
    dbs = [await Database.connect(settings.database_url, schema=settings.schema, max_size=3) for _ in range(2)]
    kit_metrics = KitMetrics(CollectorRegistry())
    policy = load_policy(TEST_POLICY)
    try:
        async with dbs[0].transaction() as conn:
            await seed(conn, count=400, customers=40, due_in=timedelta(seconds=-5), prefix=new_id("now"))
            await seed(conn, count=100, customers=40, due_in=timedelta(seconds=2), prefix=new_id("soon"))
        replicas = [
            Scheduler(
                name=f"replica-{i}",
                db=db,
                fire_due=partial(
                    handlers.fire_due,
                    deps=handlers.Deps(policy=lambda: policy, metrics=FollowupMetrics(CollectorRegistry())),
                ),
                metrics=kit_metrics,
                poll_seconds=0.02,
                batch_size=7,
                retry_max_seconds=0.2,
            )
            for i, db in enumerate(dbs)
        ]
        tasks = [asyncio.create_task(r.run()) for r in replicas]
        try:

            async def all_sent():
                left = await dbs[0].pool.fetchval("SELECT count(*) FROM followups WHERE status = 'pending'")
                return left == 0

            await eventually(all_sent, timeout=60)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        staged = await dbs[0].pool.fetch("SELECT ce_id, created_at FROM outbox WHERE topic = $1", DUE)
        assert len(staged) == 500 and len({r["ce_id"] for r in staged}) == 500
        ids = {r["followup_id"] for r in await dbs[0].pool.fetch("SELECT followup_id FROM followups")}
        assert {r["ce_id"] for r in staged} == {f"followup-due:{i}" for i in ids}
        early = await dbs[0].pool.fetchval("SELECT count(*) FROM followups WHERE sent_at < due_at")
        assert early == 0
        fired = {
            r.name: kit_metrics.scheduler_fired.labels(scheduler=r.name)._value.get()  # both replicas took a share
            for r in replicas
        }
        assert sum(fired.values()) == 500 and all(v > 0 for v in fired.values()), fired
    finally:
        for db in dbs:
            await db.close()
        conn = await asyncpg.connect(settings.database_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
        await conn.close()


async def start_process(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.followup", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(90):
        while True:
            line = await process.stderr.readline()
            if not line:
                raise RuntimeError(f"followup exited before it was ready (exit code {await process.wait()})")
            try:
                if json.loads(line).get("message", "").startswith("ready"):
                    break
            except ValueError:
                continue
    asyncio.get_running_loop().create_task(_drain(process.stderr))  # a full pipe must never block it
    return process


async def _drain(stream) -> None:
    while await stream.readline():
        pass


async def test_follow_ups_due_while_the_process_was_killed_go_out_once_right_after_restart(stack, tmp_path, publisher):
    name = f"followup_kill_{new_id('x')[2:].replace('-', '')}"
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY)
    env = os.environ | {
        "SERVICE_NAME": name,
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
        "DATABASE_URL": stack.database_url,
        "TOPIC_PARTITIONS": "3",
        "GRPC_PORT": "0",
        "METRICS_PORT": "0",
        "DATA_DIR": str(tmp_path),
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_LEVEL": "INFO",
        "FOLLOWUP_POLICY_PATH": str(policy),
        "FOLLOWUP_SCHEDULER_POLL_SECONDS": "0.1",
        "FOLLOWUP_DELAY_OVERRIDES": "satisfaction_check=6,check_in=8,personal_note=7",
    }
    settings_like = SimpleNamespace(database_url=stack.database_url, schema=name)  # what rows() reads
    process = await start_process(env)
    customers = [new_id("cust") for _ in range(5)]
    try:
        for customer in customers:
            await publish(publisher, RESOLVED, resolved(customer))

        async def scheduled():
            found = await rows(settings_like, "SELECT * FROM {schema}.followups WHERE customer_id = ANY($1)", customers)
            return len(found) == 10 and found

        planned = await eventually(scheduled, timeout=60)
        assert {r["status"] for r in planned} == {"pending"}
    finally:
        process.send_signal(signal.SIGKILL)  # no graceful stop: nothing flushed, nothing handed over
        await process.wait()
    # Every follow-up comes due while no process runs.
    latest_due = max(r["due_at"] for r in planned)
    await asyncio.sleep(max(0.0, (latest_due - now()).total_seconds()) + 1.0)
    still = await rows(settings_like, "SELECT status FROM {schema}.followups WHERE customer_id = ANY($1)", customers)
    assert {r["status"] for r in still} == {"pending"}

    process = await start_process(env)
    restarted_at = now()
    try:

        async def all_sent():
            found = await rows(settings_like, "SELECT * FROM {schema}.followups WHERE customer_id = ANY($1)", customers)
            return all(r["status"] == "sent" for r in found) and found

        sent = await eventually(all_sent, timeout=30)
        assert all(r["sent_at"] - restarted_at < timedelta(seconds=5) for r in sent)  # promptly after restart

        async def published():
            got = await read_all(stack.kafka, DUE, events_pb2.FollowupDue, keys=customers)
            return len(got) >= 10 and got

        got = await eventually(published, timeout=30)
        await asyncio.sleep(2.0)
        got = await read_all(stack.kafka, DUE, events_pb2.FollowupDue, keys=customers)
        assert sorted(m.followup_id for _, m in got) == sorted(r["followup_id"] for r in sent)  # each exactly once
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
        conn = await asyncpg.connect(stack.database_url)
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()


async def test_a_process_killed_in_the_middle_of_firing_leaves_one_event_per_follow_up(stack, tmp_path):
    name = f"followup_burst_{new_id('x')[2:].replace('-', '')}"
    env = os.environ | {
        "SERVICE_NAME": name,
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka,
        "DATABASE_URL": stack.database_url,
        "TOPIC_PARTITIONS": "3",
        "GRPC_PORT": "0",
        "METRICS_PORT": "0",
        "DATA_DIR": str(tmp_path),
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_LEVEL": "INFO",
        "FOLLOWUP_SCHEDULER_POLL_SECONDS": "0.1",
    }
    prefix = new_id("burst")
    process = await start_process(env)
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": name})
    try:
        try:
            await seed(conn, count=4000, customers=500, due_in=timedelta(seconds=1), prefix=prefix)

            async def firing():  # some sent, most still pending: the kill lands mid-burst
                sent = "SELECT count(*) FROM followups WHERE status = 'sent' AND followup_id LIKE $1 || '-%'"
                return await conn.fetchval(sent, prefix) > 200

            await eventually(firing, interval=0.02)
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        left = await conn.fetchval(
            "SELECT count(*) FROM followups WHERE status = 'pending' AND followup_id LIKE $1 || '-%'", prefix
        )
        assert left > 0, "the burst finished before the kill; nothing was left to resume"
        process = await start_process(env)
        try:

            async def drained():
                # Only the seeded rows: a new consumer group also reads other tests' cases from the shared topics.
                pending = await conn.fetchval(
                    "SELECT count(*) FROM followups WHERE status = 'pending' AND followup_id LIKE $1 || '-%'", prefix
                )
                unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                return pending == 0 and unsent == 0

            await eventually(drained, timeout=60)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
        staged = await conn.fetch(
            "SELECT ce_id FROM outbox WHERE topic = $1 AND ce_id LIKE 'followup-due:' || $2 || '-%'", DUE, prefix
        )
        assert len(staged) == 4000 and len({r["ce_id"] for r in staged}) == 4000  # one event per follow-up
        customers = [f"{prefix}-cust-{i}" for i in range(500)]
        got = await read_all(stack.kafka, DUE, events_pb2.FollowupDue, keys=customers)
        ids = {}
        for record, message in got:
            ce_id = dict(record.headers)["ce_id"].decode()
            assert ids.setdefault(message.followup_id, ce_id) == ce_id  # a wire duplicate carries the same ce_id
        assert len(ids) == 4000
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()
