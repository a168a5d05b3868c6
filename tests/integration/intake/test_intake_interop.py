"""Another team's client: failures published with confluent-kafka (librdkafka), not the project's aiokafka, in
every mode the CloudEvents Kafka binding allows, and the case-opened output read back with it too."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import timedelta

import grpc
import pytest
from google.protobuf import json_format
from recovery.events.v1 import common_pb2, events_pb2
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

from services.common.wire import time_to_proto
from tests.integration.intake.conftest import new_id, now
from tests.support.running import bearer, channel

confluent_kafka = pytest.importorskip("confluent_kafka")

FAILURES = "recovery.failure-reported.v1"
OPENED = "recovery.case-opened.v1"
DEADLETTERS = "recovery.deadletter.v1"
TYPE = "recovery.events.v1.FailureReported"


def failure(customer_id: str, **fields) -> events_pb2.FailureReported:
    base = {
        "customer_id": customer_id,
        "source": common_pb2.SOURCE_BILLING,
        "source_event_id": new_id("bill"),
        "category": common_pb2.CATEGORY_BILLING_ERROR,
        "occurred_at": time_to_proto(now() - timedelta(minutes=5)),
        "description": "charged twice",
    }
    return events_pb2.FailureReported(**(base | fields))


def binary_headers(ce_id: str, source: str, content_type: str, *, with_time: bool = True) -> list[tuple[str, bytes]]:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_type", TYPE.encode()),
        ("ce_source", source.encode()),
        ("content-type", content_type.encode()),
    ]
    if with_time:
        headers.append(("ce_time", now().isoformat().replace("+00:00", "Z").encode()))
    return headers


def produce(bootstrap: str, records: list[tuple[str, bytes, list[tuple[str, bytes]]]]) -> None:
    """Publish (key, value, headers) with librdkafka, as most internal teams' systems do, and wait for acks."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failed: list[str] = []
    for key, value, headers in records:
        producer.produce(
            FAILURES, value=value, key=key.encode(), headers=headers,
            on_delivery=lambda err, _msg: failed.append(str(err)) if err else None,
        )  # fmt: skip
    assert producer.flush(30) == 0 and not failed, failed


def consume(bootstrap: str, topic: str, keys: set[str], count: int, timeout: float = 60) -> list:
    """Read ``topic`` from the start with librdkafka until ``count`` records of ``keys`` arrived."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": new_id("interop"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found, deadline = [], time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            if message.key() and message.key().decode() in keys:
                found.append(message)
    finally:
        consumer.close()
    return found


async def test_binary_json_binary_protobuf_and_structured_json_from_librdkafka_all_open_cases(intake):
    bootstrap = intake.settings.kafka_bootstrap_servers
    customers = {mode: new_id("cust") for mode in ("json", "protobuf", "structured", "structured-protobuf")}
    as_json = json.dumps(json_format.MessageToDict(failure(customers["json"]))).encode()
    structured = {
        "specversion": "1.0",
        "id": new_id("ce"),
        "source": "billing",
        "type": TYPE,
        "datacontenttype": "application/json",
        "data": json_format.MessageToDict(failure(customers["structured"])),
    }  # no time: CloudEvents makes it optional
    structured_pb = {
        "specversion": "1.0",
        "id": new_id("ce"),
        "source": "billing",
        "type": TYPE,
        "time": now().isoformat(),
        "datacontenttype": "application/protobuf",
        "data_base64": base64.b64encode(failure(customers["structured-protobuf"]).SerializeToString()).decode(),
    }
    cloudevents_json = [("content-type", b"application/cloudevents+json; charset=UTF-8")]
    records = [
        (customers["json"], as_json, binary_headers(new_id("ce"), "billing", "application/json; charset=utf-8",
                                                    with_time=False)),
        (customers["protobuf"], failure(customers["protobuf"]).SerializeToString(),
         binary_headers(new_id("ce"), "billing", "application/protobuf")),
        (customers["structured"], json.dumps(structured).encode(), cloudevents_json),
        (customers["structured-protobuf"], json.dumps(structured_pb).encode(), cloudevents_json),
    ]  # fmt: skip
    await asyncio.to_thread(produce, bootstrap, records)
    opened = await asyncio.to_thread(consume, bootstrap, OPENED, set(customers.values()), 4)
    assert sorted(m.key().decode() for m in opened) == sorted(customers.values())
    for message in opened:
        event = events_pb2.CaseOpened.FromString(message.value())
        assert event.category == common_pb2.CATEGORY_BILLING_ERROR
        assert dict(message.headers())["ce_source"] == b"intake"


async def test_equal_ids_from_two_systems_are_two_failures_and_a_resend_is_one(intake):
    bootstrap = intake.settings.kafka_bootstrap_servers
    billing_customer, warehouse_customer = new_id("cust"), new_id("cust")
    billing = failure(billing_customer, source_event_id="a1").SerializeToString()
    warehouse = failure(
        warehouse_customer, source=common_pb2.SOURCE_DELIVERY_TRACKING, source_event_id="a1"
    ).SerializeToString()
    records = [
        (billing_customer, billing, binary_headers("a1", "billing", "application/protobuf")),
        (warehouse_customer, warehouse, binary_headers("a1", "warehouse", "application/protobuf")),
        (billing_customer, billing, binary_headers("a1", "billing", "application/protobuf")),  # a resend
    ]
    await asyncio.to_thread(produce, bootstrap, records)
    opened = await asyncio.to_thread(consume, bootstrap, OPENED, {billing_customer, warehouse_customer}, 2)
    assert sorted(m.key().decode() for m in opened) == sorted([billing_customer, warehouse_customer])


async def test_an_unknown_source_name_is_deadlettered_naming_the_value_and_the_allowed_ones(intake):
    bootstrap = intake.settings.kafka_bootstrap_servers
    customer = new_id("cust")
    document = json_format.MessageToDict(failure(customer)) | {"source": "SOURCE_WAREHOUSE"}
    headers = binary_headers(new_id("ce"), "warehouse", "application/json")
    await asyncio.to_thread(produce, bootstrap, [(customer, json.dumps(document).encode(), headers)])
    [dead] = await asyncio.to_thread(consume, bootstrap, DEADLETTERS, {customer}, 1)
    reason = dict(dead.headers())["dlq_reason"].decode()
    assert "source: unknown value 'SOURCE_WAREHOUSE'" in reason and "SOURCE_BILLING" in reason


async def test_a_new_system_publishes_without_a_contract_change(intake):
    bootstrap = intake.settings.kafka_bootstrap_servers
    mapped, unknown, also_unknown = new_id("cust"), new_id("cust"), new_id("cust")

    def unnamed(customer: str) -> bytes:
        # No source in the report: the publisher is known by its CloudEvents source.
        document = json_format.MessageToDict(failure(customer, source_event_id="w-1", source_system="Warehouse EU"))
        document.pop("source")
        return json.dumps(document).encode()

    records = [
        (mapped, unnamed(mapped), binary_headers(new_id("ce"), "warehouse", "application/json")),  # in the policy
        (unknown, unnamed(unknown), binary_headers(new_id("ce"), "warehouse-eu", "application/json")),  # not in it
        (also_unknown, unnamed(also_unknown), binary_headers(new_id("ce"), "returns", "application/json")),
    ]
    await asyncio.to_thread(produce, bootstrap, records)
    opened = {
        m.key().decode(): events_pb2.CaseOpened.FromString(m.value())
        for m in await asyncio.to_thread(consume, bootstrap, OPENED, {mapped, unknown, also_unknown}, 3)
    }
    # The policy's warehouse stands for delivery tracking, and is trusted like it.
    assert (opened[mapped].source, opened[mapped].system_detected) == (common_pb2.SOURCE_DELIVERY_TRACKING, True)
    # Two systems nobody configured, with equal event ids: two cases, accepted as other systems, which are
    # never put right automatically (a person looks first).
    for customer in (unknown, also_unknown):
        assert (opened[customer].source, opened[customer].system_detected) == (common_pb2.SOURCE_OTHER_SYSTEM, False)
        assert [e.source_event_id for e in opened[customer].source_events] == ["w-1"]

    # A publisher asks which case its event became.
    async with channel(intake.endpoints.grpc_port) as ch:
        stub = intake_pb2_grpc.IntakeServiceStub(ch)
        staff = bearer(intake.settings, sub="e-17", role="agent", team="front-desk")
        found = await stub.FindFailure(
            intake_pb2.FindFailureRequest(source_event_id="w-1", publisher="warehouse-eu"), metadata=staff
        )
        assert found.failure.case_id == opened[unknown].case_id and found.failure.source_event_id == "w-1"
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.FindFailure(intake_pb2.FindFailureRequest(source_event_id="never-sent"), metadata=staff)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_cancelled_flight_of_200_passengers_from_librdkafka_opens_200_cases_of_one_incident(intake):
    bootstrap = intake.settings.kafka_bootstrap_servers
    incident = new_id("flight-LO281")
    passengers = [new_id("cust") for _ in range(200)]

    def cancelled(customer: str) -> bytes:
        report = failure(
            customer, source_event_id=new_id("ops"), category=common_pb2.CATEGORY_CANCELLATION, incident_id=incident
        )
        return json.dumps(json_format.MessageToDict(report)).encode()

    records = [
        (c, cancelled(c), binary_headers(new_id("ce"), "flight-operations", "application/json")) for c in passengers
    ]
    await asyncio.to_thread(produce, bootstrap, records)
    opened = await asyncio.to_thread(consume, bootstrap, OPENED, set(passengers), 200, 120)
    events = [events_pb2.CaseOpened.FromString(m.value()) for m in opened]
    assert sorted(e.customer_id for e in events) == sorted(passengers)
    assert {e.incident_id for e in events} == {incident}
    assert len({e.case_id for e in events}) == 200, "one case per passenger, tied together by the incident"
    [hot] = await asyncio.to_thread(
        consume, bootstrap, "recovery.hotspot-detected.v1", {f"hotspot:incident:{incident}"}, 1
    )
    assert events_pb2.HotspotDetected.FromString(hot.value()).dimension == common_pb2.HOTSPOT_DIMENSION_INCIDENT
