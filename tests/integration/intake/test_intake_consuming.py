"""Intake over the real broker and Postgres: failures published by internal systems become cases, once."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import asyncpg
from google.protobuf import json_format
from recovery.events.v1 import common_pb2, events_pb2

from services.common import cloudevents, deadletter
from services.common.wire import time_to_proto
from tests.integration.conftest import read_topic
from tests.integration.intake.conftest import metric, new_id, now, publish, read_events

FAILURES = "recovery.failure-reported.v1"
OPENED = "recovery.case-opened.v1"
AMENDED = "recovery.case-amended.v1"


def failure(customer_id: str, **fields) -> events_pb2.FailureReported:
    base = {
        "customer_id": customer_id,
        "source": common_pb2.SOURCE_DELIVERY_TRACKING,
        "source_event_id": new_id("evt"),
        "reference": new_id("order"),
        "category": common_pb2.CATEGORY_LATE_DELIVERY,
        "occurred_at": time_to_proto(now() - timedelta(hours=1)),
        "description": "parcel two days late",
    }
    return events_pb2.FailureReported(**(base | fields))


async def cases_of(intake, customer_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(intake.settings.database_url)
    try:
        return await conn.fetch(
            f"SELECT * FROM {intake.settings.schema}.cases WHERE customer_id = $1 ORDER BY opened_at", customer_id
        )
    finally:
        await conn.close()


async def test_a_system_detected_failure_opens_a_classified_case_in_the_category_queue(intake, publisher):
    customer = new_id("cust")
    report = failure(
        customer,
        reported_costs=[
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_TAXI,
                amount=common_pb2.Money(amount_minor=60000, currency="EUR"),
                has_receipt=True,
                receipt_reference="TX-2025-60000",
            )
        ],
        avoidability=common_pb2.AVOIDABILITY_AVOIDABLE,
        area=common_pb2.Area(component="sorting-hub", team="night-shift"),
        incident_id="hub-outage-2026-12-01",
    )
    await publish(publisher, FAILURES, report)
    [opened] = await read_events(
        intake.settings.kafka_bootstrap_servers, OPENED, events_pb2.CaseOpened, key=customer, count=1
    )
    assert opened.owner_employee_id == "" and opened.owner_role == "" and opened.system_detected
    assert opened.owning_team == "logistics-care"  # the policy routes late deliveries to logistics
    assert opened.classification.severity.severity == common_pb2.SEVERITY_MAJOR  # 600 EUR at stake
    assert opened.classification.outlook.outlook == common_pb2.OUTLOOK_AT_RISK
    assert {r.code for r in opened.classification.outlook.reasons} == {"big_failure", "avoidable_failure"}
    assert opened.classification.policy_version == "2026.2"
    assert opened.reported_costs[0].amount.amount_minor == 60000
    assert opened.reported_costs[0].receipt_reference == "TX-2025-60000"  # compensation pays a receipt once
    assert opened.history.prior_failure_count == 0 and len(opened.failure_ids) == 1
    assert opened.incident_id == "hub-outage-2026-12-01"  # its disruption's cases are counted together


async def test_json_and_protobuf_bodies_are_both_accepted(intake, publisher):
    customer = new_id("cust")
    # Hand-written proto3 JSON, as another team's system would publish it (unknown fields are ignored).
    document = {
        "customerId": customer,
        "source": "SOURCE_BILLING",
        "sourceEventId": new_id("bill"),
        "category": "CATEGORY_BILLING_ERROR",
        "occurredAt": (now() - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
        "description": "charged twice",
        "orderValue": {"amountMinor": "4599", "currency": "EUR"},
        "someFutureField": True,
    }
    headers, _, _ = cloudevents.encode(events_pb2.FailureReported(), source="billing", content_type=cloudevents.JSON)
    await publisher.send_and_wait(FAILURES, json.dumps(document).encode(), key=customer.encode(), headers=headers)
    await publish(publisher, FAILURES, failure(customer, reference=""), content_type=cloudevents.PROTOBUF)
    opened = await read_events(
        intake.settings.kafka_bootstrap_servers, OPENED, events_pb2.CaseOpened, key=customer, count=2
    )
    categories = sorted(o.category for o in opened)
    assert categories == [common_pb2.CATEGORY_LATE_DELIVERY, common_pb2.CATEGORY_BILLING_ERROR]
    billing = next(o for o in opened if o.category == common_pb2.CATEGORY_BILLING_ERROR)
    assert billing.order_value.amount_minor == 4599 and billing.owning_team == "billing-care"
    assert json_format.MessageToDict(billing)["source"] == "SOURCE_BILLING"


async def test_the_same_source_event_twice_is_one_failure(intake, publisher):
    customer = new_id("cust")
    report = failure(customer)
    dropped = metric(intake, "recovery_intake_duplicates_dropped_total", source="delivery_tracking")
    await publish(publisher, FAILURES, report)
    await publish(publisher, FAILURES, report)  # a publisher retry: new ce_id, same (source, event id)
    await publish(publisher, FAILURES, failure(customer, reference=""))  # a later, different failure
    opened = await read_events(
        intake.settings.kafka_bootstrap_servers, OPENED, events_pb2.CaseOpened, key=customer, count=2, settle=1.0
    )
    assert len(opened) == 2
    assert len(await cases_of(intake, customer)) == 2
    # Dropped as a duplicate, not refused: the publisher did nothing wrong by retrying.
    assert metric(intake, "recovery_intake_duplicates_dropped_total", source="delivery_tracking") == dropped + 1
    dead = await read_topic(intake.settings.kafka_bootstrap_servers, deadletter.DEADLETTER_TOPIC, until=lambda rs: True)
    assert not [r for r in dead if r.key == customer.encode()]


async def test_failures_on_one_order_merge_within_the_window_and_not_outside_it(intake, publisher):
    customer = new_id("cust")
    order = new_id("order")
    first_at = now() - timedelta(days=4)
    first = failure(customer, reference=order, occurred_at=time_to_proto(first_at))
    await publish(publisher, FAILURES, first)
    [opened_first] = await read_events(
        intake.settings.kafka_bootstrap_servers, OPENED, events_pb2.CaseOpened, key=customer, count=1
    )
    # A publisher maps its event to the case it became.
    assert [(e.source_event_id, e.failure_id) for e in opened_first.source_events] == [
        (first.source_event_id, opened_first.failure_ids[0])
    ]
    later = failure(
        customer,
        reference=order,
        occurred_at=time_to_proto(first_at + timedelta(hours=20)),
        category=common_pb2.CATEGORY_DAMAGED_ITEM,
        reported_costs=[
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_OTHER, amount=common_pb2.Money(amount_minor=2500, currency="EUR")
            )
        ],
    )
    await publish(publisher, FAILURES, later)
    [amended] = await read_events(
        intake.settings.kafka_bootstrap_servers, AMENDED, events_pb2.CaseAmended, key=customer, count=1
    )
    assert amended.revision == 2 and len(amended.failure_ids) == 2
    assert amended.merged_failure.source_event_id == later.source_event_id
    assert [e.source_event_id for e in amended.source_events] == [first.source_event_id, later.source_event_id]
    assert [e.failure_id for e in amended.source_events] == list(amended.failure_ids)
    assert amended.category == common_pb2.CATEGORY_LATE_DELIVERY  # the case keeps its first failure's category
    assert amended.reported_costs[0].amount.amount_minor == 2500
    # 49 hours after the first failure is outside the 48-hour window: a case of its own.
    outside = failure(customer, reference=order, occurred_at=time_to_proto(first_at + timedelta(hours=49)))
    await publish(publisher, FAILURES, outside)
    opened = await read_events(
        intake.settings.kafka_bootstrap_servers, OPENED, events_pb2.CaseOpened, key=customer, count=2
    )
    assert len(opened) == 2 and opened[1].history.prior_failure_count == 2
    assert len(await cases_of(intake, customer)) == 2


def _from_intake(record, group: str) -> bool:
    return dict(record.headers).get(deadletter.CONSUMER_GROUP) == group.encode()


async def test_every_bad_record_is_deadlettered_with_its_reason_and_changes_nothing(intake, publisher):
    customer = new_id("cust")
    key = customer.encode()
    good_headers, good_value, _ = cloudevents.encode(failure(customer), source="test")
    bad_reports = {
        "negative": failure(customer, order_value=common_pb2.Money(amount_minor=-5, currency="EUR")),
        "currency": failure(customer, order_value=common_pb2.Money(amount_minor=5, currency="EUX")),
        "future": failure(customer, occurred_at=time_to_proto(now() + timedelta(days=30))),
        "no_event_id": failure(customer, source_event_id=""),
        "no_category": failure(customer, category=common_pb2.CATEGORY_UNSPECIFIED),
        "long": failure(customer, description="x" * 5000),
    }
    raw = [
        (b"garbage", []),  # no CloudEvents headers at all
        (b"\xff\x00garbage", good_headers),  # not protobuf
        (good_value, [(k, b"recovery.events.v1.CaseOpened" if k == "ce_type" else v) for k, v in good_headers]),
        (b"[1, 2]", [(k, b"application/json" if k == "content-type" else v) for k, v in good_headers]),
    ]
    for value, headers in raw:
        await publisher.send_and_wait(FAILURES, value, key=key, headers=headers)
    # A record whose key is not its customer: it would land on another customer's partition.
    headers, value, _ = cloudevents.encode(failure(customer), source="test")
    await publisher.send_and_wait(FAILURES, value, key=b"someone-else", headers=headers)
    for report in bad_reports.values():
        await publish(publisher, FAILURES, report)

    group = intake.settings.service_name
    expected = len(raw) + 1 + len(bad_reports)
    dead = await read_topic(
        intake.settings.kafka_bootstrap_servers,
        deadletter.DEADLETTER_TOPIC,
        until=lambda rs: len([r for r in rs if _from_intake(r, group) and r.key in (key, b"someone-else")]) >= expected,
        timeout=40,
    )
    reasons = [
        deadletter.describe(r.headers)["dlq_reason"]
        for r in dead
        if _from_intake(r, group) and r.key in (key, b"someone-else")
    ]
    assert len(reasons) == expected
    text = "\n".join(reasons)
    for fragment in (
        "missing header ce_specversion",
        "does not decode as recovery.events.v1.FailureReported",
        "unexpected ce_type 'recovery.events.v1.CaseOpened'",
        "the JSON body must be an object",
        "is not the message's customer_id",
        "order_value.amount_minor: must not be negative",
        "order_value.currency: unknown ISO-4217 currency 'EUX'",
        "occurred_at: is in the future",
        "source_event_id: is required for source delivery_tracking",
        "category: is required",
        "description: must be at most 4000 characters",
    ):
        assert fragment in text, fragment
    await asyncio.sleep(0.5)
    assert await cases_of(intake, customer) == []  # nothing of the bad records was written


async def test_a_negative_survey_answer_is_a_failure_like_any_other(intake, publisher):
    customer = new_id("cust")
    answer = failure(
        customer,
        source=common_pb2.SOURCE_SURVEY,
        survey_score=2,
        reference="",
        category=common_pb2.CATEGORY_SERVICE_QUALITY,
        description="'How was everything?' - 'the driver was rude and late'",
    )
    await publish(publisher, FAILURES, answer, source="survey-tool")
    [opened] = await read_events(
        intake.settings.kafka_bootstrap_servers, OPENED, events_pb2.CaseOpened, key=customer, count=1
    )
    assert opened.source == common_pb2.SOURCE_SURVEY and opened.system_detected
    assert opened.owning_team == "customer-care"  # no category route: the default queue
