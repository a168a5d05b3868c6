"""One failure, one trace: the four processes export their spans over OTLP, and they join up.

The system runs as `make run` starts it, with only the standard OTEL_* variables set; an OTLP receiver in the
test collects what the services export. A trace starts outside (a publisher's traceparent on the Kafka record,
a UI's traceparent on the gRPC call) and must come back with the spans of every service in it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from recovery.events.v1 import common_pb2 as common

from services.common import cloudevents
from tests.support.frontline import AGENT, report, system_failure
from tests.support.outside import Outside, new_id
from tests.support.system import running_system, short_clocks

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SERVICES = {"intake", "escalation", "compensation", "followup"}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver keeping every span by trace id, with the service that sent it."""

    def __init__(self) -> None:
        self.spans: dict[str, list[tuple[str, object]]] = defaultdict(list)
        self.arrived = asyncio.Condition()

    async def Export(self, request, context):  # the OTLP service names it so
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans[span.trace_id.hex()].append((attributes.get("service.name", ""), span))
        async with self.arrived:
            self.arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    async def trace(
        self, trace_id: str, *, services: set[str], names: set[tuple[str, str]] = frozenset(), timeout: float = 60
    ) -> list[tuple[str, object]]:
        """Return the trace's spans once every one of ``services`` has sent some, and the (service, span) ``names``
        have all arrived (each process exports on its own schedule)."""
        async with asyncio.timeout(timeout), self.arrived:
            while not (
                services <= {service for service, _ in self.spans[trace_id]}
                and names <= {(service, span.name) for service, span in self.spans[trace_id]}
                and len(orphans(self.spans[trace_id])) == 1  # every parent arrived but the outside publisher's
            ):
                await self.arrived.wait()
        return self.spans[trace_id]


@pytest.fixture(scope="module")
async def receiver():
    server = grpc.aio.server()
    collected = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collected, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    collected.endpoint = f"http://127.0.0.1:{port}"
    yield collected
    await server.stop(None)


@pytest.fixture(scope="module")
async def traced(tmp_path_factory, receiver):
    directory = tmp_path_factory.mktemp("traced-system")
    env = short_clocks(directory) | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a fifth of a second, not the default five
    }
    async with running_system(directory, env) as system, Outside(system) as outside:
        yield outside


def orphans(spans: list[tuple[str, object]]) -> list[str]:
    """The names of the spans whose parent is not among ``spans``."""
    ids = {span.span_id for _, span in spans}
    return [span.name for _, span in spans if span.parent_span_id not in ids]


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


def trace_of(headers: dict[str, str]) -> str:
    return headers["traceparent"].split("-")[1]


async def test_a_published_failure_is_one_trace_across_the_four_services(traced, receiver):
    trace_id = secrets.token_hex(16)
    customer = new_id("cust")
    headers, value, _ = cloudevents.encode(system_failure(customer), source="delivery-tracking")
    headers.append(("traceparent", traceparent(trace_id).encode()))
    await traced.publish_raw("recovery.failure-reported.v1", key=customer, value=value, headers=headers)

    (authorized,) = await traced.wait("recovery.offer-authorized.v1", lambda s: s.record.key == customer.encode())
    assert trace_of(authorized.headers) == trace_id  # the context rode on every record of the way

    expected = {
        ("intake", "process recovery.failure-reported.v1 record"),
        ("intake", "publish recovery.case-opened.v1"),
        ("compensation", "process recovery.case-opened.v1 record"),
        ("escalation", "publish recovery.offer-authorized.v1"),
        ("followup", "process recovery.case-opened.v1 record"),
    }
    spans = await receiver.trace(trace_id, services=SERVICES, names=expected)
    # Every span of the trace hangs from another span of it, up to the publisher's (not exported here).
    assert orphans(spans) == ["process recovery.failure-reported.v1 record"]
    # The statements of the batches that handled it are in their own traces, linked (see below); a batch's own
    # span links the records it handled.
    batches = [span for spans_ in receiver.spans.values() for _, span in spans_ if span.name.startswith("process")]
    linked = [s for s in batches if any(link.trace_id.hex() == trace_id for link in s.links)]
    assert {s.name for s in linked} >= {"process recovery.failure-reported.v1", "process recovery.case-opened.v1"}
    statements = [
        span
        for spans_ in receiver.spans.values()
        for _, span in spans_
        if any(a.key == "db.system" for a in span.attributes) and span.parent_span_id in {s.span_id for s in linked}
    ]
    assert statements, "no database span under the batches that handled the failure"


async def test_a_frontline_call_starts_the_trace_its_case_and_offer_continue(traced, receiver):
    trace_id = secrets.token_hex(16)
    customer = new_id("cust")
    reply = await report(
        traced,
        AGENT,
        customer,
        category=common.CATEGORY_BILLING_ERROR,
        description="charged twice for one order",
        metadata=[("traceparent", traceparent(trace_id))],
    )

    (opened,) = await traced.wait("recovery.case-opened.v1", lambda s: s.record.key == customer.encode())
    assert trace_of(opened.headers) == trace_id
    call_name = "/recovery.intake.v1.IntakeService/ReportFailure"
    spans = await receiver.trace(
        trace_id, services={"intake", "compensation", "escalation"}, names={("intake", call_name)}
    )
    (call,) = [span for service, span in spans if service == "intake" and span.name == call_name]
    assert call.kind == call.SPAN_KIND_SERVER
    assert reply.case_id == opened.message.case_id
