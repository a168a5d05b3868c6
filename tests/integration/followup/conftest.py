"""One followup service per test module, on the session's real broker and Postgres, with short delays."""

from __future__ import annotations

import functools
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from recovery.events.v1 import common_pb2, events_pb2

from services.common.runtime import Endpoints
from services.common.wire import time_to_proto
from services.followup import bootstrap
from services.followup.config import DEFAULT_POLICY, FollowupSettings
from tests.integration.conftest import new_id, now, read_topic, service_settings
from tests.integration.conftest import publish as shared_publish
from tests.support.outside import daytime_zone, read_to_end
from tests.support.running import running_service

# A cap high enough that a test customer with several cases is not pushed a week out (the unit tests cover it).
TEST_POLICY = DEFAULT_POLICY.read_text().replace("max_contacts = 3", "max_contacts = 20")
# Delays shortened by configuration (seconds per kind), the way a demo would run.
TEST_DELAYS = "satisfaction_check=3,check_in=15,personal_note=2,corrective_action_notice=1,progress_update=2"

RESOLVED = "recovery.case-resolved.v1"
REOPENED = "recovery.case-reopened.v1"
OPENED = "recovery.case-opened.v1"
FEEDBACK = "recovery.feedback-received.v1"
ACTIONS = "recovery.corrective-action-completed.v1"
DUE = "recovery.followup-due.v1"
REOPEN_REQUESTED = "recovery.case-reopen-requested.v1"
FAILURES = "recovery.failure-reported.v1"
PROGRESSED = "recovery.case-progressed.v1"


@dataclass(frozen=True)
class Followup:
    settings: FollowupSettings
    endpoints: Endpoints


def followup_settings(stack, tmp: Path, **changes) -> FollowupSettings:
    own = {
        "policy_reload_seconds": 0.2,
        "scheduler_poll_seconds": 0.1,
        "gauge_seconds": 0.5,
        "delay_overrides": TEST_DELAYS,
    }
    return service_settings(FollowupSettings, stack, tmp, policy_text=TEST_POLICY, **(own | changes))


@pytest.fixture(scope="module")
async def followup(stack, tmp_path_factory):
    settings = followup_settings(stack, tmp_path_factory.mktemp("followup"))
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        yield Followup(settings=settings, endpoints=endpoints)


publish = functools.partial(shared_publish, source="escalation")


def resolved(customer_id: str, case_id: str | None = None, **fields) -> events_pb2.CaseResolved:
    base = {
        "customer_id": customer_id,
        "case_id": case_id or new_id("case"),
        "owner_employee_id": "emp-owner",
        "team": "care",
        "severity": common_pb2.SEVERITY_MODERATE,
        "outlook": common_pb2.OUTLOOK_RECOVERABLE,
        "category": common_pb2.CATEGORY_LATE_DELIVERY,
        "resolved_at": time_to_proto(now()),
        "customer_timezone": daytime_zone(),
        "preferred_channel": common_pb2.CHANNEL_SMS,
        "resolution_number": 1,
    }
    return events_pb2.CaseResolved(**(base | fields))


def progressed(customer_id: str, case_id: str, stage: int, at: datetime, **fields) -> events_pb2.CaseProgressed:
    base = {
        "customer_id": customer_id,
        "case_id": case_id,
        "stage": stage,
        "progressed_at": time_to_proto(at),
        "owner_employee_id": "emp-owner",
        "customer_timezone": daytime_zone(),
        "preferred_channel": common_pb2.CHANNEL_SMS,
    }
    return events_pb2.CaseProgressed(**(base | fields))


async def read_events(bootstrap: str, topic: str, message_class, *, keys, count: int, settle: float = 0.0, timeout=60):
    """Return the records keyed by one of ``keys`` on ``topic`` once ``count`` arrived (and ``settle`` s more)."""
    wanted = {k.encode() for k in ([keys] if isinstance(keys, str) else keys)}

    def mine(records):
        return [r for r in records if r.key in wanted]

    records = await read_topic(
        bootstrap, topic, until=lambda rs: len(mine(rs)) >= count, settle=settle, timeout=timeout
    )
    return [(r, message_class.FromString(r.value)) for r in mine(records)]


async def read_all(bootstrap: str, topic: str, message_class, *, keys):
    """Return every record keyed by one of ``keys`` on ``topic`` up to its current end, with its message."""
    found = await read_to_end(bootstrap, topic, {keys} if isinstance(keys, str) else set(keys), timeout=30)
    return [(r, message_class.FromString(r.value)) for r in found]


def header(record, name: str) -> str:
    return dict(record.headers)[name].decode()


async def rows(settings: FollowupSettings, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetch(sql.replace("{schema}", settings.schema), *args)
    finally:
        await conn.close()


def at(stamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def metric(followup, name: str, **labels: str) -> float:
    url = f"http://127.0.0.1:{followup.endpoints.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
