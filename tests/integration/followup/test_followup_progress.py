"""Progress updates over the real broker and Postgres: the customer is told where their case stands, in their
language and channel, once per move; an update made obsolete by a newer one is never sent."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from recovery.events.v1 import common_pb2, events_pb2

from services.common.deadletter import DEADLETTER_TOPIC, REASON
from services.common.texts import text
from services.common.wire import time_to_proto
from services.followup.adapters.texts import catalogue
from tests.integration.conftest import eventually, read_topic
from tests.integration.followup.conftest import (
    DUE,
    PROGRESSED,
    header,
    new_id,
    now,
    progressed,
    publish,
    read_all,
    read_events,
    rows,
)
from tests.support.outside import daytime_zone

PROGRESS = common_pb2.FOLLOWUP_KIND_PROGRESS_UPDATE


async def updates_of(followup, case_id: str):
    return await rows(
        followup.settings,
        "SELECT * FROM {schema}.followups WHERE case_id = $1 AND kind = 'progress_update' ORDER BY original_due_at",
        case_id,
    )


async def test_progress_updates_in_order_in_polish_with_an_obsolete_one_never_sent(followup, publisher):
    customer, case_id = new_id("cust"), new_id("case")
    start = now()
    by = start + timedelta(hours=4)
    zone = daytime_zone()  # the customer's own zone, where it is day now: quiet hours (21:00-09:00) never wait
    # Acknowledged, then at once waiting for an approval: the first is obsolete before it is due (2 s here).
    await publish(
        publisher, PROGRESSED, progressed(customer, case_id, common_pb2.PROGRESS_STAGE_ACKNOWLEDGED, start, locale="pl")
    )
    waiting = progressed(
        customer, case_id, common_pb2.PROGRESS_STAGE_AWAITING_APPROVAL, start + timedelta(milliseconds=300),
        expected_by=time_to_proto(by), locale="pl", customer_timezone=zone,
    )  # fmt: skip
    await publish(publisher, PROGRESSED, waiting)
    [(record, first)] = await read_events(
        followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=customer, count=1, settle=3.0
    )
    assert (first.kind, first.channel, first.text.locale) == (PROGRESS, common_pb2.CHANNEL_SMS, "pl")
    assert first.text.template_id == "followup.progress_update.awaiting_approval"
    # "... Odezwiemy się do 3 grudnia 15:30.": the deadline in the customer's own time, written the Polish way.
    local = by.astimezone(ZoneInfo(zone)).replace(microsecond=0)
    said = catalogue().render(text("followup.progress_update.awaiting_approval", by=local), "pl").text
    assert first.message == said and f"{local:%H:%M}" in said and said.startswith("Uzgadniamy z naszym zespołem")
    assert header(record, "ce_id") == f"followup-due:{first.followup_id}"
    stored = await updates_of(followup, case_id)
    assert [(r["status"], r["template_id"]) for r in stored] == [
        ("cancelled", "followup.progress_update.acknowledged"),
        ("sent", "followup.progress_update.awaiting_approval"),
    ]
    assert stored[0]["cancel_reason"] == "obsolete: awaiting_approval is newer"

    # Then the offer is ready and, once it is sent, the case is done: both told, in order.
    ready = progressed(customer, case_id, common_pb2.PROGRESS_STAGE_OFFER_READY, now(), locale="pl")
    await publish(publisher, PROGRESSED, ready)
    await read_events(followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=customer, count=2)
    await publish(
        publisher, PROGRESSED, progressed(customer, case_id, common_pb2.PROGRESS_STAGE_DONE, now(), locale="pl")
    )
    got = await read_events(
        followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=customer, count=3, settle=1.0
    )
    assert [m.text.template_id.rsplit(".", 1)[1] for _, m in got] == ["awaiting_approval", "offer_ready", "done"]
    assert got[2][1].message == "Państwa sprawa została załatwiona. Dziękujemy za cierpliwość."

    # A replay of the old acknowledgement is older than what was planned: kept, cancelled as obsolete, never sent.
    await publish(
        publisher,
        PROGRESSED,
        progressed(customer, case_id, common_pb2.PROGRESS_STAGE_ACKNOWLEDGED, start - timedelta(seconds=1)),
    )

    async def replay_recorded():
        found = [
            r
            for r in await updates_of(followup, case_id)
            if r["cancel_reason"] == "obsolete: a newer update was planned"
        ]
        return found or None

    await eventually(replay_recorded, timeout=30)
    assert (
        len(await read_all(followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=customer)) == 3
    )


async def test_an_awaiting_approval_update_without_its_deadline_is_dead_lettered_by_name(followup, publisher):
    customer = new_id("cust")
    bad = progressed(customer, new_id("case"), common_pb2.PROGRESS_STAGE_AWAITING_APPROVAL, now())
    await publish(publisher, PROGRESSED, bad)

    def mine(records):
        return [r for r in records if r.key == customer.encode()]

    records = await read_topic(
        followup.settings.kafka_bootstrap_servers, DEADLETTER_TOPIC, until=lambda rs: len(mine(rs)) >= 1, timeout=40
    )
    assert "expected_by" in header(mine(records)[0], REASON)
