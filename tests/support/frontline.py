"""What the frontline UI and other internal systems do, as calls: the journeys' and the demo's verbs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from recovery.escalation.v1 import escalation_pb2 as cases
from recovery.events.v1 import common_pb2 as common
from recovery.events.v1 import events_pb2 as events
from recovery.followup.v1 import followup_pb2
from recovery.intake.v1 import intake_pb2

from services.common.wire import time_to_proto
from tests.support.outside import Employee, Outside, daytime_zone, new_id

AGENT = Employee("e2e-agent-ana", "agent", "front-desk")
LEAD = Employee("e2e-lead-lina", "team_lead", "front-desk")
MANAGER = Employee("e2e-manager-marius", "manager", "front-desk")
LOGISTICS_AGENT = Employee("e2e-agent-lukas", "agent", "logistics-care")  # system-detected deliveries queue here


def eur(amount_minor: int) -> common.Money:
    return common.Money(amount_minor=amount_minor, currency="EUR")


def ago(**delta) -> object:
    return time_to_proto(datetime.now(UTC) - timedelta(**delta))


def system_failure(customer: str, **fields) -> events.FailureReported:
    """A late parcel seen by delivery tracking: small, not our fault, first time."""
    base = {
        "customer_id": customer,
        "source": common.SOURCE_DELIVERY_TRACKING,
        "source_event_id": new_id("trk"),
        "reference": new_id("order"),
        "category": common.CATEGORY_LATE_DELIVERY,
        "occurred_at": ago(hours=3),
        "description": "parcel missed its delivery slot",
        "order_value": eur(3_000),
        "avoidability": common.AVOIDABILITY_UNAVOIDABLE,
        "customer_timezone": daytime_zone(),
        "preferred_channel": common.CHANNEL_EMAIL,
    }
    return events.FailureReported(**(base | fields))


async def report(
    outside: Outside, who: Employee, customer: str, *, metadata: Sequence[tuple[str, str]] = (), **fields
) -> intake_pb2.ReportFailureResponse:
    """The frontline reports what the customer told them; the reporter becomes the owner (``metadata`` is
    sent beside the employee's token)."""
    base = {
        "request_id": new_id("req"),
        "customer_id": customer,
        "reference": new_id("order"),
        "occurred_at": ago(hours=1),
        "customer_timezone": daytime_zone(),
        "preferred_channel": common.CHANNEL_EMAIL,
    }
    return await outside.intake().ReportFailure(
        intake_pb2.ReportFailureRequest(**(base | fields)), metadata=[*outside.as_(who), *metadata], timeout=30
    )


async def offered(outside: Outside, case_id: str, who: Employee, *, version: int = 1) -> cases.Case:
    return await outside.case(case_id, who, lambda c: c.current_offer.version >= version)


async def resolve(outside: Outside, case_id: str, who: Employee, **fields) -> cases.Case:
    reply = await outside.cases().ResolveCase(
        cases.ResolveCaseRequest(request_id=new_id("req"), case_id=case_id, resolution_summary="put right", **fields),
        metadata=outside.as_(who),
        timeout=30,
    )
    return reply.case


async def accept_and_resolve(outside: Outside, case: cases.Case, who: Employee, **resolution) -> cases.Case:
    """The owner makes the authorised offer, the customer accepts, the owner closes the case."""
    stub, meta, offer_id = outside.cases(), outside.as_(who), case.current_offer.offer_id
    await stub.PresentOffer(
        cases.PresentOfferRequest(request_id=new_id("req"), case_id=case.case_id, offer_id=offer_id),
        metadata=meta,
        timeout=30,
    )
    await stub.RecordCustomerDecision(
        cases.RecordCustomerDecisionRequest(
            request_id=new_id("req"),
            case_id=case.case_id,
            offer_id=offer_id,
            decision=common.CUSTOMER_DECISION_ACCEPTED,
        ),
        metadata=meta,
        timeout=30,
    )
    return await resolve(outside, case.case_id, who, **resolution)


async def scheduled(outside: Outside, customer: str) -> list[followup_pb2.Followup]:
    """Return the customer's resolution follow-ups once followup has planned some (it read the resolution); the
    progress updates of the case's moves are left out."""
    request = followup_pb2.ListFollowupsRequest(customer_id=customer)
    async with asyncio.timeout(60):
        while True:
            listed = await outside.followup().ListFollowups(request, metadata=outside.as_(AGENT), timeout=30)
            planned = [f for f in listed.followups if f.kind != common.FOLLOWUP_KIND_PROGRESS_UPDATE]
            if planned:
                return planned
            await asyncio.sleep(0.2)


async def authorized(outside: Outside, case_id: str, who: Employee, *, version: int = 1) -> cases.Case:
    """Return the case once its offer (of at least ``version``) is authorised: within the owner's limits that
    happens as the offer arrives, with nobody calling anything."""
    return await outside.case(
        case_id,
        who,
        lambda c: c.current_offer.version >= version and c.current_offer.status == cases.OFFER_STATUS_AUTHORIZED,
    )
