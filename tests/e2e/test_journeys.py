"""Journeys through the running system, driven only from outside, as users and other systems drive it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from recovery.events.v1 import common_pb2, events_pb2
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

from services.common import cloudevents
from services.common.wire import time_to_proto
from tests.integration.conftest import read_topic
from tests.support.running import channel

pytestmark = pytest.mark.e2e


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def opened_cases(system, customer: str, count: int) -> list[events_pb2.CaseOpened]:
    records = await read_topic(
        system.kafka,
        "recovery.case-opened.v1",
        until=lambda rs: len([r for r in rs if r.key == customer.encode()]) >= count,
        timeout=60,
        partitions=6,
    )
    return [events_pb2.CaseOpened.FromString(r.value) for r in records if r.key == customer.encode()]


async def test_failures_from_a_system_and_from_the_frontline_become_cases(system):
    customer = new_id("cust")
    detected = events_pb2.FailureReported(
        customer_id=customer,
        source=common_pb2.SOURCE_DELIVERY_TRACKING,
        source_event_id=new_id("trk"),
        reference=new_id("order"),
        category=common_pb2.CATEGORY_LATE_DELIVERY,
        occurred_at=time_to_proto(datetime.now(UTC) - timedelta(hours=2)),
        description="parcel missed its delivery slot",
    )
    producer = AIOKafkaProducer(bootstrap_servers=system.kafka, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        headers, value, _ = cloudevents.encode(detected, source="delivery-tracking", content_type=cloudevents.JSON)
        await producer.send_and_wait("recovery.failure-reported.v1", value, key=customer.encode(), headers=headers)
    finally:
        await producer.stop()
    await opened_cases(system, customer, 1)  # the system's report is a case before the customer calls
    async with channel(system.grpc_ports["intake"]) as ch:
        reply = await intake_pb2_grpc.IntakeServiceStub(ch).ReportFailure(
            intake_pb2.ReportFailureRequest(
                request_id=new_id("req"),
                customer_id=customer,
                category=common_pb2.CATEGORY_BILLING_ERROR,
                occurred_at=time_to_proto(datetime.now(UTC) - timedelta(minutes=10)),
                description="charged twice for one order",
            ),
            metadata=system.token(sub="agent-1", role="agent", team="front-desk"),
            timeout=30,
        )
    opened = await opened_cases(system, customer, 2)
    by_source = {case.source: case for case in opened}
    assert by_source[common_pb2.SOURCE_DELIVERY_TRACKING].owner_employee_id == ""
    frontline = by_source[common_pb2.SOURCE_FRONTLINE]
    assert (frontline.case_id, frontline.owner_employee_id, frontline.owning_team) == (
        reply.case_id,
        "agent-1",
        "front-desk",
    )
    assert frontline.history.prior_failure_count == 1  # the system-detected failure came first
