"""One intake service per test module, on the session's real broker and Postgres, with a test policy."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message

from services.common import cloudevents
from services.common.runtime import Endpoints
from services.intake import bootstrap
from services.intake.config import DEFAULT_POLICY, IntakeSettings
from tests.support.running import running_service

# Hot spots in 10-minute windows against the 6 before, so a test can lay out windows in the recent past.
TEST_POLICY = (
    DEFAULT_POLICY.read_text()
    .replace("window_minutes = 60", "window_minutes = 10")
    .replace("baseline_windows = 24", "baseline_windows = 6")
)


@dataclass(frozen=True)
class Intake:
    settings: IntakeSettings
    endpoints: Endpoints


def intake_settings(stack, tmp: Path, **changes) -> IntakeSettings:
    policy = tmp / "policy.toml"
    if not policy.exists():
        policy.write_text(TEST_POLICY)
    values = {
        "service_name": f"intake_{uuid.uuid4().hex[:8]}",
        "kafka_bootstrap_servers": stack.kafka,
        "database_url": stack.database_url,
        "topic_partitions": 3,
        "retry_max_seconds": 0.5,
        "data_dir": str(tmp),
        "policy_path": str(policy),
        "policy_reload_seconds": 0.2,
        "hotspot_poll_seconds": 0.2,
        "batch_window_seconds": 0.05,
    }
    return IntakeSettings(**(values | changes))


@pytest.fixture(scope="module")
async def intake(stack, tmp_path_factory):
    settings = intake_settings(stack, tmp_path_factory.mktemp("intake"))
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        yield Intake(settings=settings, endpoints=endpoints)


@pytest.fixture(scope="module")
async def publisher(stack):
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka, acks="all", enable_idempotence=False)
    await producer.start()
    yield producer
    await producer.stop()


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    message: Message,
    *,
    content_type: str = cloudevents.PROTOBUF,
    ce_id: str | None = None,
    source: str = "delivery-tracking",
) -> str:
    """Publish ``message`` as another internal system would; returns its ce_id."""
    headers, value, event_id = cloudevents.encode(message, source=source, id=ce_id, content_type=content_type)
    await producer.send_and_wait(topic, value, key=message.customer_id.encode(), headers=headers)
    return event_id


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def now() -> datetime:
    return datetime.now(UTC)


async def read_events(bootstrap: str, topic: str, message_class, *, key: str, count: int, settle: float = 0.0):
    """Return the messages keyed ``key`` on ``topic`` once ``count`` arrived (and ``settle`` s more passed)."""
    from tests.integration.conftest import read_topic

    def mine(records):
        return [r for r in records if r.key == key.encode()]

    records = await read_topic(bootstrap, topic, until=lambda rs: len(mine(rs)) >= count, settle=settle, timeout=40)
    return [message_class.FromString(r.value) for r in mine(records)]


def metric(intake: Intake, name: str, **labels: str) -> float:
    """Return the value of one sample scraped from the running service's metrics endpoint (0 when absent)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{intake.endpoints.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
