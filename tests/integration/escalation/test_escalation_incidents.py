"""Incidents over the real broker and Postgres: the cases of one disruption are listed and counted together,
and other systems hear how its recovery stands."""

from __future__ import annotations

import grpc
import pytest
from recovery.escalation.v1 import escalation_pb2 as pb
from recovery.events.v1 import common_pb2, events_pb2

from services.escalation import bootstrap
from tests.integration.conftest import eventually, read_topic
from tests.integration.escalation.conftest import (
    OFFERS,
    OPENED,
    Client,
    Escalation,
    case_opened,
    db_fetch,
    escalation_settings,
    new_id,
    offer_for,
    policy_text,
    publish,
    read_events,
)
from tests.support.running import channel, running_service

VOUCHER = common_pb2.REMEDY_KIND_VOUCHER
UPDATES = "recovery.incident-updated.v1"


@pytest.fixture(scope="module")
async def escalation(stack, tmp_path_factory):
    settings = escalation_settings(
        stack, tmp_path_factory.mktemp("escalation-incidents"), policy_text(), incident_update_seconds=0.2
    )
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        yield Escalation(settings=settings, endpoints=endpoints)


@pytest.fixture(scope="module")
async def client(escalation):
    async with channel(escalation.endpoints.grpc_port) as ch:
        yield Client(escalation.settings, ch)


async def test_the_cases_of_a_cancelled_flight_are_counted_and_listed_together(escalation, publisher, client):
    team, incident = new_id("team"), f"flight-LO123-{new_id('d')}"
    small, big, unpriced, elsewhere = [], [], [], []
    for _ in range(3):  # within the automation limit: put right by the system at once
        small.append(case_opened(team=team, system_detected=True, incident_id=incident))
    for _ in range(2):  # above it: they wait for a person
        big.append(case_opened(team=team, system_detected=True, incident_id=incident))
    unpriced.append(case_opened(team=team, system_detected=True, incident_id=incident))  # no offer yet
    elsewhere.append(case_opened(team=team, system_detected=True))  # the same team, another failure
    for opened in (*small, *big, *unpriced, *elsewhere):
        await publish(publisher, OPENED, opened, source="intake")
    for opened in small:
        await publish(publisher, OFFERS, offer_for(opened, (VOUCHER, 2000)), source="compensation")
    for opened in big:
        await publish(publisher, OFFERS, offer_for(opened, (VOUCHER, 20000)), source="compensation")
    lead = client.as_(new_id("lead"), "team_lead", team)

    async def counted():
        try:
            got = await lead.GetIncident(pb.GetIncidentRequest(incident_id=incident))
        except grpc.aio.AioRpcError:
            return None
        return got if got.cases == 6 and got.offers_authorized == 3 and got.without_offer == 1 else None

    summary = await eventually(counted, timeout=40)
    assert summary.customers == 6
    assert {(s.state, s.cases) for s in summary.by_state} == {
        (pb.CASE_STATE_QUEUED, 6)  # put right or not, nobody has claimed them yet
    }
    assert [(m.currency, m.amount_minor) for m in summary.authorized_total] == [("EUR", 6000)]
    listed = await lead.ListCases(pb.ListCasesRequest(incident_id=incident, page_size=50))
    assert {c.case_id for c in listed.cases} == {o.case_id for o in (*small, *big, *unpriced)}
    assert {c.incident_id for c in listed.cases} == {incident}
    with pytest.raises(grpc.aio.AioRpcError) as unnamed:
        await lead.GetIncident(pb.GetIncidentRequest())
    assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "incident_id" in unnamed.value.details()


async def test_other_systems_hear_how_an_incidents_recovery_stands_as_its_cases_change(escalation, publisher):
    team, incident = new_id("team"), f"release-2026.12-{new_id('d')}"
    opened = [case_opened(team=team, system_detected=True, incident_id=incident) for _ in range(4)]
    for case in opened:
        await publish(publisher, OPENED, case, source="intake")
    offers = [offer_for(case, (VOUCHER, 2000)) for case in opened[:3]]
    flagged = offer_for(opened[3], (VOUCHER, 2000), budget_exceeded=True)  # goes to a reviewer as it arrives
    for offer in (*offers, flagged):
        await publish(publisher, OFFERS, offer, source="compensation")
    key = f"incident:{incident}".encode()

    def mine(records):
        return [r for r in records if r.key == key]

    def settled(records):
        updates = [events_pb2.IncidentUpdated.FromString(r.value) for r in mine(records)]
        return bool(updates) and (updates[-1].offers_authorized, updates[-1].awaiting_approval) == (3, 1)

    records = mine(await read_topic(escalation.settings.kafka_bootstrap_servers, UPDATES, until=settled, timeout=40))
    updates = [events_pb2.IncidentUpdated.FromString(r.value) for r in records]
    last = updates[-1]
    assert (last.incident_id, last.cases, last.customers, last.without_offer, last.resolved) == (incident, 4, 4, 0, 0)
    assert [(m.currency, m.amount_minor) for m in last.authorized_total] == [("EUR", 6000)]
    revisions = [u.revision for u in updates]
    assert revisions == sorted(set(revisions)), "each update is for newer cases than the one before"
    assert dict(records[-1].headers)["ce_id"].decode() == f"incident-updated:{incident}:{last.revision}"


DECLARED = "recovery.incident-declared.v1"
AUTHORIZED = "recovery.offer-authorized.v1"
REIMBURSEMENT = common_pb2.REMEDY_KIND_REIMBURSEMENT


async def test_a_declared_incidents_playbook_offers_are_authorised_at_once_within_the_declarers_limits(
    escalation, publisher, client
):
    team, incident = new_id("team"), f"flight-FR88-{new_id('d')}"
    lead_id = new_id("lead")
    lead, agent = client.as_(lead_id, "team_lead", team), client.as_(new_id("agent"), "agent", team)

    def declare(caller, playbook="cancelled_flight", request_id=None):
        request = pb.DeclareIncidentRequest(
            request_id=request_id or new_id("req"), incident_id=incident, playbook_id=playbook, reason="storm at FRA"
        )
        return caller.DeclareIncident(request)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await declare(agent)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "team_lead" in refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await declare(lead, playbook="hurricane")
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "playbook_id" in unknown.value.details()
    request_id = new_id("req")
    declared = (await declare(lead, request_id=request_id)).declaration
    assert (declared.playbook_id, declared.declared_by, declared.declared_by_role) == (
        "cancelled_flight",
        lead_id,
        "team_lead",
    )
    assert (declared.per_case_limit.amount_minor, declared.per_case_limit.currency) == (50000, "EUR")
    assert (await declare(lead, request_id=request_id)).declaration == declared  # a retry: the same answer
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await declare(lead, playbook="double_billing")
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS and "cancelled_flight" in again.value.details()
    announced = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        DECLARED,
        events_pb2.IncidentDeclared,
        key=f"incident:{incident}",
        count=1,
    )
    assert (announced[0].incident_id, announced[0].playbook_id, announced[0].declared_by) == (
        incident,
        "cancelled_flight",
        lead_id,
    )

    # Queued cases and one an agent owns; none is system-detected, so only the declaration can authorise at once.
    queued = [case_opened(team=team, incident_id=incident) for _ in range(2)]
    owned = case_opened(team=team, owner=new_id("agent"), owner_role="agent", incident_id=incident)
    beyond = case_opened(team=team, incident_id=incident)  # its playbook offer is above the lead's per-case limit
    normal = case_opened(team=team, incident_id=incident)  # the customer needed more: compensation's normal offer
    for opened in (*queued, owned, beyond, normal):
        await publish(publisher, OPENED, opened, source="intake")
    playbook = {"playbook_id": "cancelled_flight"}
    covered = [offer_for(o, (VOUCHER, 1500), (REIMBURSEMENT, 12000), **playbook) for o in (*queued, owned)]
    for offer in (*covered, offer_for(beyond, (REIMBURSEMENT, 60000), **playbook), offer_for(normal, (VOUCHER, 20000))):
        await publish(publisher, OFFERS, offer, source="compensation")

    async def settled():
        got = await lead.GetIncident(pb.GetIncidentRequest(incident_id=incident))
        return got if got.playbook_authorized == 3 and got.cases == 5 and got.without_offer == 0 else None

    summary = await eventually(settled, timeout=40)
    assert summary.offers_authorized == 3, "the two the declaration does not cover follow the normal path"
    assert summary.declaration == declared
    for offer in covered:
        (authorized,) = await read_events(
            escalation.settings.kafka_bootstrap_servers,
            AUTHORIZED,
            events_pb2.OfferAuthorized,
            key=offer.customer_id,
            count=1,
        )
        assert authorized.tier == common_pb2.AUTHORIZATION_TIER_PLAYBOOK and authorized.offer_id == offer.offer_id
        assert (authorized.limits.employee_id, authorized.limits.role) == (lead_id, "team_lead")
        (audit,) = await db_fetch(
            escalation.settings,
            "SELECT reason FROM audit_log WHERE case_id = $1 AND action = 'offer_authorized'",
            offer.case_id,
        )
        for part in (incident, "cancelled_flight", "comp-test", lead_id, "team_lead", "storm at FRA"):
            assert part in audit["reason"], f"the audit trail names {part}"
    # Compensation re-quotes a case priced before the declaration with the playbook: the re-quote is pre-approved.
    requote = offer_for(
        normal,
        (VOUCHER, 1500),
        (REIMBURSEMENT, 12000),
        version=2,
        requote_reason=common_pb2.REQUOTE_REASON_INCIDENT_DECLARED,
        **playbook,
    )
    await publish(publisher, OFFERS, requote, source="compensation")

    async def requoted():
        got = await lead.GetIncident(pb.GetIncidentRequest(incident_id=incident))
        return got if got.playbook_authorized == 4 else None

    assert (await eventually(requoted, timeout=40)).offers_authorized == 4

    # A flagged offer sent to a reviewer before the playbook re-quote: the declaration decides the request.
    reviewed = case_opened(team=team, incident_id=incident)
    await publish(publisher, OPENED, reviewed, source="intake")
    await publish(publisher, OFFERS, offer_for(reviewed, (VOUCHER, 20000), budget_exceeded=True), source="compensation")
    (asked,) = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        "recovery.approval-requested.v1",
        events_pb2.ApprovalRequested,
        key=reviewed.customer_id,
        count=1,
    )
    again = offer_for(reviewed, (VOUCHER, 1500), (REIMBURSEMENT, 12000), version=2, budget_exceeded=True, **playbook)
    await publish(publisher, OFFERS, again, source="compensation")
    (decided,) = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        "recovery.approval-decided.v1",
        events_pb2.ApprovalDecided,
        key=reviewed.customer_id,
        count=1,
    )
    assert decided.approval_id == asked.approval_id and decided.decision == common_pb2.APPROVAL_DECISION_APPROVE
    assert decided.decided_by.kind == common_pb2.ACTOR_KIND_SYSTEM and incident in decided.reason
    (authorized,) = await read_events(
        escalation.settings.kafka_bootstrap_servers,
        AUTHORIZED,
        events_pb2.OfferAuthorized,
        key=reviewed.customer_id,
        count=1,
    )
    assert (authorized.tier, authorized.offer_id, authorized.approval_id) == (
        common_pb2.AUTHORIZATION_TIER_PLAYBOOK,
        again.offer_id,
        asked.approval_id,
    )
    rows = await db_fetch(
        escalation.settings, "SELECT authorized_base_minor FROM incident_declarations WHERE incident_id = $1", incident
    )
    assert rows[0]["authorized_base_minor"] == 5 * 13500, "the incident's total counts what the declaration approved"
