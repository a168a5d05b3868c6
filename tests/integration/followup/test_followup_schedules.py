"""Followup over the real broker and Postgres: resolved cases become follow-ups at the right times, once;
a reopen cancels, a new failure holds, a corrective action reaches every linked customer once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from recovery.events.v1 import common_pb2, events_pb2

from services.common.cloudevents import parse_time
from services.common.deadletter import DEADLETTER_TOPIC, REASON
from services.common.wire import time_to_proto
from tests.integration.conftest import eventually, read_topic
from tests.integration.followup.conftest import (
    ACTIONS,
    DUE,
    OPENED,
    REOPENED,
    RESOLVED,
    at,
    header,
    metric,
    new_id,
    now,
    publish,
    read_all,
    read_events,
    resolved,
    rows,
)

SATISFACTION = common_pb2.FOLLOWUP_KIND_SATISFACTION_CHECK
CHECK_IN = common_pb2.FOLLOWUP_KIND_CHECK_IN
NOTE = common_pb2.FOLLOWUP_KIND_PERSONAL_NOTE
NOTICE = common_pb2.FOLLOWUP_KIND_CORRECTIVE_ACTION_NOTICE


async def followups_of(followup, case_id: str):
    return await rows(followup.settings, "SELECT * FROM {schema}.followups WHERE case_id = $1 ORDER BY due_at", case_id)


async def test_a_resolved_major_case_gets_three_follow_ups_at_their_times_each_once(followup, publisher):
    customer = new_id("cust")
    event = resolved(customer, severity=common_pb2.SEVERITY_MAJOR)
    resolved_at = at(event.resolved_at)
    await publish(publisher, RESOLVED, event)
    got = await read_events(
        followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=customer, count=3, settle=3.0
    )
    assert len(got) == 3
    by_kind = {message.kind: (record, message) for record, message in got}
    delays = {SATISFACTION: 3, CHECK_IN: 15, NOTE: 2}  # the test configuration's seconds
    assert set(by_kind) == set(delays)
    for kind, (record, message) in by_kind.items():
        due = at(message.due_at)
        assert due == resolved_at + timedelta(seconds=delays[kind])
        # Never before the due time, and promptly after it.
        assert parse_time(header(record, "ce_time")) >= due
        assert record.timestamp >= int(due.timestamp() * 1000)
        assert record.timestamp / 1000 - due.timestamp() < 5
        assert header(record, "ce_id") == f"followup-due:{message.followup_id}"
        assert message.case_id == event.case_id and message.owner_employee_id == "emp-owner"
        assert message.channel == common_pb2.CHANNEL_SMS  # the customer's preference, carried
        assert message.customer_timezone == event.customer_timezone
        assert message.severity == common_pb2.SEVERITY_MAJOR and message.message
    stored = await followups_of(followup, event.case_id)
    assert {r["status"] for r in stored} == {"sent"}


async def test_a_polish_customers_follow_ups_are_written_in_polish_with_their_template(followup, publisher):
    customer = new_id("cust")
    event = resolved(customer, locale="pl")
    await publish(publisher, RESOLVED, event)
    got = await read_events(
        followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=customer, count=2, settle=1.0
    )
    by_kind = {message.kind: message for _, message in got}
    check = by_kind[SATISFACTION]
    assert (
        check.message
        == check.text.text
        == ("Czy są Państwo zadowoleni z tego, jak rozwiązaliśmy sprawę? Prosimy o odpowiedź jednym kliknięciem.")
    )
    assert (check.text.template_id, check.text.locale) == ("followup.satisfaction_check", "pl")
    check_in = by_kind[CHECK_IN]  # three days in the policy (seconds in the test's tuning): Polish plural
    assert check_in.message == "Minęły 3 dni: czy wszystko działa, jak należy?"
    assert dict(check_in.text.params) == {"count": "3"}


async def test_a_resolution_in_a_language_nobody_speaks_here_is_dead_lettered_by_name(followup, publisher):
    customer = new_id("cust")
    event = resolved(customer, locale="xx-YY")
    await publish(publisher, RESOLVED, event)

    def mine(records):
        return [r for r in records if r.key == customer.encode()]

    bootstrap = followup.settings.kafka_bootstrap_servers
    (dead,) = mine(await read_topic(bootstrap, DEADLETTER_TOPIC, until=mine, timeout=40))
    assert "locale: 'xx-YY' is not a supported locale" in dict(dead.headers)[REASON].decode()
    assert await followups_of(followup, event.case_id) == []


async def test_a_redelivered_resolution_schedules_nothing_more(followup, publisher):
    customer = new_id("cust")
    event = resolved(customer)
    await publish(publisher, RESOLVED, event)
    await publish(publisher, RESOLVED, event)  # a second record with another ce_id: the business key holds
    await eventually(lambda: followups_of(followup, event.case_id))
    await asyncio.sleep(1.0)
    assert len(await followups_of(followup, event.case_id)) == 2  # satisfaction check and check-in


async def test_a_reopen_cancels_the_pending_check_in_and_the_next_resolution_plans_anew(followup, publisher):
    customer = new_id("cust")
    event = resolved(customer)
    await publish(publisher, RESOLVED, event)
    await eventually(lambda: followups_of(followup, event.case_id))
    reopened = events_pb2.CaseReopened(
        customer_id=customer, case_id=event.case_id, reason="still not delivered", reopened_at=time_to_proto(now())
    )
    await publish(publisher, REOPENED, reopened)

    async def check_in_cancelled():
        found = [r for r in await followups_of(followup, event.case_id) if r["kind"] == "check_in"]
        return found and found[0]["status"] == "cancelled" and found[0]

    row = await eventually(check_in_cancelled)
    assert row["cancel_reason"] == "case reopened: still not delivered"
    # Past the check-in's due time: it never went out.
    await asyncio.sleep(max(0.0, (row["due_at"] - now()).total_seconds()) + 2)
    got = await read_all(followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=customer)
    assert CHECK_IN not in {m.kind for _, m in got}
    again = resolved(customer, event.case_id, resolution_number=2)
    await publish(publisher, RESOLVED, again)

    async def replanned():
        found = await followups_of(followup, event.case_id)
        return [r for r in found if r["occasion"] == "resolution:2"]

    assert {r["kind"] for r in await eventually(replanned)} == {"satisfaction_check", "check_in"}


async def test_a_new_failure_holds_the_customer_other_check_ins(followup, publisher):
    customer = new_id("cust")
    first = resolved(customer)
    await publish(publisher, RESOLVED, first)
    await eventually(lambda: followups_of(followup, first.case_id))
    opened_at = now()
    await publish(
        publisher,
        OPENED,
        events_pb2.CaseOpened(customer_id=customer, case_id=new_id("case"), opened_at=time_to_proto(opened_at)),
        source="intake",
    )

    async def held():
        found = [r for r in await followups_of(followup, first.case_id) if r["kind"] == "check_in"]
        return found and found[0]["due_at"] > found[0]["original_due_at"] and found[0]

    row = await eventually(held)
    assert row["status"] == "pending"
    assert row["due_at"] >= opened_at + timedelta(hours=168)  # the policy's hold, then the customer's daytime
    assert row["original_due_at"] - at(first.resolved_at) == timedelta(seconds=15)


async def test_a_corrective_action_reaches_every_linked_customer_once(followup, publisher):
    component, team = new_id("hub"), new_id("team")
    a, b, c, d, e = (new_id("cust") for _ in range(5))
    cases = [
        resolved(a, root_cause_area=common_pb2.Area(component=component, team="ops")),
        resolved(b, root_cause_area=common_pb2.Area(component=component)),
        resolved(b, root_cause_area=common_pb2.Area(component=component)),  # b's second case at the same area
        resolved(c, root_cause_area=common_pb2.Area(team=team)),  # no component: matched by team
        resolved(d, root_cause_area=common_pb2.Area(component=new_id("other"))),  # named by the action instead
        resolved(e, root_cause_area=common_pb2.Area(component=new_id("other"), team=team)),  # not this area
    ]
    for case in cases:
        await publish(publisher, RESOLVED, case)
    for case in cases:
        await eventually(lambda case=case: followups_of(followup, case.case_id))
    by_component = events_pb2.CorrectiveActionCompleted(
        customer_id=f"area:component:{component}",
        action_id=new_id("act"),
        area=common_pb2.Area(component=component),
        description="the sorting hub now double-checks labels",
        related_case_ids=[cases[4].case_id],
        completed_at=time_to_proto(now()),
    )
    by_team = events_pb2.CorrectiveActionCompleted(
        customer_id=f"area:team:{team}",
        action_id=new_id("act"),
        area=common_pb2.Area(team=team),
        description="the team got a second dispatcher",
        completed_at=time_to_proto(now()),
    )
    await publish(publisher, ACTIONS, by_component, source="engineering")
    await publish(publisher, ACTIONS, by_component, source="engineering")  # redelivered with a new ce_id
    await publish(publisher, ACTIONS, by_team, source="engineering")

    customers = [a, b, c, d, e]

    async def all_sent():
        found = await rows(
            followup.settings,
            "SELECT status FROM {schema}.followups WHERE kind = 'corrective_action_notice' AND customer_id = ANY($1)",
            customers,
        )
        return len(found) >= 4 and all(r["status"] == "sent" for r in found)

    await eventually(all_sent, timeout=40)
    # The relay publishes a moment after "sent" commits; a duplicate, if any, would show up within the settle.
    got = await read_events(
        followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=customers, count=4, settle=2.0
    )
    notices = [m for _, m in got if m.kind == NOTICE]
    heard = sorted((m.customer_id, m.action_id) for m in notices)
    assert heard == sorted(
        [
            (a, by_component.action_id),
            (b, by_component.action_id),
            (d, by_component.action_id),
            (c, by_team.action_id),
        ]
    )
    for message in notices:
        expected = by_team if message.customer_id == c else by_component
        assert message.corrective_action_description == expected.description


async def test_a_corrective_action_naming_an_incident_reaches_every_customer_of_it(followup, publisher):
    incident = new_id("flight-LO281")
    stranded = [new_id("cust") for _ in range(3)]
    elsewhere = new_id("cust")
    cases = [resolved(customer, incident_id=incident) for customer in stranded]
    cases.append(resolved(elsewhere, root_cause_area=common_pb2.Area(component=new_id("other"))))
    for case in cases:
        await publish(publisher, RESOLVED, case)
    for case in cases:
        await eventually(lambda case=case: followups_of(followup, case.case_id))
    action = events_pb2.CorrectiveActionCompleted(
        customer_id=f"incident:{incident}",
        action_id=new_id("act"),
        incident_id=incident,  # no area: the incident is what was put right
        description="we added a spare aircraft to the morning rotation",
        completed_at=time_to_proto(now()),
    )
    await publish(publisher, ACTIONS, action, source="flight-operations")

    async def all_sent():
        found = await rows(
            followup.settings,
            "SELECT status FROM {schema}.followups WHERE kind = 'corrective_action_notice' AND customer_id = ANY($1)",
            stranded,
        )
        return len(found) == 3 and all(r["status"] == "sent" for r in found)

    await eventually(all_sent, timeout=40)
    got = await read_events(
        followup.settings.kafka_bootstrap_servers, DUE, events_pb2.FollowupDue, keys=stranded, count=3, settle=1.0
    )
    notices = [m for _, m in got if m.kind == NOTICE]
    assert sorted(m.customer_id for m in notices) == sorted(stranded)
    assert {m.action_id for m in notices} == {action.action_id}
    later = await rows(
        followup.settings,
        "SELECT 1 FROM {schema}.followups WHERE kind = 'corrective_action_notice' AND customer_id = $1",
        elsewhere,
    )
    assert later == [], "a customer outside the incident hears nothing of it"


async def test_a_new_policy_version_applies_without_restart_and_a_bad_one_is_refused(followup, publisher):
    path = Path(followup.settings.policy_path)
    original = read(path)

    def loads(outcome: str) -> float:
        return metric(followup, "recovery_policy_loads_total", policy="followup", outcome=outcome)

    async def counted(outcome: str, above: float) -> bool:
        return loads(outcome) > above

    loaded, refused = loads("loaded"), loads("refused")
    try:
        write(
            path,
            original.replace('version = "2026.4"', 'version = "2026.5-test"').replace(
                "max_contacts = 20", "max_contacts = 19"
            ),
        )
        await eventually(lambda: counted("loaded", loaded))  # the store polls every 0.2 s here
        write(path, original.replace("max_contacts = 20", "max_contacts = 0"))  # refused: the 2026.5-test stays
        await eventually(lambda: counted("refused", refused))
        customer = new_id("cust")
        event = resolved(customer)
        await publish(publisher, RESOLVED, event)
        found = await eventually(lambda: followups_of(followup, event.case_id))
        check_in = next(r for r in found if r["kind"] == "check_in")
        assert check_in["policy_version"] == "2026.5-test"
        assert (check_in["template_id"], check_in["locale"]) == ("followup.check_in", "en")
        assert check_in["message"].endswith("days on: is everything working as it should?")
    finally:
        write(path, original)


def read(path: Path) -> str:
    return path.read_text()


def write(path: Path, text: str) -> None:
    path.write_text(text)
