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
    escalation_settings,
    new_id,
    offer_for,
    policy_text,
    publish,
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
