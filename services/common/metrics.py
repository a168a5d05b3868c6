"""The kit's technical metrics, defined once; each service adds its business metrics beside them.

Every metric lives in a registry the composition root creates, so tests can build as many
independent sets as they like and nothing is registered at import time.
"""

from __future__ import annotations

import platform
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

# Seconds; from a fast single-row transaction to a slow batch under load.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds a durable timer fired after its due time: a healthy scheduler stays under a second or two.
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# The labels of recovery_build_info.
BUILD_LABELS = frozenset({"service", "version", "revision", "python"})
# Seconds from an event's CloudEvents time to its processing: milliseconds when healthy, hours in a backlog.
EVENT_AGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)


class KitMetrics:
    """Consumer, outbox, database and RPC metrics shared by every service."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records_consumed = Counter(
            "recovery_records_consumed_total",
            "Kafka records taken by a consumer, by topic and outcome (processed, duplicate, deadlettered).",
            ["topic", "outcome"],
            registry=registry,
        )
        self.records_deadlettered = Counter(
            "recovery_records_deadlettered_total",
            "Records sent to the dead-letter topic, by original topic and error class.",
            ["topic", "error_class"],
            registry=registry,
        )
        self.records_timeless = Counter(
            "recovery_records_without_time_total",
            "Records that carried no CloudEvents time (optional): the time they were read stands in, by topic.",
            ["topic"],
            registry=registry,
        )
        self.event_age = Histogram(
            "recovery_consumer_event_age_seconds",
            "How old events are when their batch commits (now minus the CloudEvents time), by topic.",
            ["topic"],
            buckets=EVENT_AGE_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "recovery_consumer_lag",
            "Records on the broker not yet processed by this consumer, by topic and partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.batch_duration = Histogram(
            "recovery_consumer_batch_duration_seconds",
            "Time to process one consumer batch in one transaction, by topic.",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_retries = Counter(
            "recovery_consumer_batch_retries_total",
            "Batches rolled back by a transient error and retried, by topic.",
            ["topic"],
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "recovery_outbox_backlog",
            "Outbox rows committed but not yet published.",
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "recovery_outbox_oldest_unsent_age_seconds",
            "Age of the oldest unpublished outbox row (0 when the outbox is empty).",
            registry=registry,
        )
        self.outbox_published = Counter(
            "recovery_outbox_published_total",
            "Outbox rows published to Kafka, by topic.",
            ["topic"],
            registry=registry,
        )
        self.db_pool_in_use = Gauge(
            "recovery_db_pool_connections_in_use",
            "Database pool connections currently checked out.",
            registry=registry,
        )
        self.db_pool_size = Gauge(
            "recovery_db_pool_connections",
            "Database pool connections open.",
            registry=registry,
        )
        self.rpc_handled = Counter(
            "recovery_grpc_server_handled_total",
            "gRPC calls completed, by method and status code.",
            ["method", "code"],
            registry=registry,
        )
        self.rpc_duration = Histogram(
            "recovery_grpc_server_handling_seconds",
            "gRPC call latency, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        self.scheduler_fired = Counter(
            "recovery_scheduler_fired_total",
            "Durable timers fired (committed), by scheduler.",
            ["scheduler"],
            registry=registry,
        )
        self.scheduler_lateness = Histogram(
            "recovery_scheduler_lateness_seconds",
            "How long after its due time a timer fired, by scheduler.",
            ["scheduler"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.scheduler_failures = Counter(
            "recovery_scheduler_failed_rounds_total",
            "Scheduler rounds rolled back by an error and retried, by scheduler.",
            ["scheduler"],
            registry=registry,
        )
        self.policy_reloads = Counter(
            "recovery_policy_loads_total",
            "Policy file loads, by policy and outcome (loaded, refused).",
            ["policy", "outcome"],
            registry=registry,
        )
        self.pruned = Counter(
            "recovery_pruned_rows_total",
            "Rows pruned once older than the dedupe retention, by table (inbox, request_log).",
            ["table"],
            registry=registry,
        )
        self.build = Info(
            "recovery_build",
            "What is running: service, version, source revision and Python (set once at start).",
            registry=registry,
        )
        self.policy_version = Info(
            "recovery_policy",
            "The policy version in force, by policy.",
            ["policy"],
            registry=registry,
        )

    def record_build(self, *, service: str, version: str, revision: str) -> None:
        """Set ``recovery_build_info`` (labels ``BUILD_LABELS``)."""
        values = {"service": service, "version": version, "revision": revision, "python": platform.python_version()}
        self.build.info(values)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC and record its latency."""
        self.rpc_handled.labels(method=method, code=code).inc()
        self.rpc_duration.labels(method=method).observe(seconds)

    @contextmanager
    def time_batch(self, topic: str) -> Iterator[None]:
        """Time a consumer batch."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.batch_duration.labels(topic=topic).observe(time.perf_counter() - started)


PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def project_version(pyproject: Path = PYPROJECT) -> str:
    """Return the project's version from ``pyproject.toml``; "unknown" where it is not shipped (the image)."""
    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def register_platform(registry: CollectorRegistry) -> None:
    """Add the process, platform and garbage-collector collectors to ``registry`` (a fresh one has none):
    ``process_*`` (CPU, memory, open files) and ``python_*`` (version, GC)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def serve_metrics(registry: CollectorRegistry, *, host: str, port: int) -> tuple[object, int]:
    """Serve ``registry`` over HTTP; returns the server (call ``shutdown()``) and the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_port
