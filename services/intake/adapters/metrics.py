"""Intake's business metrics, defined once; the kit's technical metrics sit beside them in one registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.common.metrics import LATENCY_BUCKETS

OTHER = "other"


class BoundedLabel:
    """Keeps a label's value set bounded: the first ``limit`` distinct values pass, later ones become "other"."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return OTHER


class IntakeMetrics:
    """Failures in, cases out, merges, duplicates, refusals, hot spots and processing time."""

    def __init__(self, registry: CollectorRegistry, *, area_value_limit: int = 50) -> None:
        self.failures_received = Counter(
            "recovery_intake_failures_received_total",
            "Failure reports accepted, by source and category.",
            ["source", "category"],
            registry=registry,
        )
        self.cases_opened = Counter(
            "recovery_intake_cases_opened_total",
            "Cases opened, by severity and recovery outlook.",
            ["severity", "outlook"],
            registry=registry,
        )
        self.merges = Counter(
            "recovery_intake_merges_total",
            "Failures that joined an open case instead of opening one.",
            registry=registry,
        )
        self.duplicates = Counter(
            "recovery_intake_duplicates_dropped_total",
            "Failure reports dropped because their (source, source event id) was already accepted, by source.",
            ["source"],
            registry=registry,
        )
        self.refused = Counter(
            "recovery_intake_reports_refused_total",
            "Failure reports refused by validation, by channel (kafka, grpc) and first bad field.",
            ["channel", "field"],
            registry=registry,
        )
        self.hotspots = Counter(
            "recovery_intake_hotspots_detected_total",
            "Hot spots detected (a window above its trailing baseline), by dimension.",
            ["dimension"],
            registry=registry,
        )
        self.area_failures = Counter(
            "recovery_intake_area_failures_total",
            "Failures counted for hot spots, by dimension and value (values beyond a bound count as 'other').",
            ["dimension", "value"],
            registry=registry,
        )
        self.processing = Histogram(
            "recovery_intake_report_processing_seconds",
            "Time to validate, dedupe, merge, enrich and classify one failure report, by channel.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._area_values: dict[str, BoundedLabel] = {}
        self._area_value_limit = area_value_limit

    def count_area(self, dimension: str, value: str, amount: int) -> None:
        """Add ``amount`` failures to a dimension value, keeping the label set bounded."""
        bound = self._area_values.setdefault(dimension, BoundedLabel(self._area_value_limit))
        self.area_failures.labels(dimension=dimension, value=bound(value)).inc(amount)

    @contextmanager
    def timed(self, channel: str) -> Iterator[None]:
        """Time one report's processing on ``channel``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.processing.labels(channel=channel).observe(time.perf_counter() - started)
