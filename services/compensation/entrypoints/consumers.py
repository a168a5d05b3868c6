"""Compensation's Kafka consumers: one subscription per input topic, each decode -> commands -> handler.

Opened cases and authorised offers, the hot inputs, are handled a set at a time; the others one record after
another.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from recovery.events.v1 import events_pb2

from services.common import cloudevents
from services.common.consumer import Incoming, Rejections, Subscription, convert, each
from services.common.topics import topic
from services.common.unit_of_work import UnitOfWork
from services.compensation.adapters import wire
from services.compensation.service_layer import handlers
from services.compensation.service_layer.handlers import Deps


def subscriptions(deps: Deps) -> list[Subscription]:
    """Return compensation's subscriptions: cases to price, the recovery's failures, the frontline's adjustments,
    declared incidents and spend."""

    async def cases_opened(uow: UnitOfWork, records: Sequence[Incoming]) -> Rejections:
        converted, refused = convert(records, lambda i: wire.open_command(i.message, at=i.event.time))
        await handlers.open_cases(uow, [command for _, command in converted], deps=deps)
        return refused

    async def case_amended(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.amend_case(conn, wire.amend_command(incoming.message, at=incoming.event.time), deps=deps)

    async def sla_breached(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.record_breach(conn, wire.breach_command(incoming.message, at=incoming.event.time), deps=deps)

    async def customer_countered(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.record_counter(conn, wire.counter_command(incoming.message, at=incoming.event.time), deps=deps)

    async def offer_adjusted(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.adjustment_command(incoming.message, at=incoming.event.time)
        await handlers.record_adjustment(conn, command, deps=deps)

    async def case_reopened(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.reopen_command(incoming.message, at=incoming.event.time, ce_id=incoming.event.id)
        await handlers.record_reopening(conn, command, deps=deps)

    async def incident_declared(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.apply_playbook(
            conn, wire.declaration_command(incoming.message, at=incoming.event.time), deps=deps
        )

    async def offers_authorized(uow: UnitOfWork, records: Sequence[Incoming]) -> Rejections:
        converted, refused = convert(records, lambda i: wire.authorization_command(i.message, at=i.event.time))
        invalid = await handlers.record_authorizations(uow, [command for _, command in converted], deps=deps)
        return refused + [(converted[i][0], error) for i, error in invalid]

    table = (
        ("recovery.case-opened.v1", events_pb2.CaseOpened, cases_opened),
        ("recovery.case-amended.v1", events_pb2.CaseAmended, each(case_amended)),
        ("recovery.sla-breached.v1", events_pb2.SlaBreached, each(sla_breached)),
        ("recovery.offer-adjusted.v1", events_pb2.OfferAdjusted, each(offer_adjusted)),
        ("recovery.customer-countered.v1", events_pb2.CustomerCountered, each(customer_countered)),
        ("recovery.case-reopened.v1", events_pb2.CaseReopened, each(case_reopened)),
        ("recovery.incident-declared.v1", events_pb2.IncidentDeclared, each(incident_declared)),
        ("recovery.offer-authorized.v1", events_pb2.OfferAuthorized, offers_authorized),
    )
    return [
        Subscription(topic=topic(name).name, types=cloudevents.registry(message), handler=handler)
        for name, message, handler in table
    ]
