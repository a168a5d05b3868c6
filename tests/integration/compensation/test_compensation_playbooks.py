"""Plan B over the real broker and Postgres: a declared incident's cases are offered its playbook, those opened
after the declaration with their first offer, those opened before by a re-quote (unless the normal rules give
more); a declaration redelivered re-quotes nothing twice, and one without its playbook is dead-lettered."""

from __future__ import annotations

from recovery.compensation.v1 import compensation_pb2
from recovery.events.v1 import common_pb2, events_pb2

from services.common.deadletter import DEADLETTER_TOPIC, REASON
from services.common.wire import time_to_proto
from tests.integration.compensation.conftest import (
    case_opened,
    eur,
    metric,
    new_id,
    now,
    offers_for,
    publish,
    rows,
)
from tests.integration.compensation.test_compensation_ledger import _recompute
from tests.integration.conftest import eventually, read_topic

CASE_OPENED = "recovery.case-opened.v1"
INCIDENT_DECLARED = "recovery.incident-declared.v1"
PLAYBOOK = "cancelled_flight"
# The cancelled_flight playbook on a late delivery (no statutory line): voucher, hotel, rebooking, account credit.
PLAYBOOK_LINES = [
    (common_pb2.REMEDY_KIND_VOUCHER, 1_500),
    (common_pb2.REMEDY_KIND_REIMBURSEMENT, 12_000),
    (common_pb2.REMEDY_KIND_REIMBURSEMENT, 8_000),
    (common_pb2.REMEDY_KIND_ACCOUNT_CREDIT, 5_000),
]


def declared(incident: str, **fields) -> events_pb2.IncidentDeclared:
    base = {
        "customer_id": f"incident:{incident}",
        "incident_id": incident,
        "playbook_id": PLAYBOOK,
        "declared_by": "e-90",
        "declared_by_role": "team_lead",
        "reason": "storm closed the airport",
        "per_case_limit": eur(50_000),
        "limits_policy_version": "2026-12-02.2",
        "declared_at": time_to_proto(now()),
    }
    return events_pb2.IncidentDeclared(**(base | fields))


def money_lines(offer) -> list[tuple[int, int]]:
    return [(li.kind, li.amount.amount_minor) for li in offer.line_items if li.amount.amount_minor]


async def stored_playbook(compensation, case_id: str) -> str:
    ((facts,),) = await rows(compensation, "SELECT facts FROM cases WHERE case_id = $1", case_id)
    return compensation_pb2.CaseFacts.FromString(facts).playbook_id


async def declaration_stored(compensation, incident: str) -> bool:
    async def stored():
        return await rows(compensation, "SELECT 1 FROM incident_playbooks WHERE incident_id = $1", incident)

    return bool(await eventually(stored))


async def test_a_case_opened_after_the_declaration_gets_the_playbook_first(stack, compensation, publisher):
    incident, customer, case = new_id("incident"), new_id("cust"), new_id("case")
    await publish(publisher, INCIDENT_DECLARED, declared(incident))
    # The declaration is stored before the case arrives (another topic: nothing orders the two otherwise).
    assert await declaration_stored(compensation, incident)
    await publish(publisher, CASE_OPENED, case_opened(customer, case, incident_id=incident), source="intake")
    (offer,) = await offers_for(stack, customer, count=1)
    assert offer.playbook_id == PLAYBOOK and offer.version == 1 and not offer.needs_review
    assert money_lines(offer) == PLAYBOOK_LINES
    assert [li.rule_id for li in offer.line_items[:4]] == [f"playbook.{PLAYBOOK}.{i}" for i in (1, 2, 3, 4)]
    assert offer.total == eur(26_500)
    assert await stored_playbook(compensation, case) == PLAYBOOK
    again = await _recompute(compensation, offer.offer_id)
    assert again.playbook_id == PLAYBOOK and again.total.amount_minor == 26_500


async def test_cases_opened_before_are_requoted_onto_the_playbook_unless_they_need_more(stack, compensation, publisher):
    incident = new_id("incident")
    small, large = new_id("cust"), new_id("cust")
    small_case, large_case = new_id("case"), new_id("case")
    # 300 EUR of hotel and 150 EUR of taxi, with receipts: more than the playbook's 265 EUR.
    costs = [
        common_pb2.CostItem(kind=common_pb2.COST_KIND_HOTEL, amount=eur(30_000), has_receipt=True),
        common_pb2.CostItem(kind=common_pb2.COST_KIND_TAXI, amount=eur(15_000), has_receipt=True),
    ]
    await publish(publisher, CASE_OPENED, case_opened(small, small_case, incident_id=incident), source="intake")
    await publish(
        publisher,
        CASE_OPENED,
        case_opened(large, large_case, incident_id=incident, reported_costs=costs),
        source="intake",
    )
    (first,) = await offers_for(stack, small, count=1)
    (kept,) = await offers_for(stack, large, count=1)
    assert first.total == eur(1_500) and not first.playbook_id
    assert kept.total == eur(46_500) and not kept.playbook_id

    await publish(publisher, INCIDENT_DECLARED, declared(incident))
    requoted = (await offers_for(stack, small, count=2))[1]
    assert requoted.version == 2 and requoted.supersedes_offer_id == first.offer_id
    assert requoted.requote_reason == common_pb2.REQUOTE_REASON_INCIDENT_DECLARED
    assert requoted.requote_detail == f"incident {incident} declared with playbook {PLAYBOOK} by e-90"
    assert requoted.playbook_id == PLAYBOOK and money_lines(requoted) == PLAYBOOK_LINES
    # The case with large costs keeps its offer, but knows its playbook for later re-quotes.
    assert len(await offers_for(stack, large, count=1, settle=2.0)) == 1
    assert await stored_playbook(compensation, large_case) == PLAYBOOK
    assert metric(compensation, "recovery_compensation_requotes_total", reason="incident_declared") >= 1


async def test_a_redelivered_declaration_requotes_once_and_counts_a_duplicate(stack, compensation, publisher):
    incident, customer = new_id("incident"), new_id("cust")
    await publish(publisher, CASE_OPENED, case_opened(customer, new_id("case"), incident_id=incident), source="intake")
    await offers_for(stack, customer, count=1)
    before = metric(compensation, "recovery_compensation_duplicates_ignored_total", kind="incident_declared")
    event = declared(incident)
    await publish(publisher, INCIDENT_DECLARED, event)
    await publish(publisher, INCIDENT_DECLARED, event)  # the same declaration again, under another ce_id
    offers = await offers_for(stack, customer, count=2, settle=3.0)
    assert [o.version for o in offers] == [1, 2] and offers[1].playbook_id == PLAYBOOK
    after = metric(compensation, "recovery_compensation_duplicates_ignored_total", kind="incident_declared")
    assert after == before + 1
    assert await rows(
        compensation, "SELECT playbook_id, declared_by FROM incident_playbooks WHERE incident_id = $1", incident
    ) == [(PLAYBOOK, "e-90")]


async def test_a_declaration_without_a_playbook_is_dead_lettered_naming_it(stack, compensation, publisher):
    incident = new_id("incident")
    await publish(publisher, INCIDENT_DECLARED, declared(incident, playbook_id=""))
    key = f"incident:{incident}".encode()

    def mine(records):
        return [r for r in records if r.key == key]

    (dead,) = mine(await read_topic(stack.kafka, DEADLETTER_TOPIC, until=mine, timeout=40))
    assert dict(dead.headers)[REASON].decode() == "playbook_id: is required"
    assert await rows(compensation, "SELECT 1 FROM incident_playbooks WHERE incident_id = $1", incident) == []
