"""Faults while a stream of failure reports runs: every test injects one kind, then checks the invariants.

Run with `make test-faults` (prints what was injected and the invariant counts). One cluster serves the
module; each test drives its own customers, so the invariants of one stream are not blurred by another.
"""

from __future__ import annotations

import asyncio
import random
import signal
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from recovery.escalation.v1 import escalation_pb2 as cases
from recovery.escalation.v1 import escalation_pb2_grpc
from recovery.events.v1 import common_pb2 as common
from recovery.events.v1 import events_pb2 as events
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

from services.__main__ import SERVICES
from services.common.grpc_server import LIVENESS
from services.common.settings import KitSettings
from services.common.wire import time_to_proto
from tests.faults.harness import Cluster, Report, Stream, followup_invariants, invariants, log, read_topic, settled
from tests.integration.conftest import eventually
from tests.support.running import TEST_JWT_SECRET, bearer

pytestmark = pytest.mark.faults

SESSION_TIMEOUT = KitSettings().consumer_session_timeout_seconds
# Each stream: ten thousand reports at a few hundred a second, over enough customers that merges stay a
# minority (every third report of a customer shares an order with the one before it).
REPORTS = 10_000
RATE = 400
CUSTOMERS = 2_000


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory):
    running = Cluster(tmp_path_factory.mktemp("faults"))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def drive(cluster: Cluster, stream: Stream, *, count: int, rate: float, poison_every: int, faults) -> Report:
    """Run the stream while ``faults(stream)`` injects; once settled, check and print the invariants."""
    running = asyncio.create_task(stream.run(cluster.bootstrap, count, rate=rate, poison_every=poison_every))
    try:
        await faults(stream)
        await running
    finally:
        if not running.done():
            running.cancel()
    await settled(cluster, stream)
    report = await invariants(cluster, stream)
    log(f"invariants: {report}")
    return report


def staff(sub: str, role: str, team: str) -> list[tuple[str, str]]:
    return bearer(KitSettings(jwt_secret=TEST_JWT_SECRET), sub=sub, role=role, team=team)


async def resolve_all(cluster: Cluster, stream: Stream, limit: int) -> list[str]:
    """Claim and resolve up to ``limit`` of the stream's queued cases, each by its own agent of the case's team.

    A queued case whose flagged offer already went to a reviewer is left out: its claimer inherits the approval
    in flight, and a case awaiting approval cannot be resolved (a decision comes first)."""
    conn = await asyncpg.connect(cluster.database_url)
    try:
        rows = await conn.fetch(
            "SELECT case_id, team FROM escalation.cases WHERE customer_id = ANY($1) AND state = 'queued'"
            " AND pending_approval_id = '' ORDER BY case_id LIMIT $2",
            stream.all_customers(),
            limit,
        )
    finally:
        await conn.close()
    port = cluster.replicas[("escalation", 0)].grpc_port
    resolved = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = escalation_pb2_grpc.CaseServiceStub(channel)
        for row in rows:
            who = staff(f"{stream.prefix}-agent-{row['case_id'][-8:]}", "agent", row["team"])
            claimed = await stub.ClaimCase(
                cases.ClaimCaseRequest(request_id=f"claim-{row['case_id']}", case_id=row["case_id"]),
                metadata=who,
                timeout=30,
            )
            if claimed.case.state == cases.CASE_STATE_AWAITING_APPROVAL:
                continue  # its offer went to a reviewer between the query and the claim
            resolved.append(row["case_id"])
            await stub.ResolveCase(
                cases.ResolveCaseRequest(
                    request_id=f"resolve-{row['case_id']}", case_id=row["case_id"], resolution_summary="delivered"
                ),
                metadata=who,
                timeout=30,
            )
    return resolved


async def test_1_kill_9_each_service_in_turn_and_restart_it(cluster):
    rng = random.Random(1)

    async def faults(stream: Stream) -> None:
        restarts = []
        for name in SERVICES:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            await cluster.kill(name, sig=signal.SIGKILL)
            log(f"kill -9 {name} after {stream.published} reports; restarting it")
            restarts.append(asyncio.create_task(cluster.start_service(name)))
        await asyncio.gather(*restarts)

    report = await drive(
        cluster, Stream(seed=1, customers=CUSTOMERS), count=REPORTS, rate=RATE, poison_every=101, faults=faults
    )
    assert not report.broken, str(report)


async def test_2_two_replicas_one_killed_mid_batch_the_survivor_takes_over(cluster):
    for name in ("intake", "compensation"):
        await cluster.start_service(name, index=1)
    log("second replicas of intake and compensation started (each group shares its partitions)")

    async def faults(stream: Stream) -> None:
        await asyncio.sleep(4.0)
        for name in ("intake", "compensation"):
            await cluster.kill(name, index=0, sig=signal.SIGKILL)
        log(f"kill -9 intake-0 and compensation-0 after {stream.published} reports: replicas 1 take their partitions")

    stream = Stream(seed=2, customers=CUSTOMERS)
    try:
        report = await drive(cluster, stream, count=REPORTS, rate=RATE, poison_every=0, faults=faults)
    finally:
        for name in ("intake", "compensation"):  # back to one replica each, as the other tests expect
            await cluster.start_service(name, index=0)
            await cluster.kill(name, index=1, sig=signal.SIGTERM)
    assert not report.broken, str(report)


async def test_3_the_broker_paused_past_the_session_timeout_then_resumed(cluster):
    pause = SESSION_TIMEOUT + 5

    async def faults(stream: Stream) -> None:
        await asyncio.sleep(3.0)
        cluster.pause_broker()
        log(
            f"SIGSTOP broker after {stream.published} reports, for {pause:.0f} s"
            f" (session timeout {SESSION_TIMEOUT:.0f} s)"
        )
        await asyncio.sleep(pause)
        cluster.resume_broker()
        log("SIGCONT broker")

    report = await drive(
        cluster, Stream(seed=3, customers=CUSTOMERS), count=REPORTS, rate=RATE, poison_every=0, faults=faults
    )
    assert sorted(cluster.alive()) == sorted(f"{n}-0" for n in SERVICES), "a service died while the broker was paused"
    assert not report.broken, str(report)


async def history_call(cluster: Cluster, customer: str) -> grpc.aio.AioRpcError | None:
    """Call intake's GetCustomerHistory; return the error, or None when it answered."""
    port = cluster.replicas[("intake", 0)].grpc_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await intake_pb2_grpc.IntakeServiceStub(channel).GetCustomerHistory(
                intake_pb2.GetCustomerHistoryRequest(customer_id=customer),
                metadata=staff("faults-agent", "agent", "care"),
                timeout=15,
            )
        except grpc.aio.AioRpcError as error:
            return error
    return None


SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def _health_is(cluster: Cluster, service: str, status: int) -> bool:
    port = cluster.replicas[("intake", 0)].grpc_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return reply.status == status


async def _answered(cluster: Cluster, customer: str) -> bool:
    return await history_call(cluster, customer) is None


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """Return the RetryInfo delay the error carries, in seconds (None without one)."""
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


async def test_4_postgres_restarted_and_connections_dropped_mid_transaction(cluster):
    outage: dict[str, object] = {}

    async def faults(stream: Stream) -> None:
        await asyncio.sleep(3.0)
        log(f"Postgres stopped (immediate) after {stream.published} reports, down 5 s")
        await asyncio.to_thread(cluster.postgres.stop, "immediate")  # a crash, not a polite shutdown
        # While it is down a caller is told to retry (UNAVAILABLE with RetryInfo), not that the server broke.
        outage["during"] = await history_call(cluster, stream.customer(0))
        # Not ready, yet alive: the pods would leave the load balancer but never be restarted for it.
        outage["not_ready"] = await eventually(lambda: _health_is(cluster, "", NOT_SERVING), timeout=10)
        outage["alive"] = await _health_is(cluster, LIVENESS, SERVING)
        await asyncio.sleep(5.0)
        await asyncio.to_thread(cluster.postgres.start)
        log("Postgres back")
        # The pool reconnects on its own: the same call answers again.
        outage["after"] = await eventually(lambda: _answered(cluster, stream.customer(0)), timeout=30, interval=0.5)
        await asyncio.sleep(3.0)
        for _ in range(3):
            dropped = await cluster.drop_connections()
            log(f"terminated {dropped} service connections after {stream.published} reports")
            await asyncio.sleep(1.5)

    report = await drive(
        cluster, Stream(seed=4, customers=CUSTOMERS), count=REPORTS, rate=RATE, poison_every=0, faults=faults
    )
    assert sorted(cluster.alive()) == sorted(f"{n}-0" for n in SERVICES), "a service died with its database"
    assert not report.broken, str(report)
    during = outage["during"]
    assert during is not None and during.code() == grpc.StatusCode.UNAVAILABLE, during
    assert retry_delay(during) == 1.0 and "retry" in during.details()
    assert outage["not_ready"] is True and outage["alive"] is True
    assert outage["after"] is True  # answered again once Postgres was back


async def test_5_schedulers_stopped_while_follow_ups_and_sla_timers_come_due(cluster):
    # One report per customer: a resolved case's follow-ups must not be held by another open case of its customer.
    stream = Stream(seed=5, customers=REPORTS)
    report = await drive(cluster, stream, count=REPORTS, rate=RATE, poison_every=0, faults=lambda s: asyncio.sleep(0))
    resolved = await resolve_all(cluster, stream, limit=60)
    # A frontline case nobody acknowledges: its acknowledgement deadline (15 s in this policy) comes due too.
    customer = f"{stream.prefix}-sla"
    port = cluster.replicas[("intake", 0)].grpc_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await intake_pb2_grpc.IntakeServiceStub(channel).ReportFailure(
            intake_pb2.ReportFailureRequest(
                request_id=f"{stream.prefix}-sla-report",
                customer_id=customer,
                reference=f"{stream.prefix}-lamp",
                category=common.CATEGORY_DAMAGED_ITEM,
                occurred_at=time_to_proto(datetime.now(UTC) - timedelta(hours=1)),
                description="the lamp arrived broken",
                order_value=common.Money(amount_minor=6_000, currency="EUR"),
            ),
            metadata=staff(f"{stream.prefix}-agent", "agent", "care"),
            timeout=30,
        )
    for name in ("followup", "escalation"):
        await cluster.kill(name, sig=signal.SIGKILL)
    log(f"kill -9 followup and escalation right after resolving {len(resolved)} cases and opening an SLA case")
    await asyncio.sleep(20.0)  # every follow-up (3 s and 6 s) and the 15 s acknowledgement deadline pass
    for name in ("escalation", "followup"):
        await cluster.start_service(name)
    log("schedulers restarted 20 s later")

    async def fired() -> bool:
        conn = await asyncpg.connect(cluster.database_url)
        try:
            pending = await conn.fetchval(
                "SELECT count(*) FROM followup.followups WHERE case_id = ANY($1) AND status = 'pending'", resolved
            )
            breached = await conn.fetchval(
                "SELECT count(*) FROM escalation.sla_clocks WHERE case_id = $1 AND status = 'breached'", reply.case_id
            )
            return pending == 0 and breached == 1
        finally:
            await conn.close()

    await eventually(fired, timeout=90, interval=1.0)
    await asyncio.sleep(3.0)  # a second emission, if there were one, would be on the wire by now
    await followup_invariants(cluster, resolved, report)
    breaches = await read_topic(cluster.bootstrap, "recovery.sla-breached.v1", {customer})
    ids = {dict(r.headers)["ce_id"] for r in breaches}
    kinds = [events.SlaBreached.FromString(r.value).clock for r in breaches]
    report.check("the missed deadline fired once", len(ids) == 1 and kinds[0] == common.SLA_CLOCK_ACKNOWLEDGE)
    report.counts["sla_breaches"] = len(ids)
    log(f"invariants: {report}")
    assert not report.broken, str(report)


async def test_6_poison_records_are_dead_lettered_and_their_partitions_keep_flowing(cluster):
    async def faults(stream: Stream) -> None:
        await asyncio.sleep(0)

    stream = Stream(seed=6, customers=500)  # few customers: every partition carries many poison records' neighbours
    report = await drive(cluster, stream, count=REPORTS, rate=RATE, poison_every=7, faults=faults)
    log(f"{len(stream.poison)} poison records among {stream.published}")
    assert len(stream.poison) > 1_000
    assert not report.broken, str(report)
