"""Escalation on the session's real broker and Postgres, with a test policy (24x7 calendar, short clocks)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
from recovery.escalation.v1 import escalation_pb2_grpc
from recovery.events.v1 import common_pb2, events_pb2

from services.common.runtime import Endpoints
from services.common.wire import time_to_proto
from services.escalation.config import DEFAULT_POLICY, EscalationSettings
from tests.integration.conftest import new_id, now, read_topic, service_settings
from tests.integration.conftest import publish as shared_publish
from tests.support.running import bearer

OPENED = "recovery.case-opened.v1"
OFFERS = "recovery.offer-proposed.v1"

# An approver whose daily limit (60 000) two 40 000 approvals would break together.
TIGHT_LEAD = f"lead-{uuid.uuid4().hex[:8]}"
# An agent who may own one open case at a time.
BUSY_AGENT = f"agent-{uuid.uuid4().hex[:8]}"


def policy_text(*, ack: str = "8h", resolve: str = "40h", approval: str = "4h") -> str:
    """The shipped policy on a 24x7 UTC calendar, with the given clock budgets for every severity."""
    text = DEFAULT_POLICY.read_text()
    text = re.sub(r"\[calendar\].*", "", text, flags=re.S)  # the calendar is last in the file
    text = re.sub(r'approval_decision = "[^"]*"', f'approval_decision = "{approval}"', text)
    for clock, budget in (("acknowledge", ack), ("resolve", resolve)):
        for outlook in ("recoverable", "at_risk"):
            block = "\n".join(f'{s} = "{budget}"' for s in ("minor", "moderate", "major", "critical"))
            text = re.sub(
                rf"\[sla\.{clock}\.{outlook}\]\n(?:\w+ = \"[^\"]*\"\n)+", f"[sla.{clock}.{outlook}]\n{block}\n", text
            )
    days = "\n".join(f'{d} = ["00:00-24:00"]' for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    text += f'\n[employees."{TIGHT_LEAD}"]\nper_day = 60000\n[employees."{BUSY_AGENT}"]\ncapacity = 1\n'
    return text + f'\n[calendar]\ntimezone = "UTC"\n[calendar.hours]\n{days}\n'


def escalation_settings(stack, tmp: Path, policy_text: str, **changes) -> EscalationSettings:
    (tmp / "policy.toml").write_text(policy_text)  # each call's policy, even in a directory used before
    own = {"timer_poll_seconds": 0.2, "watch_poll_seconds": 0.1, "gauge_seconds": 0.5}
    return service_settings(EscalationSettings, stack, tmp, policy_text=policy_text, **(own | changes))


@dataclass(frozen=True)
class Escalation:
    settings: EscalationSettings
    endpoints: Endpoints


publish = shared_publish


def eur(minor: int) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=minor, currency="EUR")


def case_opened(
    *, owner: str = "", team: str, system_detected: bool = False, owner_role: str = "", **fields
) -> events_pb2.CaseOpened:
    customer = new_id("cust")
    base = {
        "customer_id": customer,
        "case_id": new_id("case"),
        "owner_employee_id": owner,
        "owner_role": owner_role,
        "owning_team": team,
        "failure_ids": [new_id("fail")],
        "source": common_pb2.SOURCE_DELIVERY_TRACKING if system_detected else common_pb2.SOURCE_FRONTLINE,
        "system_detected": system_detected,
        "category": common_pb2.CATEGORY_LATE_DELIVERY,
        "description": "parcel two days late",
        "classification": common_pb2.Classification(
            severity=common_pb2.SeverityAssessment(severity=common_pb2.SEVERITY_MODERATE),
            outlook=common_pb2.OutlookAssessment(outlook=common_pb2.OUTLOOK_RECOVERABLE),
            policy_version="test",
        ),
        "customer_timezone": "Europe/Vilnius",
        "preferred_channel": common_pb2.CHANNEL_EMAIL,
        "opened_at": time_to_proto(now()),
    }
    return events_pb2.CaseOpened(**(base | fields))


def offer_for(opened: events_pb2.CaseOpened, *lines: tuple[int, int], version: int = 1, **fields):
    """An OfferProposed for the case with (remedy kind, minor units) lines."""
    items = [common_pb2.OfferLineItem(kind=k, amount=eur(a), rule_id="test") for k, a in lines]
    base = {
        "customer_id": opened.customer_id,
        "case_id": opened.case_id,
        "offer_id": new_id("offer"),
        "version": version,
        "policy_version": "comp-test",
        "line_items": items,
        "total": eur(sum(a for _, a in lines)),
        "proposed_at": time_to_proto(now()),
    }
    return events_pb2.OfferProposed(**(base | fields))


async def read_events(bootstrap: str, topic: str, message_class, *, key: str, count: int, settle: float = 0.0):
    """Return the messages keyed ``key`` on ``topic`` once ``count`` arrived (and ``settle`` s more passed)."""

    def mine(records):
        return [r for r in records if r.key == key.encode()]

    records = await read_topic(bootstrap, topic, until=lambda rs: len(mine(rs)) >= count, settle=settle, timeout=40)
    return [message_class.FromString(r.value) for r in mine(records)]


class Client:
    """A CaseService stub that calls as a given employee."""

    def __init__(self, settings: EscalationSettings, channel: grpc.aio.Channel) -> None:
        self._settings = settings
        self._stub = escalation_pb2_grpc.CaseServiceStub(channel)

    def as_(self, sub: str, role: str, team: str):
        metadata = bearer(self._settings, sub=sub, role=role, team=team)
        stub = self._stub

        class _Caller:
            def __getattr__(self, name):
                method = getattr(stub, name)
                return lambda request, **kw: method(request, metadata=metadata, **kw)

        return _Caller()


async def db_fetch(settings: EscalationSettings, sql: str, *args):
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": settings.schema})
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()
