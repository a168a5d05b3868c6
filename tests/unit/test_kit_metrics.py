"""The kit's operational metrics and retention (no infrastructure): platform collectors and build info on a fresh
registry, lag series dropped for a revoked partition, the age of events when their batch commits, the dedupe
retention checked against the topics'."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from services.common.cloudevents import CloudEvent
from services.common.consumer import ConsumerHarness, Incoming
from services.common.errors import InvalidInput
from services.common.metrics import KitMetrics, project_version, register_platform
from services.common.retention import check_retention
from services.common.topics import EVENT_RETENTION, longest_input_retention, topic

TOPIC = "recovery.case-opened.v1"


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_a_fresh_registry_gets_the_process_and_python_collectors_and_the_build():
    registry = CollectorRegistry()
    metrics = KitMetrics(registry)
    register_platform(registry)
    metrics.record_build(service="intake", version="1.2.3", revision="abc123")
    text = scrape(registry)
    assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert "python_info{" in text and "python_gc_collections_total" in text
    assert 'recovery_build_info{python="' in text and 'revision="abc123",service="intake",version="1.2.3"' in text


def test_the_version_comes_from_pyproject_where_there_is_one(tmp_path):
    assert project_version() not in ("", "unknown")  # the repository's
    assert project_version(tmp_path / "missing.toml") == "unknown"  # the image ships none


class FakeConsumer:
    def __init__(self, assigned: set[TP], highwater: dict[TP, int]) -> None:
        self._assigned, self._highwater = assigned, highwater

    def assignment(self) -> set[TP]:
        return self._assigned

    def highwater(self, tp: TP) -> int:
        return self._highwater[tp]


def harness(metrics: KitMetrics) -> ConsumerHarness:
    return ConsumerHarness(db=None, group="g", subscriptions=(), metrics=metrics)  # type: ignore[arg-type]


def lag(registry: CollectorRegistry, partition: int) -> float | None:
    return registry.get_sample_value("recovery_consumer_lag", {"topic": TOPIC, "partition": str(partition)})


def test_a_revoked_partition_loses_its_lag_series_instead_of_keeping_a_stale_value():
    registry = CollectorRegistry()
    consumer = harness(KitMetrics(registry))
    mine, theirs = TP(TOPIC, 0), TP(TOPIC, 1)
    consumer._next_offsets = {(TOPIC, 0): 4, (TOPIC, 1): 2}
    consumer._app = SimpleNamespace(consumer=FakeConsumer({mine, theirs}, {mine: 10, theirs: 9}))
    consumer.observe_lag()
    assert (lag(registry, 0), lag(registry, 1)) == (6, 7)
    consumer._app = SimpleNamespace(consumer=FakeConsumer({mine}, {mine: 12}))  # a rebalance took partition 1
    consumer.observe_lag()
    assert (lag(registry, 0), lag(registry, 1)) == (8, None)
    assert (TOPIC, 1) not in consumer._next_offsets


def incoming(age: timedelta | None) -> Incoming:
    at = datetime.now(UTC) - (age or timedelta(0))
    event = CloudEvent("id", "type", "source", at, "application/protobuf", time_from_receipt=age is None)
    return Incoming(event=event, message=None, record=None)  # type: ignore[arg-type]


def test_the_age_of_events_is_observed_when_their_batch_commits_and_timeless_ones_say_nothing():
    registry = CollectorRegistry()
    consumer = harness(KitMetrics(registry))
    consumer._observe_age(TOPIC, [incoming(timedelta(seconds=30)), incoming(timedelta(seconds=2)), incoming(None)])
    count = registry.get_sample_value("recovery_consumer_event_age_seconds_count", {"topic": TOPIC})
    total = registry.get_sample_value("recovery_consumer_event_age_seconds_sum", {"topic": TOPIC})
    assert count == 2 and 31.9 < total < 33
    under_five = registry.get_sample_value("recovery_consumer_event_age_seconds_bucket", {"topic": TOPIC, "le": "5.0"})
    assert under_five == 1


def test_the_dedupe_retention_must_outlast_every_consumed_topic():
    assert longest_input_retention() == EVENT_RETENTION  # dead letters are kept longer, but replayed by hand
    check_retention(EVENT_RETENTION + timedelta(days=1))
    with pytest.raises(InvalidInput) as short:
        check_retention(EVENT_RETENTION)
    (violation,) = short.value.violations
    assert violation.field == "DEDUPE_RETENTION_DAYS" and "7 days must exceed" in violation.description
    assert topic("recovery.deadletter.v1").configs == {"retention.ms": str(90 * 86_400_000)}
