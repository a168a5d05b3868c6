"""A real Prometheus (Debian's binary) scraping the running system with the real rule files.

It scrapes every service's metrics port with the `service` label deploy/prometheus/prometheus.yml gives it,
evaluates deploy/prometheus/rules/*.yml every second, and is asked only over its HTTP API, as Grafana and
an SRE ask it. A record intake cannot decode makes the dead-letter alert fire end to end.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
import uuid

import grpc
import pytest
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.embedded import free_port
from services.common.metrics import project_version
from tests.support.frontline import system_failure
from tests.support.metrics_catalogue import PROMETHEUS_DIR
from tests.support.outside import new_id
from tests.support.prometheus_tools import load_rules, prometheus_tool

pytestmark = pytest.mark.e2e

SERVICES = ("intake", "escalation", "compensation", "followup")
RULE_FILES = [PROMETHEUS_DIR / "rules" / "recording.yml", PROMETHEUS_DIR / "rules" / "alerts.yml"]


class Prometheus:
    """A Prometheus server on a free port, asked over its HTTP API."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def _get(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    async def api(self, path: str, **params: str) -> dict:
        return await asyncio.to_thread(self._get, path, **params)

    async def query(self, promql: str) -> list[dict]:
        return (await self.api("/api/v1/query", query=promql))["result"]

    async def wait_for(self, promql: str, check, *, timeout: float = 60.0) -> list[dict]:
        """Query until ``check(result)`` holds; returns that result."""
        deadline = time.monotonic() + timeout
        while True:
            result = await self.query(promql)
            if check(result):
                return result
            assert time.monotonic() < deadline, f"{promql} never satisfied the check; last result: {result}"
            await asyncio.sleep(1)


def config(metrics_ports: dict[str, int]) -> dict:
    """deploy/prometheus/prometheus.yml with this system's ports and a one-second cadence (JSON is YAML)."""
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "recovery",
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{metrics_ports[name]}"], "labels": {"service": name}} for name in SERVICES
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
async def prometheus(system, tmp_path_factory):
    binary = await asyncio.to_thread(prometheus_tool, "prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    (directory / "prometheus.yml").write_text(json.dumps(config(system.metrics_ports), indent=2))
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    server = Prometheus(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.returncode is None, log_path.read_text()
            try:
                await server.api("/api/v1/status/buildinfo")
                break
            except OSError:
                assert time.monotonic() < deadline, "Prometheus did not answer within 30 s"
                await asyncio.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


def by_service(result: list[dict]) -> dict[str, float]:
    return {sample["metric"]["service"]: float(sample["value"][1]) for sample in result}


async def test_every_service_is_scraped_and_up(prometheus):
    result = await prometheus.wait_for(
        'up{job="recovery"}', lambda r: len(r) == len(SERVICES) and all(s["value"][1] == "1" for s in r)
    )
    assert by_service(result) == dict.fromkeys(SERVICES, 1.0)
    targets = (await prometheus.api("/api/v1/targets"))["activeTargets"]
    assert {t["labels"]["service"]: t["health"] for t in targets} == dict.fromkeys(SERVICES, "up")


async def test_each_service_serves_its_kit_and_business_series(prometheus, outside):
    await prometheus.wait_for('up{job="recovery"}', lambda r: len(r) == len(SERVICES))
    # A failure a system reports: intake consumes it, the three others its case-opened.
    customer = new_id("cust")
    await outside.publish("recovery.failure-reported.v1", system_failure(customer), source="delivery-tracking")
    await outside.events("recovery.offer-proposed.v1", customer)
    for series in (
        "recovery_outbox_backlog",
        "recovery_outbox_oldest_unsent_age_seconds",
        "recovery_db_pool_connections",
        'recovery_policy_loads_total{outcome="loaded"}',
        "recovery_policy_info",
        "recovery_build_info",
        "process_resident_memory_bytes",
        "python_info",
    ):
        result = await prometheus.wait_for(series, lambda r: set(SERVICES) <= set(by_service(r)))
        assert set(SERVICES) <= set(by_service(result)), series
    builds = {s["metric"]["service"]: s["metric"] for s in await prometheus.query("recovery_build_info")}
    assert {name: builds[name]["version"] for name in SERVICES} == dict.fromkeys(SERVICES, project_version())
    # Every consumer says how old the events it processes are.
    ages = await prometheus.wait_for(
        "recovery_consumer_event_age_seconds_count", lambda r: set(SERVICES) <= set(by_service(r))
    )
    assert set(SERVICES) <= set(by_service(ages))
    specific = {
        "intake": "recovery_intake_merges_total",
        "escalation": "recovery_escalation_approvals_pending_oldest_age_seconds",
        "compensation": "recovery_compensation_offers_flagged_for_review_total",
        "followup": "recovery_followup_reopen_requests_total",
    }
    for service, metric in specific.items():
        result = await prometheus.wait_for(f'{metric}{{service="{service}"}}', lambda r: len(r) == 1)
        assert result[0]["metric"]["job"] == "recovery"
    # Only escalation has approvals: the business series stay with their own service.
    assert set(by_service(await prometheus.query("recovery_escalation_approvals_pending"))) == {"escalation"}
    policies = {s["metric"]["service"]: s["metric"]["policy"] for s in await prometheus.query("recovery_policy_info")}
    assert policies == {name: name for name in SERVICES}


async def test_rpc_series_feed_the_error_ratio_recording_rule(prometheus, system):
    for name in SERVICES:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{system.grpc_ports[name]}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(3):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    method = "/grpc.health.v1.Health/Check"
    # NaN (0/0) until a scrape shows the calls; then 0: calls, none of them a server error.
    ratio = await prometheus.wait_for(
        f'service_method:recovery_grpc_server_errors:ratio_rate5m{{method="{method}"}}',
        lambda r: by_service(r) == dict.fromkeys(SERVICES, 0.0),
    )
    assert len(ratio) == len(SERVICES)


async def test_a_dead_letter_makes_the_dead_letter_alert_fire(prometheus, system):
    producer = AIOKafkaProducer(bootstrap_servers=system.kafka)
    await producer.start()
    try:
        key = f"prometheus-e2e-{uuid.uuid4().hex[:10]}".encode()
        await producer.send_and_wait("recovery.failure-reported.v1", b"not a CloudEvent", key=key)
    finally:
        await producer.stop()
    # No CloudEvents headers: intake cannot decode it (other tests may have dead-lettered other records).
    ours = 'service="intake",topic="recovery.failure-reported.v1",error_class="UndecodableRecord"'
    await prometheus.wait_for(f"recovery_records_deadlettered_total{{{ours}}}", lambda r: len(r) == 1)
    # The consumer reports lag for the partitions it has taken records from; it caught up.
    await prometheus.wait_for(
        'recovery_consumer_lag{service="intake",topic="recovery.failure-reported.v1"}',
        lambda r: r and all(s["value"][1] == "0" for s in r),
    )
    # A new series' first increment is invisible to increase(); the rule also reads its `_created` sample.
    assert len(await prometheus.query(f"recovery_records_deadlettered_created{{{ours}}}")) == 1
    # The rule has no `for`: it fires on the first evaluation that sees the dead letter.
    firing = await prometheus.wait_for(
        f'ALERTS{{alertname="RecoveryRecordsDeadLettered",alertstate="firing",{ours}}}', lambda r: len(r) == 1
    )
    assert firing[0]["metric"]["severity"] == "warning"
    alerts = (await prometheus.api("/api/v1/alerts"))["alerts"]
    [alert] = [
        a
        for a in alerts
        if a["labels"]["alertname"] == "RecoveryRecordsDeadLettered"
        and a["labels"]["topic"] == "recovery.failure-reported.v1"
        and a["labels"]["error_class"] == "UndecodableRecord"
    ]
    assert alert["annotations"]["runbook"].startswith(
        "Run `python -m services.deadletters list --topic recovery.failure-reported.v1`"
    )


async def test_every_rule_loads_and_evaluates_healthily(prometheus):
    expected = {(rule.kind, rule.name) for path in RULE_FILES for rule in load_rules(path)}
    deadline = time.monotonic() + 60
    while True:
        groups = (await prometheus.api("/api/v1/rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = all(not r["lastEvaluation"].startswith("0001-") for r in rules)
        if rules and evaluated:
            break
        assert time.monotonic() < deadline, "rules not all evaluated within 60 s"
        await asyncio.sleep(1)
    loaded = {("alert" if r["type"] == "alerting" else "record", r["name"]) for r in rules}
    assert loaded == expected
    unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not unhealthy, unhealthy
