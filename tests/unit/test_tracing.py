"""Trace context: when traces are on, how it rides on records, what a batch and a publish make of it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.common import tracing
from services.common.logs import JsonFormatter

PARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass(frozen=True)
class Record:
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    partition: int = 0
    offset: int = 0


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.use(SimpleSpanProcessor(exporter), service="intake", version="test")
    yield exporter
    tracing.stop()


def trace_id(traceparent: bytes) -> int:
    return int(traceparent.split(b"-")[1], 16)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    ],
)
def test_traces_are_exported_only_when_an_endpoint_is_configured(environ, expected):
    assert tracing.requested(environ) is expected


def test_configure_changes_nothing_when_traces_are_off():
    assert tracing.configure(service="intake", version="test", environ={}) is None
    assert not tracing.enabled()
    assert tracing.grpc_interceptors() == []


def test_trace_headers_are_replaced_and_the_rest_kept_in_order():
    headers = (("ce_id", b"1"), ("traceparent", OTHER), ("content-type", b"application/json"))
    assert tracing.with_trace(headers, (("traceparent", PARENT),)) == (
        ("ce_id", b"1"),
        ("content-type", b"application/json"),
        ("traceparent", PARENT),
    )
    assert tracing.with_trace(headers[:1], ()) == headers[:1]


def test_with_traces_off_a_record_passes_its_traceparent_to_the_events_staged_for_its_key():
    batch = tracing.BatchTrace(
        topic="failures",
        group="intake",
        records=[Record(b"c-1", (("traceparent", PARENT),)), Record(b"c-2", (("ce_id", b"x"),))],
    )
    staged = (("ce_id", b"e"), ("traceparent", OTHER))
    with batch.staging():
        assert tracing.staged_headers(b"c-1", staged) == (("ce_id", b"e"), ("traceparent", PARENT))
        assert tracing.staged_headers(b"c-2", staged) == (("ce_id", b"e"),)  # its record came without one
        assert tracing.staged_headers(b"other", staged) == staged
    assert tracing.staged_headers(b"c-1", staged) == staged  # outside the batch nothing is added
    batch.end()


def test_a_batch_continues_each_records_trace_and_links_them_all(spans):
    records = [
        Record(b"c-1", (("traceparent", PARENT),), offset=7),
        Record(b"c-2", (("traceparent", OTHER),), offset=8),
        Record(b"c-3", ()),
    ]
    batch = tracing.BatchTrace(topic="failures", group="intake", records=records)
    with batch.staging():
        staged = {key: dict(tracing.staged_headers(key, ())) for key in (b"c-1", b"c-2", b"c-3")}
        logged = json.loads(JsonFormatter("intake").format(logging.LogRecord("t", 20, "", 0, "inside", (), None)))
    batch.end()

    finished = spans.get_finished_spans()
    by_record = [s for s in finished if s.name == "process failures record"]
    assert len(by_record) == 3
    assert {s.parent.trace_id for s in by_record if s.parent} == {trace_id(PARENT), trace_id(OTHER)}
    (batch_span,) = [s for s in finished if s.name == "process failures"]
    assert batch_span.kind is SpanKind.CONSUMER
    assert {link.context.trace_id for link in batch_span.links} == {trace_id(PARENT), trace_id(OTHER)}
    assert batch_span.attributes["messaging.batch.message_count"] == 3
    # The events staged for c-1 are children of c-1's record span, in c-1's trace.
    assert trace_id(staged[b"c-1"]["traceparent"]) == trace_id(PARENT)
    assert trace_id(staged[b"c-2"]["traceparent"]) == trace_id(OTHER)
    assert "traceparent" in staged[b"c-3"]  # a record that came without a trace starts one
    # A log line written during the batch names the batch's span.
    assert logged["trace_id"] == format(batch_span.context.trace_id, "032x")
    assert logged["span_id"] == format(batch_span.context.span_id, "016x")


def test_the_relay_publish_span_continues_the_row_and_becomes_the_records_parent(spans):
    span, headers = tracing.publish_span("case-opened", (("ce_id", b"1"), ("traceparent", PARENT)))
    tracing.end(span, error=RuntimeError("broker down"))
    (published,) = spans.get_finished_spans()
    assert published.kind is SpanKind.PRODUCER
    assert published.parent.trace_id == trace_id(PARENT)
    assert not published.status.is_ok
    sent = dict(headers)
    assert trace_id(sent["traceparent"]) == trace_id(PARENT)
    assert sent["traceparent"].split(b"-")[2] == format(published.context.span_id, "016x").encode()


def test_a_malformed_traceparent_starts_a_new_trace_instead_of_failing(spans):
    span, headers = tracing.publish_span("case-opened", (("traceparent", b"not-a-trace\xff"),))
    span.end()
    (published,) = spans.get_finished_spans()
    assert published.parent is None
    assert dict(headers)["traceparent"] != b"not-a-trace\xff"


def test_outside_any_span_a_log_line_carries_no_trace_ids():
    logged = json.loads(JsonFormatter("intake").format(logging.LogRecord("t", 20, "", 0, "outside", (), None)))
    assert "trace_id" not in logged
