"""A system whose parts can be hurt one at a time: the broker, Postgres and each service replica are
processes this harness owns, so a test can kill -9, pause, restart or double any of them while a stream
of failure reports runs, then check the invariants against the database and the output topics.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from recovery.events.v1 import common_pb2 as common
from recovery.events.v1 import events_pb2 as events

from services.__main__ import ROOT, SERVICES
from services.common import cloudevents
from services.common.deadletter import CONSUMER_GROUP, DEADLETTER_TOPIC, ORIGINAL_TOPIC, REASON
from services.common.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from services.common.kafka import ensure_topics
from services.common.settings import KitSettings
from services.common.topics import CATALOGUE
from services.common.wire import time_to_proto
from tests.support.outside import daytime_zone, read_to_end
from tests.support.running import TEST_JWT_SECRET
from tests.support.system import FOLLOWUP_DELAYS, escalation_policy

REPORTS = "recovery.failure-reported.v1"


def log(text: str) -> None:
    """What a fault test injected and counted: shown with `pytest -s` and in the failure report."""
    print(f"[faults] {text}", flush=True)


@dataclass
class Replica:
    name: str
    index: int
    process: asyncio.subprocess.Process
    grpc_port: int
    metrics_port: int


@dataclass
class Cluster:
    """The broker, Postgres and the services as separate processes, each one killable on its own."""

    directory: Path
    kafka: EmbeddedKafka = field(init=False)
    postgres: EmbeddedPostgres = field(init=False)
    replicas: dict[tuple[str, int], Replica] = field(default_factory=dict)

    async def start(self) -> None:
        self.kafka = EmbeddedKafka(port=free_port(), log_path=self.directory / "tansu.log")
        self.kafka.start()
        # Durable like a real server: a crash (immediate stop) must not lose what it acknowledged.
        self.postgres = EmbeddedPostgres(self.directory / "postgres", port=free_port())
        await asyncio.to_thread(self.postgres.start)
        settings = KitSettings.from_env(kafka_bootstrap_servers=self.bootstrap, database_url=self.database_url)
        await ensure_topics(settings, [t.name for t in CATALOGUE])
        await asyncio.gather(*(self.start_service(name) for name in SERVICES))

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def _env(self, name: str, index: int, grpc_port: int, metrics_port: int) -> dict[str, str]:
        data = self.directory / f"{name}-{index}"
        data.mkdir(exist_ok=True)
        return os.environ | {
            "SERVICE_NAME": name,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": self.database_url,
            "DATA_DIR": str(data),
            "GRPC_PORT": str(grpc_port),
            "METRICS_PORT": str(metrics_port),
            "FOLLOWUP_DELAY_OVERRIDES": FOLLOWUP_DELAYS,
            "ESCALATION_POLICY_PATH": str(escalation_policy(self.directory)),
            "LOG_LEVEL": "INFO",
            "JWT_SECRET": TEST_JWT_SECRET,
        }

    async def start_service(self, name: str, index: int = 0) -> Replica:
        """Start (or restart) one replica of a service and wait until its gRPC health says SERVING."""
        grpc_port, metrics_port = free_port(), free_port()
        log_path = self.directory / f"{name}-{index}.log"
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # the child writes to it; we only pass it on
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{name}",
            cwd=ROOT,
            env=self._env(name, index, grpc_port, metrics_port),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
        os.close(out)
        replica = Replica(name, index, process, grpc_port, metrics_port)
        self.replicas[(name, index)] = replica
        async with asyncio.timeout(120):
            while not await _serving(grpc_port):
                if process.returncode is not None:
                    raise RuntimeError(f"{name}-{index} exited while starting:\n{self.tail(name, index)}")
                await asyncio.sleep(0.3)
        return replica

    async def kill(self, name: str, index: int = 0, sig: int = signal.SIGKILL) -> None:
        replica = self.replicas.pop((name, index))
        if replica.process.returncode is None:
            replica.process.send_signal(sig)
        await asyncio.wait_for(replica.process.wait(), 60)

    def pause_broker(self) -> None:
        os.kill(self.kafka.pid, signal.SIGSTOP)

    def resume_broker(self) -> None:
        os.kill(self.kafka.pid, signal.SIGCONT)

    async def restart_postgres(self, down_for: float) -> None:
        await asyncio.to_thread(self.postgres.stop, "immediate")  # a crash, not a polite shutdown
        await asyncio.sleep(down_for)
        await asyncio.to_thread(self.postgres.start)

    async def drop_connections(self) -> int:
        """Terminate every service connection, whatever it is doing (mid-transaction included)."""
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                " AND datname = current_database() AND backend_type = 'client backend'"
            )
            return len(rows)
        finally:
            await conn.close()

    def alive(self) -> list[str]:
        return [f"{r.name}-{r.index}" for r in self.replicas.values() if r.process.returncode is None]

    def tail(self, name: str, index: int = 0, lines: int = 40) -> str:
        path = self.directory / f"{name}-{index}.log"
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:]) if path.exists() else ""

    async def stop(self) -> None:
        for replica in list(self.replicas.values()):
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in list(self.replicas.values()):
            try:
                await asyncio.wait_for(replica.process.wait(), 60)
            except TimeoutError:
                replica.process.kill()
                await replica.process.wait()
        self.replicas.clear()
        self.kafka.stop()
        await asyncio.to_thread(self.postgres.stop)


async def _serving(port: int) -> bool:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except (grpc.aio.AioRpcError, TimeoutError):
        return False


# ------------------------------------------------------------------------------------------ the stream


@dataclass
class Stream:
    """Failure reports as delivery tracking publishes them: many customers, some sent twice, some merged."""

    prefix: str = field(default_factory=lambda: f"f{uuid.uuid4().hex[:6]}")
    customers: int = 200
    seed: int = 7
    published: int = 0
    duplicates: int = 0
    poison: dict[str, str] = field(default_factory=dict)  # ce_id -> customer of each poison record
    event_ids: set[str] = field(default_factory=set)  # distinct valid (source event id)s

    def customer(self, i: int) -> str:
        return f"{self.prefix}-cust-{i % self.customers}"

    def report(self, i: int) -> events.FailureReported:
        # Every third report of a customer shares an order with the one before it: intake merges those.
        reference = f"{self.prefix}-order-{i % self.customers}-{(i // self.customers) // 2}"
        return events.FailureReported(
            customer_id=self.customer(i),
            source=common.SOURCE_DELIVERY_TRACKING,
            source_event_id=f"{self.prefix}-trk-{i}",
            reference=reference,
            category=common.CATEGORY_LATE_DELIVERY,
            occurred_at=time_to_proto(datetime.now(UTC) - timedelta(hours=2)),
            description="parcel missed its delivery slot",
            order_value=common.Money(amount_minor=3_000, currency="EUR"),
            avoidability=common.AVOIDABILITY_UNAVOIDABLE,
            customer_timezone=daytime_zone(),
            preferred_channel=common.CHANNEL_EMAIL,
        )

    async def run(self, bootstrap: str, count: int, *, rate: float, poison_every: int = 0) -> None:
        """Publish ``count`` reports at about ``rate`` per second (JSON and protobuf mixed, 5 % resent)."""
        rng = random.Random(self.seed)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for i in range(count):
                message = self.report(i)
                key = message.customer_id.encode()
                if poison_every and i % poison_every == poison_every - 1:
                    headers, _, ce_id = cloudevents.encode(message, source="delivery-tracking")
                    self.poison[ce_id] = message.customer_id
                    await producer.send(REPORTS, b"\x0a\xff\xff\xff", key=key, headers=headers)  # truncated
                else:
                    content = cloudevents.JSON if i % 2 else cloudevents.PROTOBUF
                    headers, value, _ = cloudevents.encode(message, source="delivery-tracking", content_type=content)
                    await producer.send(REPORTS, value, key=key, headers=headers)
                    self.event_ids.add(message.source_event_id)
                    if rng.random() < 0.05:  # the publisher retried: another ce_id, the same source event
                        headers, value, _ = cloudevents.encode(message, source="delivery-tracking")
                        await producer.send(REPORTS, value, key=key, headers=headers)
                        self.duplicates += 1
                self.published += 1
                behind = started + (i + 1) / rate - loop.time()
                if behind > 0:
                    await asyncio.sleep(behind)
            await producer.flush()
        finally:
            await producer.stop()

    def all_customers(self) -> list[str]:
        return [self.customer(i) for i in range(self.customers)]


# ---------------------------------------------------------------------------------------- invariants


async def read_topic(bootstrap: str, topic: str, keys: set[str]) -> list:
    """Every record of ``topic`` keyed by one of ``keys`` (a settled system's topics can be long)."""
    return await read_to_end(bootstrap, topic, keys, timeout=120)


def _ce(record, name: str) -> str:
    return dict(record.headers).get(name, b"").decode()


@dataclass
class Report:
    """The invariant counts of one stream, and which invariants broke."""

    counts: dict[str, int] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        if not ok:
            self.broken.append(f"{name}: {detail}")

    def __str__(self) -> str:
        figures = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return figures + ("" if not self.broken else "\nBROKEN:\n  " + "\n  ".join(self.broken))


async def _progress(conn: asyncpg.Connection, customers: list[str]) -> tuple[int, ...]:
    failures = await conn.fetchval("SELECT count(*) FROM intake.failures WHERE customer_id = ANY($1)", customers)
    cases = await conn.fetchval("SELECT count(*) FROM intake.cases WHERE customer_id = ANY($1)", customers)
    escalated = await conn.fetchval("SELECT count(*) FROM escalation.cases WHERE customer_id = ANY($1)", customers)
    quoted = await conn.fetchval("SELECT count(*) FROM compensation.offers WHERE customer_id = ANY($1)", customers)
    received = await conn.fetchval(
        "SELECT count(*) FROM escalation.offers o JOIN escalation.cases c USING (case_id)"
        " WHERE c.customer_id = ANY($1)",
        customers,
    )
    unsent = 0
    for schema in SERVICES:
        unsent += await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL")
    return failures, cases, escalated, quoted, received, unsent


async def settled(cluster: Cluster, stream: Stream, *, timeout: float = 600) -> None:
    """Wait until every accepted report reached intake, every case and offer reached escalation, every outbox
    is empty, and nothing changed for two seconds: the moment the invariants must hold."""
    customers = stream.all_customers()
    last, stable_since = None, None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    conn = await asyncpg.connect(cluster.database_url)
                    try:
                        now = await _progress(conn, customers)
                    finally:
                        await conn.close()
                except (asyncpg.PostgresError, OSError):
                    now = None  # Postgres may be restarting in a test
                if now != last:
                    last, stable_since = now, loop.time()
                failures, cases, escalated, quoted, received, unsent = now or (None,) * 6
                done = failures == len(stream.event_ids) and cases == escalated and quoted == received and unsent == 0
                if done and loop.time() - stable_since >= 2.0:
                    return
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(
            f"the system never settled: (failures, cases, escalated, offers quoted, offers received, unsent outbox)"
            f" = {last}, expected {len(stream.event_ids)} failures; alive: {cluster.alive()}"
        ) from None


async def invariants(cluster: Cluster, stream: Stream) -> Report:
    """Check what must hold after any fault, against the database and the output topics."""
    report = Report()
    customers = stream.all_customers()
    keys = set(customers)
    conn = await asyncpg.connect(cluster.database_url)
    try:
        failures = await conn.fetch(
            "SELECT source_event_id, case_id FROM intake.failures WHERE customer_id = ANY($1)", customers
        )
        intake_cases = {
            r["case_id"]
            for r in await conn.fetch("SELECT case_id FROM intake.cases WHERE customer_id = ANY($1)", customers)
        }
        escalation_cases = {
            r["case_id"]
            for r in await conn.fetch("SELECT case_id FROM escalation.cases WHERE customer_id = ANY($1)", customers)
        }
        current = await conn.fetch(
            "SELECT case_id, count(*) AS n FROM compensation.offers WHERE customer_id = ANY($1)"
            " AND superseded_by_offer_id IS NULL GROUP BY case_id",
            customers,
        )
        authorizations = await conn.fetch(
            "SELECT a.authorization_id, count(*) AS n FROM escalation.authorizations a"
            " JOIN escalation.cases c USING (case_id) WHERE c.customer_id = ANY($1)"
            " GROUP BY a.offer_id, a.part, a.authorization_id",
            customers,
        )
    finally:
        await conn.close()

    seen = Counter(r["source_event_id"] for r in failures)
    report.counts |= {
        "published": stream.published,
        "resent": stream.duplicates,
        "poison": len(stream.poison),
        "failures": len(failures),
        "cases": len(intake_cases),
        "merged": len(failures) - len(intake_cases),
    }
    report.check(
        "every accepted report is exactly one failure",
        set(seen) == stream.event_ids and all(n == 1 for n in seen.values()),
        f"{len(stream.event_ids - set(seen))} lost, {sum(1 for n in seen.values() if n > 1)} doubled",
    )
    report.check("every failure belongs to a case", {r["case_id"] for r in failures} <= intake_cases)
    report.check(
        "escalation holds exactly intake's cases",
        escalation_cases == intake_cases,
        f"{len(intake_cases - escalation_cases)} missing, {len(escalation_cases - intake_cases)} extra",
    )
    report.check(
        "every case has exactly one current offer",
        {r["case_id"] for r in current} == intake_cases and all(r["n"] == 1 for r in current),
        f"{len(intake_cases) - len(current)} cases without one",
    )
    report.check("at most one authorisation per part of an offer", all(r["n"] == 1 for r in authorizations))
    report.counts["authorised"] = len(authorizations)

    # The wire: duplicates are allowed only with the same ce_id, and never make a second effect.
    opened = await read_topic(cluster.bootstrap, "recovery.case-opened.v1", keys)
    by_case: dict[str, set[str]] = defaultdict(set)
    for record in opened:
        by_case[events.CaseOpened.FromString(record.value).case_id].add(_ce(record, "ce_id"))
    report.check("one case-opened per case", set(by_case) == intake_cases, f"{len(by_case)} vs {len(intake_cases)}")
    report.check("a case-opened duplicate carries the same ce_id", all(len(ids) == 1 for ids in by_case.values()))
    report.counts["case_opened_records"] = len(opened)
    authorized = await read_topic(cluster.bootstrap, "recovery.offer-authorized.v1", keys)
    by_offer: dict[str, set[str]] = defaultdict(set)
    for record in authorized:
        event = events.OfferAuthorized.FromString(record.value)
        by_offer[event.authorization_id or event.offer_id].add(_ce(record, "ce_id"))
    report.check(
        "one offer-authorized per authorisation",
        set(by_offer) == {r["authorization_id"] for r in authorizations},
        f"{len(by_offer)} on the wire vs {len(authorizations)} authorisations",
    )
    report.check("an offer-authorized duplicate carries the same ce_id", all(len(i) == 1 for i in by_offer.values()))

    # Nothing lost between topics: input = failures + resent duplicates + dead letters.
    dead = await read_topic(cluster.bootstrap, DEADLETTER_TOPIC, set(stream.poison.values()))
    by_intake = [r for r in dead if _ce(r, ORIGINAL_TOPIC) == REPORTS and _ce(r, CONSUMER_GROUP) == "intake"]
    dead_ids = {_ce(r, "ce_id") for r in by_intake}
    report.counts["dead_lettered"] = len(dead_ids)
    report.check(
        "every poison record is dead-lettered once, with a reason",
        dead_ids == set(stream.poison) and all(_ce(r, REASON) for r in by_intake),
        f"{len(set(stream.poison) - dead_ids)} not dead-lettered, {len(dead_ids - set(stream.poison))} unexpected",
    )
    # Every record sent is an effect (a failure), a duplicate (a resend of one: no second effect, checked above)
    # or a dead letter with a reason, as observed: nothing dropped silently.
    sent = stream.published + stream.duplicates
    report.check(
        "every record is an effect, a duplicate or a dead letter",
        sent == len(failures) + stream.duplicates + len(dead_ids),
        f"{sent} sent vs {len(failures)} failures + {stream.duplicates} duplicates + {len(dead_ids)} dead letters",
    )
    return report


async def followup_invariants(cluster: Cluster, case_ids: list[str], report: Report) -> None:
    """Every resolved case has exactly its follow-ups, each emitted once, none before it was due."""
    conn = await asyncpg.connect(cluster.database_url)
    try:
        rows = await conn.fetch(
            "SELECT followup_id, case_id, customer_id, kind, status, due_at, sent_at FROM followup.followups"
            " WHERE case_id = ANY($1)",
            case_ids,
        )
    finally:
        await conn.close()
    kinds: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        kinds[row["case_id"]].add(row["kind"])
    report.check(
        "every resolved case has its satisfaction check and check-in",
        all(kinds[c] >= {"satisfaction_check", "check_in"} for c in case_ids),
        f"{sum(1 for c in case_ids if not kinds[c] >= {'satisfaction_check', 'check_in'})} cases without",
    )
    report.check("one follow-up per case and kind", len(rows) == sum(len(k) for k in kinds.values()))
    report.check(
        "every follow-up came due and went out",
        all(r["status"] == "sent" for r in rows),
        f"{sum(1 for r in rows if r['status'] != 'sent')} not sent",
    )
    report.check("none before it was due", all(r["sent_at"] >= r["due_at"] for r in rows if r["sent_at"]))
    due = await read_topic(cluster.bootstrap, "recovery.followup-due.v1", {r["customer_id"] for r in rows})
    by_followup: dict[str, set[str]] = defaultdict(set)
    for record in due:
        by_followup[events.FollowupDue.FromString(record.value).followup_id].add(_ce(record, "ce_id"))
    wanted = {r["followup_id"] for r in rows}
    report.check("each follow-up emitted", wanted <= set(by_followup), f"{len(wanted - set(by_followup))} missing")
    report.check("a follow-up-due duplicate carries the same ce_id", all(len(i) == 1 for i in by_followup.values()))
    report.counts |= {"resolved": len(case_ids), "followups": len(rows), "followup_due_records": len(due)}
