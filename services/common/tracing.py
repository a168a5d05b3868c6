"""Traces: W3C trace context on every record and call; spans per gRPC call, consumed batch and relay publish.

Off by default. The SDK starts only when the standard variables name an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` keep it off whatever else is set, and the exporter, sampler and batch processor
read their own ``OTEL_*`` settings. Off, no span is made, but context still travels: the ``traceparent`` a
record arrived with goes onto the events it causes, so a trace crosses a service that does not export.

How context flows: a gRPC call's span (or, in a consumer, the span of the record being handled) is the parent
of the events staged for it; the outbox keeps their ``traceparent`` header with the row; the relay's publish
span continues it and replaces the header with its own, which the next consumer continues.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanProcessor
from opentelemetry.trace import Link, Span, SpanKind, Tracer

log = logging.getLogger(__name__)

TRACE_HEADERS = ("traceparent", "tracestate")
# A batch span links the records it handled; past this many the rest are counted, not linked.
MAX_LINKS = 128
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

Headers = tuple[tuple[str, bytes], ...]

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
# While a consumer handles a batch: the trace headers of the events staged for each record key (see BatchTrace).
_staging: ContextVar[Mapping[bytes | None, Headers] | None] = ContextVar("staging_traces", default=None)


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the ``OTEL_*`` variables ask for traces to be exported (pure: reads only ``environ``)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in _ENDPOINT_VARIABLES)


def configure(*, service: str, version: str, environ: Mapping[str, str] = os.environ) -> Callable[[], None] | None:
    """Start exporting this process's spans over OTLP when ``environ`` asks for it; returns the shutdown (flush).

    Also instruments asyncpg (a span per statement). Returns None, and changes nothing, when traces are off.
    """
    if not requested(environ):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = use(BatchSpanProcessor(OTLPSpanExporter()), service=service, version=version)
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().instrument(tracer_provider=provider)
    log.info("exporting traces over OTLP to %s", next(environ[n] for n in _ENDPOINT_VARIABLES if environ.get(n)))

    def shutdown() -> None:
        AsyncPGInstrumentor().uninstrument()
        provider.shutdown()  # exports what is still buffered
        stop()

    return shutdown


def use(processor: SpanProcessor, *, service: str, version: str = "") -> TracerProvider:
    """Make spans from now on, handing them to ``processor`` (what ``configure`` and the tests call)."""
    global _provider, _tracer
    resource = Resource.create(
        {"service.name": service, "service.namespace": "service-recovery", "service.version": version}
    )
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(processor)
    _tracer = _provider.get_tracer("services.common.tracing")
    return _provider


def stop() -> None:
    """Make no more spans (the tests' way back to the default)."""
    global _provider, _tracer
    _provider, _tracer = None, None


def enabled() -> bool:
    return _tracer is not None


def grpc_interceptors() -> list[Any]:
    """The gRPC server interceptors that make a span per call (none when traces are off; health probes and
    reflection make none: a probe every few seconds would bury the calls that matter)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    quiet = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
    return [aio_server_interceptor(tracer_provider=_provider, filter_=filters.negate(quiet))]


# ------------------------------------------------------------------------------------------ Kafka headers


class _HeaderGetter(Getter[Mapping[str, bytes]]):
    def get(self, carrier: Mapping[str, bytes], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier: Mapping[str, bytes]) -> list[str]:
        return list(carrier)


class _HeaderSetter(Setter[dict[str, bytes]]):
    def set(self, carrier: dict[str, bytes], key: str, value: str) -> None:
        carrier[key] = value.encode("latin-1")


_GETTER, _SETTER = _HeaderGetter(), _HeaderSetter()


def carried(headers: Iterable[tuple[str, bytes]] | None) -> Headers:
    """Return the trace headers among ``headers`` (what a record passes on when no span is made)."""
    return tuple((k, v) for k, v in headers or () if k in TRACE_HEADERS)


def context_of(headers: Iterable[tuple[str, bytes]] | None) -> otel_context.Context:
    """Return the trace context ``headers`` carry (an empty one when they carry none, or a malformed one)."""
    return propagate.extract(dict(carried(headers)), getter=_GETTER)


def headers_for(span: Span | None = None) -> Headers:
    """Return the trace headers naming ``span`` (default: the current span) as the parent; none without one."""
    ctx = trace.set_span_in_context(span) if span is not None else None
    carrier: dict[str, bytes] = {}
    propagate.inject(carrier, context=ctx, setter=_SETTER)
    return tuple((k, carrier[k]) for k in TRACE_HEADERS if k in carrier)


def staged_headers(key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Headers:
    """Return the headers an event staged now for ``key`` goes out with: its trace context added.

    Inside a consumed batch the parent is the span of the batch's record with that key (with traces off, the
    ``traceparent`` it came with); elsewhere (a gRPC call) the current span. Unchanged when there is neither.
    """
    staging = _staging.get()
    if staging is not None and key in staging:
        return with_trace(headers, staging[key])
    if _tracer is None:
        return tuple(headers)
    return with_trace(headers, headers_for())


@contextmanager
def staging(headers_by_key: Mapping[bytes | None, Headers]) -> Iterator[None]:
    """Inside the block, an event staged for a key continues the trace ``headers_by_key`` gives it (a group of
    calls handled together: each call's events under its own call's span)."""
    token = _staging.set(headers_by_key)
    try:
        yield
    finally:
        _staging.reset(token)


def with_trace(headers: Sequence[tuple[str, bytes]], trace_headers: Headers) -> Headers:
    """Return ``headers`` with their trace headers replaced by ``trace_headers``."""
    if not trace_headers and not any(k in TRACE_HEADERS for k, _ in headers):
        return tuple(headers)
    return (*((k, v) for k, v in headers if k not in TRACE_HEADERS), *trace_headers)


# ------------------------------------------------------------------------------------------ spans


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    links: Sequence[Link] = (),
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """Start a span (not made current); a non-recording one when traces are off. End it with ``span.end()``."""
    if _tracer is None:
        return trace.INVALID_SPAN
    return _tracer.start_span(name, context=parent, kind=kind, links=links, attributes=attributes)


def current(span: Span) -> AbstractContextManager[Span]:
    """Make ``span`` the current one inside the block (its statements and log lines are its children)."""
    return trace.use_span(span, end_on_exit=False)


def current_ids() -> tuple[str, str] | None:
    """Return the current span's (trace id, span id) in hex, or None outside a recorded span (for log lines)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class BatchTrace:
    """The spans of one consumed batch: the batch's own, and one per record continuing that record's trace.

    ``headers_by_key`` gives, per record key (the customer), the trace headers for the events staged for it:
    its record span as their parent, or with traces off the ``traceparent`` it arrived with. Two records of
    one customer in a batch: the later one's (the handler applies them in order).
    """

    def __init__(self, *, topic: str, group: str, records: Sequence[Any]) -> None:
        self.headers_by_key: dict[bytes | None, Headers] = {}
        self._record_spans: list[Span] = []
        if _tracer is None:
            self.span = trace.INVALID_SPAN
            for record in records:
                self.headers_by_key[record.key] = carried(record.headers)
            return
        contexts = [context_of(record.headers) for record in records]
        remote = [trace.get_current_span(c).get_span_context() for c in contexts]
        self.span = start_span(
            f"process {topic}",
            kind=SpanKind.CONSUMER,
            links=[Link(c) for c in remote if c.is_valid][:MAX_LINKS],
            attributes={
                **_messaging(topic),
                "messaging.consumer.group.name": group,
                "messaging.batch.message_count": len(records),
            },
        )
        for record, parent in zip(records, contexts, strict=True):
            span = start_span(
                f"process {topic} record",
                kind=SpanKind.CONSUMER,
                parent=parent,
                links=[Link(self.span.get_span_context())],
                attributes={
                    **_messaging(topic),
                    "messaging.consumer.group.name": group,
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                },
            )
            self._record_spans.append(span)
            self.headers_by_key[record.key] = headers_for(span)

    @contextmanager
    def staging(self) -> Iterator[None]:
        """Inside the block, events staged for a record's key continue that record's trace."""
        with staging(self.headers_by_key), current(self.span):  # the batch's statements and log lines: its children
            yield

    def end(self) -> None:
        for span in self._record_spans:
            span.end()
        self.span.end()


def publish_span(topic: str, headers: Sequence[tuple[str, bytes]]) -> tuple[Span, Headers]:
    """Start the relay's publish span for a record, continuing the trace its row carries; returns it and the
    record's headers naming it as the parent. With traces off: no span, the headers as they are."""
    if _tracer is None:
        return trace.INVALID_SPAN, tuple(headers)
    span = start_span(
        f"publish {topic}", kind=SpanKind.PRODUCER, parent=context_of(headers), attributes=_messaging(topic)
    )
    return span, with_trace(headers, headers_for(span))


def end(span: Span, *, error: BaseException | None = None) -> None:
    """End ``span``, marked failed with ``error`` when one is given."""
    if error is not None:
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
    span.end()


def _messaging(topic: str) -> dict[str, str]:
    return {"messaging.system": "kafka", "messaging.destination.name": topic}
