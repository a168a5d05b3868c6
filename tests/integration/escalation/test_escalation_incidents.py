"""Incidents over the real broker and Postgres: the cases of one disruption are listed and counted together."""

from __future__ import annotations

import grpc
import pytest
from recovery.escalation.v1 import escalation_pb2 as pb
from recovery.events.v1 import common_pb2

from services.escalation import bootstrap
from tests.integration.conftest import eventually
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


@pytest.fixture(scope="module")
async def escalation(stack, tmp_path_factory):
    settings = escalation_settings(stack, tmp_path_factory.mktemp("escalation-incidents"), policy_text())
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
