"""One compensation service per test module, on the session's real broker and Postgres, with a test policy."""

from __future__ import annotations

import functools
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from recovery.compensation.v1 import compensation_pb2_grpc
from recovery.events.v1 import common_pb2, events_pb2

from services.common import migrations
from services.common.db import Database
from services.common.runtime import Endpoints
from services.common.wire import time_to_proto
from services.compensation import bootstrap
from services.compensation.config import DEFAULT_POLICY, CompensationSettings
from tests.integration.conftest import new_id, now, read_topic, service_settings
from tests.integration.conftest import publish as shared_publish
from tests.support.running import bearer, channel, running_service

# The shipped policy plus a team with a tiny monthly budget, so a test can exceed it with one authorisation.
TEST_POLICY = DEFAULT_POLICY.read_text() + "\n[budget.team.tight-team]\nEUR = 5000\n"
OFFER_PROPOSED = "recovery.offer-proposed.v1"


@dataclass(frozen=True)
class Compensation:
    settings: CompensationSettings
    endpoints: Endpoints


def compensation_settings(stack, tmp: Path, **changes) -> CompensationSettings:
    own = {"policy_reload_ms": 200}
    return service_settings(CompensationSettings, stack, tmp, policy_text=TEST_POLICY, **(own | changes))


@pytest.fixture(scope="module")
async def compensation(stack, tmp_path_factory):
    settings = compensation_settings(stack, tmp_path_factory.mktemp("compensation"))
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        yield Compensation(settings=settings, endpoints=endpoints)


@pytest.fixture
async def db(settings):
    """A fresh schema migrated to compensation's tables, dropped afterwards (for the repository's own tests)."""
    await migrations.migrate(settings.database_url, schema=settings.schema, service_migrations=bootstrap.MIGRATIONS)
    database = await Database.connect(settings.database_url, schema=settings.schema, max_size=2)
    yield database
    async with database.transaction() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {settings.schema} CASCADE")
    await database.close()


@pytest.fixture
async def stub(compensation):
    async with channel(compensation.endpoints.grpc_port) as ch:
        yield compensation_pb2_grpc.CompensationServiceStub(ch)


def agent(compensation: Compensation, role: str = "agent"):
    return bearer(compensation.settings, sub="e-17", role=role, team="front-desk")


publish = functools.partial(shared_publish, source="escalation")


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency="EUR")


def case_opened(customer_id: str, case_id: str, **fields) -> events_pb2.CaseOpened:
    """A moderate, unavoidable late delivery of a 100 EUR order, opened now (gesture 15 EUR, room 50 EUR)."""
    base = {
        "customer_id": customer_id,
        "case_id": case_id,
        "owner_employee_id": "e-17",
        "owning_team": "front-desk",
        "failure_ids": [new_id("failure")],
        "source": common_pb2.SOURCE_FRONTLINE,
        "category": common_pb2.CATEGORY_LATE_DELIVERY,
        "occurred_at": time_to_proto(now()),
        "description": "parcel two days late",
        "classification": common_pb2.Classification(
            severity=common_pb2.SeverityAssessment(severity=common_pb2.SEVERITY_MODERATE),
            avoidability=common_pb2.AvoidabilityAssessment(avoidability=common_pb2.AVOIDABILITY_UNAVOIDABLE),
            outlook=common_pb2.OutlookAssessment(outlook=common_pb2.OUTLOOK_RECOVERABLE),
            policy_version="2025.1",
        ),
        "history": common_pb2.HistorySummary(prior_failure_count=0),
        "order_value": eur(10_000),
        "customer_value": eur(0),
        "opened_at": time_to_proto(now()),
    }
    return events_pb2.CaseOpened(**(base | fields))


def sla_breached(customer_id: str, case_id: str, **fields) -> events_pb2.SlaBreached:
    at = now()
    base = {
        "customer_id": customer_id,
        "case_id": case_id,
        "clock": common_pb2.SLA_CLOCK_ACKNOWLEDGE,
        "deadline_at": time_to_proto(at - timedelta(minutes=1)),
        "breached_at": time_to_proto(at),
        "severity": common_pb2.SEVERITY_MODERATE,
        "team": "front-desk",
    }
    return events_pb2.SlaBreached(**(base | fields))


async def offers_for(stack, customer_id: str, *, count: int, settle: float = 0.0) -> list[events_pb2.OfferProposed]:
    """Return the offer-proposed records keyed ``customer_id`` once ``count`` arrived (and ``settle`` s passed)."""
    records = await offer_records(stack, customer_id, count=count, settle=settle)
    return [events_pb2.OfferProposed.FromString(r.value) for r in records]


async def offer_records(stack, customer_id: str, *, count: int, settle: float = 0.0):
    def mine(records):
        return [r for r in records if r.key == customer_id.encode()]

    records = await read_topic(
        stack.kafka, OFFER_PROPOSED, until=lambda rs: len(mine(rs)) >= count, settle=settle, timeout=40
    )
    return mine(records)


def metric(compensation: Compensation, name: str, **labels: str) -> float:
    """Return one sample scraped from the running service's metrics endpoint (0 when absent)."""
    url = f"http://127.0.0.1:{compensation.endpoints.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def rows(compensation: Compensation, sql: str, *args) -> list[tuple]:
    """Return the rows of a query on the service's own schema, as tuples."""
    conn = await asyncpg.connect(
        compensation.settings.database_url, server_settings={"search_path": compensation.settings.schema}
    )
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()
