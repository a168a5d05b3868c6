"""Benchmark: failures per second and latency through the whole pipeline (intake -> compensation ->
escalation), next to a raw chain of Kafka + Postgres relays with as many hops, in the same run.

    python -m tests.bench.pipeline [--count N] [--mass N] [--skip-grpc] [--skip-mass] [--timeout S]

Starts the system as `make run` does (`python -m services`: a Tansu broker, a durable embedded PostgreSQL,
every service as its own process, data in a temporary directory), then measures, printing as it goes:

1. Raw baseline: three plain aiokafka relay processes chained over fresh scratch topics on the same broker
   (as many hops as failure-reported -> case-opened -> offer-proposed -> offer-authorized). Each relay
   reads a batch (getmany, at most CONSUMER_BATCH_SIZE records), inserts the batch's rows into a scratch
   table of a scratch schema in ONE Postgres transaction on the same server, produces them to the next
   topic (acks=all), then commits its offsets. Rate = N / (first publish -> last record seen at the end).
2. Pipeline: ``--count`` system-detected failures (SOURCE_DELIVERY_TRACKING, CloudEvents binary mode,
   protobuf, key = customer_id, one customer each, a small taxi cost) published on
   recovery.failure-reported.v1 by a plain producer. An outside reader of case-opened, offer-proposed,
   offer-authorized and approval-requested records when each customer first appears on each; printed: the
   time until all N reached each stage, the rates, their ratio to the raw rate, a curve of 10 time slices,
   who authorised the offers (they should all be authorised by the system: within the automation limit).
3. Latency: 50 single failures one at a time (each waits for its offer-authorized), then a publisher paced
   at half the measured pipeline rate for ~10 s: p50/p99/max of publish -> each stage.
4. gRPC (unless ``--skip-grpc``): intake's Health/Check and ReportFailure with 64 calls in flight for ~5 s
   each, then ReportFailure paced at half its rate for ~5 s: rates, p50/p99, ratio to health.
5. Mass (only with ``--mass N``, e.g. 100000): N failures as fast as possible; the time until every
   customer has an offer-authorized or approval-requested, and the curve every 10 s.

Every scenario prints the peak RSS of each service process (VmRSS from /proc, sampled every second) and the
end prints each one's VmHWM. The client side runs in this process on the same machine, so the figures say
what this machine does with both; no timing is asserted. A stage not reached within ``--timeout`` seconds
(mass: at least N / 20) prints what was reached and exits 1. The system is stopped with Ctrl-C (SIGINT)
at the end, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import math
import os
import re
import signal
import sys
import tempfile
import time
import tomllib
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from recovery.events.v1 import common_pb2 as common
from recovery.events.v1 import events_pb2 as events
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

from services.common import cloudevents
from services.common.errors import UndecodableRecord
from services.common.kafka import ensure_topics
from services.common.settings import KitSettings
from tests.support.frontline import ago, eur, system_failure
from tests.support.outside import daytime_zone
from tests.support.system import System, start_system, stop_system

PARTITIONS = 6
ROOT = Path(__file__).resolve().parents[2]
# The services' consumer batch size (CONSUMER_BATCH_SIZE), used by the raw relays too.
BATCH = getattr(KitSettings(), "batch_size", 200)
FAILURES = "recovery.failure-reported.v1"
OPENED = "recovery.case-opened.v1"
PROPOSED = "recovery.offer-proposed.v1"
AUTHORIZED = "recovery.offer-authorized.v1"
APPROVAL = "recovery.approval-requested.v1"
DEAD_LETTERS = "recovery.deadletter.v1"
STAGES = ("opened", "proposed", "decided")
LABELS = {
    "opened": "case-opened",
    "proposed": "offer-proposed",
    "decided": "offer-authorized or approval-requested",
}
SHORT = {"opened": "case-opened", "proposed": "offer-proposed", "decided": "authorized/approval"}
STAGE_OF = {OPENED: "opened", PROPOSED: "proposed", AUTHORIZED: "decided", APPROVAL: "decided"}
TYPES = {
    OPENED: cloudevents.registry(events.CaseOpened),
    PROPOSED: cloudevents.registry(events.OfferProposed),
    AUTHORIZED: cloudevents.registry(events.OfferAuthorized),
    APPROVAL: cloudevents.registry(events.ApprovalRequested),
}
SERVICES = ("intake", "compensation", "escalation", "followup")
# Categories whose base severity is minor and whose first remedy the automation may grant, spread over three
# owning teams so that the teams' monthly budgets (compensation policy) last for every default scenario.
CATEGORIES = (
    common.CATEGORY_LATE_DELIVERY,  # voucher, logistics-care
    common.CATEGORY_BILLING_ERROR,  # account credit, billing-care
    common.CATEGORY_SERVICE_QUALITY,  # voucher, customer-care
    common.CATEGORY_OTHER,  # voucher, customer-care
)
TAXI_MINOR = 100  # reimbursed in full; with the 5 EUR minimum gesture the offer is 6 EUR, within 30 EUR
AUTOMATION_LIMIT = 3000  # services/escalation/policy.toml [automation] limit; checked against the file at start
_PID = re.compile(r"^(\w+)\s+gRPC \S+\s+metrics \S+\s+pid (\d+)")


class Incomplete(Exception):
    """A stage was not reached in time, or the system stopped: the run prints what it reached and fails."""


# ---------------------------------------------------------------------------------------------- the input


def failure(customer: str, i: int) -> tuple[bytes, list, bytes]:
    """Return one encoded system-detected failure (key, headers, value), as delivery tracking publishes it."""
    message = system_failure(
        customer,
        category=CATEGORIES[i % len(CATEGORIES)],
        reported_costs=[common.CostItem(kind=common.COST_KIND_TAXI, amount=eur(TAXI_MINOR), has_receipt=True)],
        area=common.Area(component=f"hub-{i % 20}", release=f"2026.{i % 7}", team=f"team-{i % 12}"),
    )
    headers, value, _ = cloudevents.encode(message, source="delivery-tracking")
    return customer.encode(), headers, value


class Customers:
    """Fresh customer ids of this run: ``pb-<run>-<scenario>-<n>``, so the reader keeps only the bench's."""

    def __init__(self) -> None:
        self.prefix = f"pb-{uuid.uuid4().hex[:6]}-"

    def batch(self, scenario: str, count: int) -> list[str]:
        return [f"{self.prefix}{scenario}-{n}" for n in range(count)]


# ---------------------------------------------------------------------------------------------- the reader


@dataclass
class Watch:
    """An outside reader of the output topics from the start, keeping only the bench's customers."""

    bootstrap: str
    prefix: bytes
    reached: dict[str, dict[str, float]] = field(default_factory=lambda: {s: {} for s in STAGES})
    tier: dict[str, int] = field(default_factory=dict)  # customer -> AuthorizationTier of the first authorisation
    approval: dict[str, tuple[int, ...]] = field(default_factory=dict)  # customer -> ApprovalReasons
    total: dict[str, int] = field(default_factory=dict)  # customer -> first offer's total (minor units)
    currency: dict[str, str] = field(default_factory=dict)
    flagged: set[str] = field(default_factory=set)  # offers marked budget_exceeded or needs_review
    dead: dict[str, str] = field(default_factory=dict)  # customer -> dead-letter reason
    undecodable: int = 0
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=25
        )
        await self._consumer.start()
        await self._consumer.topics()  # fresh metadata
        partitions = [
            TopicPartition(topic, p)
            for topic in (*STAGE_OF, DEAD_LETTERS)
            for p in self._consumer.partitions_for_topic(topic) or ()
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        for tp in partitions:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    if record.key and record.key.startswith(self.prefix):
                        self._seen(record, now)

    def _seen(self, record, now: float) -> None:
        customer = record.key.decode()
        if record.topic == DEAD_LETTERS:
            reason = cloudevents.header_map(record.headers).get("dlq_reason", b"").decode(errors="replace")
            self.dead.setdefault(customer, reason[:300])
            return
        stage = STAGE_OF[record.topic]
        if customer in self.reached[stage] and stage != "decided":
            return
        self.reached[stage].setdefault(customer, now)
        try:
            _, message = cloudevents.decode(record.headers, record.value, TYPES[record.topic])
        except UndecodableRecord:
            self.undecodable += 1
            return
        if record.topic == PROPOSED:
            self.total[customer] = message.total.amount_minor
            self.currency[customer] = message.total.currency
            if message.budget_exceeded or message.needs_review:
                self.flagged.add(customer)
        elif record.topic == AUTHORIZED:
            self.tier.setdefault(customer, message.tier)
        elif record.topic == APPROVAL:
            self.approval.setdefault(customer, tuple(message.reasons))

    def check(self) -> None:
        """Raise the reader's own failure, if it had one."""
        if self._task and self._task.done():
            self._task.result()


async def until(
    watch: Watch, done: Callable[[], bool], *, deadline: float, process: asyncio.subprocess.Process, what: str
) -> None:
    """Return once ``done()``; raises Incomplete at ``deadline`` or when the system stopped."""
    while not done():
        watch.check()
        if process.returncode is not None:
            raise Incomplete(f"the system exited with code {process.returncode} while waiting for {what}")
        if time.perf_counter() > deadline:
            raise Incomplete(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def all_decided(watch: Watch, customers: Iterable[str]) -> Callable[[], bool]:
    """True once every customer has an offer-authorized or approval-requested; raises Incomplete as soon as
    one of them is dead-lettered (the pipeline refused it: its figures would mean nothing)."""
    wanted = frozenset(customers)
    pending = set(wanted)
    checked = 0

    def done() -> bool:
        nonlocal pending, checked
        if len(watch.dead) > checked:
            new = list(watch.dead)[checked:]
            checked += len(new)
            if dead := [c for c in new if c in wanted]:
                raise Incomplete(f"{dead[0]} was dead-lettered: {watch.dead[dead[0]]}")
        decided = watch.reached["decided"]
        pending = {c for c in pending if c not in decided}
        return not pending

    return done


# ---------------------------------------------------------------------------------------------- memory


class Rss:
    """Samples the service processes' VmRSS every second; ``take()`` returns the peaks since the last take."""

    def __init__(self, pids: dict[str, int], system: System) -> None:
        self.pids = pids
        self.system = system
        self.peaks: dict[str, float] = {}
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peaks[name] = max(self.peaks.get(name, 0.0), status_mib(pid, "VmRSS"))
            del self.system.output[:-2000]  # the services' logs: keep the tail only, for error reports
            await asyncio.sleep(1)

    def take(self) -> dict[str, float]:
        peaks, self.peaks = self.peaks, {}
        return peaks

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def status_mib(pid: int, name: str) -> float:
    """Return a /proc/<pid>/status field (VmRSS, VmHWM) in MiB; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """Return the child process ids of ``pid`` (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def service_pids(runner: int, system: System) -> dict[str, int]:
    """Return each service's pid: from the runner's endpoint lines, else from its child processes."""
    pids = {m[1]: int(m[2]) for line in system.output if (m := _PID.match(line))}
    for child in children(runner):
        args = cmdline(child)
        for name in SERVICES:
            if f"services.{name}" in args:
                pids.setdefault(name, child)
    return {name: pids[name] for name in SERVICES if name in pids}


def print_rss(peaks: dict[str, float], label: str = "peak RSS (MiB, sampled every second)") -> None:
    print(f"  {label}: " + ", ".join(f"{name} {value:.0f}" for name, value in peaks.items()))


# ---------------------------------------------------------------------------------------------- figures


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of ``values``; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def print_latencies(watch: Watch, sent: dict[str, float]) -> None:
    print(f"  {'publish ->':<44}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'n':>7}")
    for stage in STAGES:
        reached = watch.reached[stage]
        values = [(reached[c] - t) * 1000 for c, t in sent.items() if c in reached]
        print(
            f"  {LABELS[stage]:<44}{pct(values, 0.5):>10.0f}{pct(values, 0.99):>10.0f}"
            f"{max(values, default=math.nan):>10.0f}{len(values):>7}"
        )


def print_curve(watch: Watch, customers: list[str], sent: dict[str, float], t0: float, times: list[float]) -> None:
    """For each time since the first publish, how many customers were published and had reached each stage."""
    print(f"  {'t (s)':>8}{'published':>11}" + "".join(f"{SHORT[s]:>22}" for s in STAGES))
    offsets = {
        "published": sorted(sent[c] - t0 for c in customers if c in sent),
        **{s: sorted(watch.reached[s][c] - t0 for c in customers if c in watch.reached[s]) for s in STAGES},
    }
    for t in times:
        counts = [_count_upto(offsets[k], t) for k in ("published", *STAGES)]
        print(f"  {t:>8.1f}{counts[0]:>11}" + "".join(f"{n:>22}" for n in counts[1:]))


def _count_upto(ordered: list[float], t: float) -> int:
    return bisect.bisect_right(ordered, t + 1e-9)


def print_outcome(watch: Watch, customers: list[str]) -> None:
    """Say who authorised the offers and what they were, to check the scenario went the intended way."""
    tiers = Counter(common.AuthorizationTier.Name(watch.tier[c]) for c in customers if c in watch.tier)
    reasons = Counter(
        common.ApprovalReason.Name(r) for c in customers if c in watch.approval for r in watch.approval[c]
    )
    approvals = sum(1 for c in customers if c in watch.approval)
    totals = [watch.total[c] for c in customers if c in watch.total]
    currencies = sorted({watch.currency[c] for c in customers if c in watch.currency})
    flagged = sum(1 for c in customers if c in watch.flagged)
    dead = [c for c in customers if c in watch.dead]
    tier_text = ", ".join(f"{n} {t.removeprefix('AUTHORIZATION_TIER_').lower()}" for t, n in tiers.items()) or "none"
    print(
        f"  offers: {len(totals)}, totals {min(totals, default=0)}..{max(totals, default=0)} "
        f"{'/'.join(currencies)} minor units (automation limit {AUTOMATION_LIMIT}); flagged {flagged}"
    )
    print(
        f"  offer-authorized by tier: {tier_text}; approval-requested: {approvals}"
        + (f" ({', '.join(f'{r} {n}' for r, n in reasons.items())})" if reasons else "")
    )
    if dead:
        print(f"  dead-lettered: {len(dead)}, e.g. {watch.dead[dead[0]]}")
    if watch.undecodable:
        print(f"  undecodable records of bench customers: {watch.undecodable}")


def print_reached(watch: Watch, customers: list[str], t0: float) -> None:
    """Print, per stage, how many of ``customers`` reached it and when the last did (since ``t0``)."""
    n = len(customers)
    print(f"  {'stage':<44}{'reached':>9}{'all by (s)':>12}{'records/s':>11}")
    for stage in STAGES:
        reached = [watch.reached[stage][c] - t0 for c in customers if c in watch.reached[stage]]
        last = max(reached, default=math.nan)
        complete = len(reached) == n
        print(
            f"  {LABELS[stage]:<44}{len(reached):>9}{(last if complete else math.nan):>12.1f}"
            f"{(n / last if complete and last > 0 else math.nan):>11.0f}"
        )


# ---------------------------------------------------------------------------------------------- raw baseline


async def relay(bootstrap: str, source: str, target: str, table: str, group: str) -> None:
    """One raw hop: batch from ``source``, one transaction inserting the batch into ``table``, then produce."""
    conn = await asyncpg.connect(os.environ["BENCH_DATABASE_URL"])
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5)
    await consumer.start()
    await producer.start()
    insert = (
        f"INSERT INTO {table} (event_id, customer_id, body) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) ON CONFLICT DO NOTHING"
    )
    ready = False
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            if not ready and consumer.assignment():
                print("ready", flush=True)
                ready = True
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            ids = [cloudevents.header_map(r.headers).get("ce_id", b"").decode() for r in records]
            async with conn.transaction():
                await conn.execute(insert, ids, [r.key.decode() for r in records], [r.value for r in records])
            sends = [await producer.send(target, r.value, key=r.key, headers=list(r.headers)) for r in records]
            await asyncio.gather(*sends)
            await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()
        await conn.close()


async def raw_rate(system: System, customers: list[str]) -> tuple[float, float, dict[str, float]]:
    """Return (records/s, seconds, relay RSS peaks) of the raw three-hop chain for these customers' failures."""
    run = uuid.uuid4().hex[:8]
    topics = [f"bench.pipeline.{run}.hop{i}" for i in range(4)]
    schema = f"bench_pipeline_{run}"
    await ensure_topics(KitSettings(kafka_bootstrap_servers=system.kafka, topic_partitions=PARTITIONS), topics)
    conn = await asyncpg.connect(system.database_url)
    await conn.execute(f"CREATE SCHEMA {schema}")
    for hop in (1, 2, 3):
        await conn.execute(
            f"CREATE TABLE {schema}.hop{hop} (event_id text PRIMARY KEY, customer_id text NOT NULL, "
            "body bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"
        )
    relays: list[asyncio.subprocess.Process] = []
    peaks: dict[str, float] = {}
    try:
        env = os.environ | {"BENCH_DATABASE_URL": system.database_url}
        for hop in (1, 2, 3):
            relays.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.bench.pipeline",
                    "--relay",
                    system.kafka,
                    topics[hop - 1],
                    topics[hop],
                    f"{schema}.hop{hop}",
                    f"bench-relay-{run}-{hop}",
                    env=env,
                    cwd=ROOT,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        try:
            async with asyncio.timeout(120):
                for process in relays:
                    if (await process.stdout.readline()).strip() != b"ready":
                        raise Incomplete("a raw relay stopped before it was ready")
        except TimeoutError:
            raise Incomplete("the raw relays were not ready within 120 s") from None
        end = AIOKafkaConsumer(bootstrap_servers=system.kafka, enable_auto_commit=False, fetch_max_wait_ms=25)
        await end.start()
        try:
            await end.topics()
            partitions = [TopicPartition(topics[3], p) for p in end.partitions_for_topic(topics[3]) or ()]
            end.assign(partitions)
            await end.seek_to_beginning(*partitions)
            for tp in partitions:
                await end.position(tp)
            records = [failure(c, i) for i, c in enumerate(customers)]
            producer = AIOKafkaProducer(bootstrap_servers=system.kafka, acks="all", enable_idempotence=False)
            await producer.start()
            try:
                started = time.perf_counter()
                sends = [await producer.send(topics[0], v, key=k, headers=h) for k, h, v in records]
                seen = 0
                deadline = time.perf_counter() + 300
                while seen < len(records):
                    if time.perf_counter() > deadline or any(p.returncode is not None for p in relays):
                        raise Incomplete(f"the raw relay chain passed {seen} of {len(records)} records")
                    batch = await end.getmany(timeout_ms=100, max_records=10_000)
                    seen += sum(len(rs) for rs in batch.values())
                    for i, process in enumerate(relays, 1):
                        peaks[f"relay {i}"] = max(peaks.get(f"relay {i}", 0), status_mib(process.pid, "VmRSS"))
                elapsed = time.perf_counter() - started
                await asyncio.gather(*sends)
            finally:
                await producer.stop()
        finally:
            await end.stop()
        return len(customers) / elapsed, elapsed, peaks
    finally:
        for process in relays:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in relays:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 30)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


# ---------------------------------------------------------------------------------------------- batches seen


def scrape(port: int) -> dict[tuple[str, str], float]:
    """Return each consumer topic's batch count, batch seconds and records from a service's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            topic_name = sample.labels.get("topic", "")
            if sample.name == "recovery_consumer_batch_duration_seconds_count":
                found[(topic_name, "batches")] += sample.value
            elif sample.name == "recovery_consumer_batch_duration_seconds_sum":
                found[(topic_name, "seconds")] += sample.value
            elif sample.name == "recovery_records_consumed_total":
                found[(topic_name, "records")] += sample.value
    return dict(found)


async def scrape_all(system: System) -> dict[str, dict[tuple[str, str], float]]:
    return {name: await asyncio.to_thread(scrape, port) for name, port in sorted(system.metrics_ports.items())}


def print_batches(before: dict, after: dict, seconds: float) -> None:
    """Print, per service and input topic, the batches a scenario made: how many, how large, how long."""
    print(f"  consumer batches (from each service's metrics; busy = batch time / the scenario's {seconds:.1f} s):")
    print(f"    {'service':<14}{'topic':<34}{'batches':>8}{'records':>9}{'per batch':>10}{'ms/batch':>9}"
          f"{'ms/record':>10}{'busy':>7}")  # fmt: skip
    for name, now in after.items():
        then = before.get(name, {})
        for topic_name in sorted({t for t, _ in now}):
            delta = {k: now.get((topic_name, k), 0) - then.get((topic_name, k), 0) for k in ("batches", "seconds")}
            delta["records"] = now.get((topic_name, "records"), 0) - then.get((topic_name, "records"), 0)
            if not delta["batches"]:
                continue
            print(
                f"    {name:<14}{topic_name:<34}{delta['batches']:>8.0f}{delta['records']:>9.0f}"
                f"{delta['records'] / delta['batches']:>10.1f}{1000 * delta['seconds'] / delta['batches']:>9.1f}"
                f"{1000 * delta['seconds'] / max(delta['records'], 1):>10.2f}{delta['seconds'] / seconds:>7.0%}"
            )


def cpu_seconds(runner: int, data_dir: Path) -> Counter:
    """Return the CPU seconds (user + system) used so far by each part of the system under ``runner``: each
    service, the broker, PostgreSQL (all its processes: pg_ctl detaches the server, so it is found by its data
    directory), the runner itself, and this benchmark process."""
    used: Counter = Counter()
    tick = os.sysconf("SC_CLK_TCK")
    servers = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and str(data_dir) in " ".join(cmdline(int(p.name)))
    ]
    todo, seen = [runner, *servers], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += children(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        args = " ".join(cmdline(pid))
        part = next((name for name in SERVICES if f"services.{name}" in args), None)
        if part is None:
            part = "broker" if "tansu" in args else "postgres" if "postgres" in args else "runner"
        used[part] += (int(fields[11]) + int(fields[12])) / tick
    mine = os.times()
    used["bench (client)"] = mine.user + mine.system
    return used


def print_cpu(before: Counter, after: Counter, records: int, seconds: float) -> None:
    """Print each part's CPU time over a scenario: per record and as a share of the machine's cores."""
    cores = os.cpu_count() or 1
    parts = sorted(after, key=lambda p: -(after[p] - before[p]))
    total = sum(after[p] - before[p] for p in parts)
    print(
        f"  CPU (user + system) over {seconds:.1f} s: {total:.1f} s = {total / seconds / cores:.0%} of {cores} cores, "
        f"{1000 * total / max(records, 1):.2f} ms per failure"
    )
    shares = ", ".join(f"{p} {1000 * (after[p] - before[p]) / max(records, 1):.2f}" for p in parts)
    print(f"    ms per failure: {shares}")


# ---------------------------------------------------------------------------------------------- the pipeline


@dataclass
class Bench:
    process: asyncio.subprocess.Process
    system: System
    watch: Watch
    producer: AIOKafkaProducer
    customers: Customers
    rss: Rss
    timeout: float
    data_dir: Path

    async def publish(self, records: list[tuple[bytes, list, bytes]], sent: dict[str, float]) -> float:
        """Publish the records as fast as the producer takes them, noting when each customer's was sent;
        returns when the broker had acknowledged them all."""
        sends = []
        for key, headers, value in records:
            sent[key.decode()] = time.perf_counter()
            sends.append(await self.producer.send(FAILURES, value, key=key, headers=headers))
        await asyncio.gather(*sends)
        return time.perf_counter()

    async def throughput(self, count: int, raw: float, *, scenario: str = "run", every: float | None = None) -> float:
        """Publish ``count`` failures at once; print the stage times, the rates and the curve; return the rate."""
        customers = self.customers.batch(scenario, count)
        records = [failure(c, i) for i, c in enumerate(customers)]  # encoded before the clock starts
        sent: dict[str, float] = {}
        batches, cpu = await scrape_all(self.system), cpu_seconds(self.process.pid, self.data_dir)
        t0 = time.perf_counter()
        deadline = t0 + self.timeout
        published = asyncio.create_task(self.publish(records, sent))
        error: Incomplete | None = None
        acked = math.nan
        try:
            await until(self.watch, published.done, deadline=deadline, process=self.process, what="publishing")
            acked = await published - t0
            await until(
                self.watch,
                all_decided(self.watch, customers),
                deadline=deadline,
                process=self.process,
                what=f"{count} offers authorised or sent to approval",
            )
        except Incomplete as exc:
            error = exc
        elapsed = time.perf_counter() - t0
        print(
            f"\n{scenario}: {count} system-detected failures published and acknowledged in {acked:.2f} s "
            f"({count / acked:.0f}/s)" + (f"; INCOMPLETE after {elapsed:.0f} s: {error}" if error else "")
        )
        print_reached(self.watch, customers, t0)
        decided = [self.watch.reached["decided"][c] - t0 for c in customers if c in self.watch.reached["decided"]]
        rate = count / max(decided) if len(decided) == count and max(decided) > 0 else math.nan
        if math.isnan(rate):
            print(f"  pipeline rate: not measured (not every offer was decided); raw relay chain {raw:.0f} records/s")
        else:
            print(f"  pipeline {rate:.0f} records/s = {rate / raw:.1%} of the raw relay chain's {raw:.0f} records/s")
        print_outcome(self.watch, customers)
        span = max(decided, default=0) if not error else elapsed
        step = every or max(span / 10, 0.1)
        times = [step * k for k in range(1, max(1, math.ceil(span / step - 1e-9)) + 1)]
        print(f"  per-stage curve (customers reached by t since the first publish, {len(times)} slices):")
        print_curve(self.watch, customers, sent, t0, times)
        print_cpu(cpu, cpu_seconds(self.process.pid, self.data_dir), count, span)
        print_batches(batches, await scrape_all(self.system), span)
        print_rss(self.rss.take())
        if error:
            raise error
        return rate

    async def singles(self, count: int) -> None:
        """Publish one failure at a time, each once the previous one's offer was decided."""
        customers = self.customers.batch("single", count)
        sent: dict[str, float] = {}
        error = None
        try:
            for i, customer in enumerate(customers):
                key, headers, value = failure(customer, i)
                sent[customer] = time.perf_counter()
                await self.producer.send_and_wait(FAILURES, value, key=key, headers=headers)
                await until(
                    self.watch,
                    all_decided(self.watch, [customer]),
                    deadline=time.perf_counter() + min(self.timeout, 120),
                    process=self.process,
                    what=f"single failure {i + 1} of {count}",
                )
        except Incomplete as exc:
            error = exc
        print(
            f"\nidle latency: {count} failures one at a time, each after the previous one's offer was decided"
            + (f"; INCOMPLETE: {error}" if error else "")
        )
        print_latencies(self.watch, sent)
        print_outcome(self.watch, customers)
        print_rss(self.rss.take())
        if error:
            raise error

    async def paced(self, rate: float, seconds: float) -> None:
        """Publish at ``rate`` per second for ``seconds``; print the latencies once every offer was decided."""
        count = max(1, round(rate * seconds))
        customers = self.customers.batch("paced", count)
        sent: dict[str, float] = {}
        sends = []
        batches, cpu = await scrape_all(self.system), cpu_seconds(self.process.pid, self.data_dir)
        start = time.perf_counter()
        for i, customer in enumerate(customers):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key, headers, value = failure(customer, i)
            sent[customer] = time.perf_counter()
            sends.append(await self.producer.send(FAILURES, value, key=key, headers=headers))
        await asyncio.gather(*sends)
        took = time.perf_counter() - start
        error = None
        try:
            await until(
                self.watch,
                all_decided(self.watch, customers),
                deadline=time.perf_counter() + self.timeout,
                process=self.process,
                what=f"{count} paced failures",
            )
        except Incomplete as exc:
            error = exc
        print(
            f"\nlatency at half the pipeline rate: {count} failures over {took:.1f} s ({count / took:.1f}/s)"
            + (f"; INCOMPLETE: {error}" if error else "")
        )
        print_latencies(self.watch, sent)
        print_outcome(self.watch, customers)
        print_cpu(cpu, cpu_seconds(self.process.pid, self.data_dir), count, time.perf_counter() - start)
        print_batches(batches, await scrape_all(self.system), time.perf_counter() - start)
        print_rss(self.rss.take())
        if error:
            raise error

    async def grpc(self, in_flight: int = 64, seconds: float = 5.0) -> None:
        """Intake's gRPC: Health/Check and ReportFailure with ``in_flight`` calls, then ReportFailure paced."""
        port = self.system.grpc_ports["intake"]
        metadata = self.system.token(sub="bench-agent-1", role="agent", team="front-desk")
        counter = iter(range(10**12))

        def request() -> intake_pb2.ReportFailureRequest:
            n = next(counter)
            return intake_pb2.ReportFailureRequest(
                request_id=f"req-{uuid.uuid4().hex}",
                customer_id=f"{self.customers.prefix}grpc-{n}",
                reference=f"order-grpc-{n}",
                category=common.CATEGORY_LATE_DELIVERY,
                occurred_at=ago(hours=1),
                description="parcel missed its delivery slot; the customer called",
                reported_costs=[common.CostItem(kind=common.COST_KIND_TAXI, amount=eur(TAXI_MINOR), has_receipt=True)],
                avoidability=common.AVOIDABILITY_UNAVOIDABLE,
                order_value=eur(3_000),
                customer_timezone=daytime_zone(),
                preferred_channel=common.CHANNEL_EMAIL,
            )

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            intake = intake_pb2_grpc.IntakeServiceStub(channel)
            check = lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=30)  # noqa: E731
            report = lambda: intake.ReportFailure(request(), metadata=metadata, timeout=30)  # noqa: E731
            await _closed_loop(check, in_flight, 0.5)  # warm the channel up
            health_rate, health_lat, health_err = await _closed_loop(check, in_flight, seconds)
            report_rate, report_lat, report_err = await _closed_loop(report, in_flight, seconds)
            paced_rate = report_rate / 2
            paced_lat, paced_err, paced_took = await _open_loop(report, paced_rate, seconds)
        print(f"\ngRPC against intake (127.0.0.1:{port}), {in_flight} calls in flight, ~{seconds:.0f} s each")
        print(f"  {'call':<44}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
        rows = (
            ("grpc.health.v1 Health/Check (baseline)", health_rate, health_lat, health_err),
            ("IntakeService/ReportFailure", report_rate, report_lat, report_err),
            (f"ReportFailure paced at {paced_rate:.0f}/s", len(paced_lat) / paced_took, paced_lat, paced_err),
        )
        for label, rate, latencies, errors in rows:
            text = ", ".join(f"{code} {n}" for code, n in errors.items()) or "0"
            print(f"  {label:<44}{rate:>10.0f}{pct(latencies, 0.5):>10.1f}{pct(latencies, 0.99):>10.1f}{text:>8}")
        print(f"  ReportFailure at {report_rate / health_rate:.1%} of the health-check rate")
        print_rss(self.rss.take())

    async def drain(self) -> None:
        """Wait (bounded) until every bench customer reported so far has had its offer decided."""
        watch = self.watch

        def everyone() -> list[str]:
            decided, dead = watch.reached["decided"], watch.dead
            return [c for c in watch.reached["opened"] if c not in decided and c not in dead]

        started = time.perf_counter()
        with contextlib.suppress(Incomplete):
            await until(
                self.watch,
                lambda: not everyone(),
                deadline=started + min(self.timeout, 300),
                process=self.process,
                what="earlier cases to drain",
            )
        left = everyone()
        print(
            f"\n(drained the earlier scenarios' cases in {time.perf_counter() - started:.1f} s"
            + (f"; {len(left)} still without a decided offer)" if left else ")")
        )


async def _closed_loop(call, in_flight: int, seconds: float) -> tuple[float, list[float], Counter]:
    """Run ``call`` from ``in_flight`` workers for ``seconds``; return (calls/s, latencies ms, errors by code)."""
    latencies: list[float] = []
    errors: Counter = Counter()
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            began = time.perf_counter()
            try:
                await call()
                latencies.append((time.perf_counter() - began) * 1000)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return len(latencies) / (time.perf_counter() - started), latencies, errors


async def _open_loop(call, rate: float, seconds: float) -> tuple[list[float], Counter, float]:
    """Start ``call`` ``rate`` times a second for ``seconds``; return (latencies ms, errors by code, duration)."""
    latencies: list[float] = []
    errors: Counter = Counter()

    async def one() -> None:
        began = time.perf_counter()
        try:
            await call()
            latencies.append((time.perf_counter() - began) * 1000)
        except grpc.aio.AioRpcError as error:
            errors[error.code().name] += 1

    tasks = []
    start = time.perf_counter()
    for i in range(max(1, round(rate * seconds))):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, errors, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- the run


def automation_limit() -> int:
    """Return escalation's automation limit from its shipped policy (the offers must stay within it)."""
    return int(tomllib.loads((ROOT / "services/escalation/policy.toml").read_text())["automation"]["limit"])


async def run(args: argparse.Namespace) -> int:
    if (limit := automation_limit()) != AUTOMATION_LIMIT:
        print(f"note: escalation's automation limit is now {limit}, not {AUTOMATION_LIMIT}")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-", ignore_cleanup_errors=True) as tmp:
        began = time.perf_counter()
        try:
            process, system = await start_system(Path(tmp), {"TOPIC_PARTITIONS": str(PARTITIONS)})
        except BaseException:
            await _stop_orphans()
            raise
        try:
            print(
                f"pipeline benchmark: {PARTITIONS} partitions, {os.cpu_count()} cores, "
                f"the system up in {time.perf_counter() - began:.0f} s"
            )
            return await scenarios(process, system, args, Path(tmp))
        except Incomplete as error:
            problems = [line.rstrip() for line in system.output if '"ERROR"' in line or "Traceback" in line]
            print(f"\nbenchmark incomplete: {error}", file=sys.stderr)
            if problems:
                print("last errors in the system's log:\n" + "\n".join(problems[-10:])[-4000:], file=sys.stderr)
            return 1
        finally:
            code = await stop_system(process)
            print(f"\nsystem stopped (exit code {code}); the whole run took {time.perf_counter() - began:.0f} s")


async def _stop_orphans() -> None:
    """Ctrl-C a runner left behind when start_system gave up (our own child, found by its id)."""
    runners = [pid for pid in children(os.getpid()) if cmdline(pid)[1:3] == ["-m", "services"]]
    for pid in runners:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    for _ in range(240):  # up to 2 minutes; the asyncio child watcher reaps it
        if not _alive(runners):
            break
        await asyncio.sleep(0.5)


def _alive(pids: list[int]) -> bool:
    return any(Path(f"/proc/{pid}").exists() for pid in pids)


async def scenarios(
    process: asyncio.subprocess.Process, system: System, args: argparse.Namespace, data_dir: Path
) -> int:
    pids = service_pids(process.pid, system)
    customers = Customers()
    raw, raw_s, relay_peaks = await raw_rate(system, customers.batch("raw", args.count))
    print(
        f"\nraw baseline: {args.count} records through 3 aiokafka relay processes (getmany <= {BATCH}, one Postgres "
        f"transaction per batch, produce acks=all, commit): {raw:.0f} records/s ({raw_s:.2f} s)"
    )
    print_rss(relay_peaks, "relay peak RSS (MiB)")
    watch = Watch(system.kafka, customers.prefix.encode())
    await watch.start()
    producer = AIOKafkaProducer(bootstrap_servers=system.kafka, acks="all", enable_idempotence=False)
    await producer.start()
    rss = Rss(pids, system)
    bench = Bench(process, system, watch, producer, customers, rss, args.timeout, data_dir)
    try:
        rate = await bench.throughput(args.count, raw)
        await bench.singles(50)
        await bench.paced(10.0 if math.isnan(rate) else rate / 2, 10.0)
        if not args.skip_grpc:
            await bench.grpc()
        if args.mass and not args.skip_mass:
            await bench.drain()
            bench.timeout = max(args.timeout, args.mass / 20)
            await bench.throughput(args.mass, raw, scenario="mass", every=10.0)
        print(
            "\nVmHWM (MiB, each service's peak since it started): "
            + ", ".join(f"{name} {status_mib(pid, 'VmHWM'):.0f}" for name, pid in pids.items())
        )
        return 0
    finally:
        await rss.stop()
        await producer.stop()
        await watch.stop()


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--relay":  # a raw relay process of the baseline
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay(*sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="failures in the throughput run (default 2000)")
    parser.add_argument("--mass", type=int, default=0, help="failures in the mass scenario (default 0: skip it)")
    parser.add_argument("--skip-grpc", action="store_true", help="skip the gRPC scenario")
    parser.add_argument("--skip-mass", action="store_true", help="skip the mass scenario even with --mass")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a scenario may take (default 600)")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
