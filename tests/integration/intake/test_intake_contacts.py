"""The contact log in the customer's history, over the real broker, Postgres and running service: whoever opens
the customer's history sees who already spoke with them, how and how it went; a redelivery adds nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from recovery.events.v1 import common_pb2, events_pb2
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

from services.common.wire import time_to_proto
from tests.integration.conftest import eventually
from tests.integration.intake.conftest import new_id, now, publish
from tests.integration.intake.test_intake_api import agent, report
from tests.support.running import channel

CONTACTS = "recovery.contact-recorded.v1"


@pytest.fixture
async def stub(intake):
    async with channel(intake.endpoints.grpc_port) as ch:
        yield intake_pb2_grpc.IntakeServiceStub(ch)


def recorded(customer_id: str, case_id: str, kind: int, at, **fields) -> events_pb2.ContactRecorded:
    contact = common_pb2.Contact(
        contact_id=new_id("contact"),
        case_id=case_id,
        customer_id=customer_id,
        kind=kind,
        employee_id="emp-owner",
        occurred_at=time_to_proto(at),
        **fields,
    )
    return events_pb2.ContactRecorded(customer_id=customer_id, contact=contact, owner_employee_id="emp-owner")


async def test_two_apologies_and_a_call_show_in_the_history_newest_first(intake, stub, publisher):
    customer = new_id("cust")
    case_id = (await stub.ReportFailure(report(customer), metadata=agent(intake))).case_id
    start = now() - timedelta(days=1)
    apology = common_pb2.CONTACT_KIND_APOLOGY
    log = [
        recorded(customer, case_id, apology, start, channel=common_pb2.CHANNEL_PHONE, note="sorry"),
        recorded(customer, case_id, apology, start + timedelta(hours=2), channel=common_pb2.CHANNEL_EMAIL),
        recorded(
            customer, case_id, common_pb2.CONTACT_KIND_CALL, start + timedelta(hours=20),
            channel=common_pb2.CHANNEL_PHONE, outcome=common_pb2.CONTACT_OUTCOME_NO_ANSWER,
        ),
    ]  # fmt: skip
    ids = [await publish(publisher, CONTACTS, m, source="escalation") for m in log]
    await publish(publisher, CONTACTS, log[0], source="escalation", ce_id=ids[0])  # a redelivery

    async def history():
        view = await stub.GetCustomerHistory(
            intake_pb2.GetCustomerHistoryRequest(customer_id=customer), metadata=agent(intake)
        )
        return view if len(view.contacts) >= 3 else None

    view = await eventually(history, timeout=30)
    assert [c.contact_id for c in view.contacts] == [m.contact.contact_id for m in reversed(log)]
    latest = view.contacts[0]
    assert (latest.kind, latest.outcome) == (common_pb2.CONTACT_KIND_CALL, common_pb2.CONTACT_OUTCOME_NO_ANSWER)
    # "Someone called them yesterday": the summary names the latest contact.
    assert view.summary.last_contact == view.contacts[0]
    # A republished copy under a new event id is the same contact: still three.
    await publish(publisher, CONTACTS, log[1], source="escalation")
    sentinel = recorded(customer, case_id, common_pb2.CONTACT_KIND_NOTE, start + timedelta(hours=21), note="sentinel")
    await publish(publisher, CONTACTS, sentinel, source="escalation")

    async def sentinel_seen():
        view = await stub.GetCustomerHistory(
            intake_pb2.GetCustomerHistoryRequest(customer_id=customer), metadata=agent(intake)
        )
        return view if any(c.note == "sentinel" for c in view.contacts) else None

    assert len((await eventually(sentinel_seen, timeout=30)).contacts) == 4
