"""Compensation's Kafka consumers: one subscription per input topic, each decode -> command -> handler."""

from __future__ import annotations

import asyncpg
from recovery.events.v1 import events_pb2

from services.common import cloudevents
from services.common.consumer import Incoming, Subscription, each
from services.common.topics import topic
from services.compensation.adapters import wire
from services.compensation.service_layer import handlers
from services.compensation.service_layer.handlers import Deps


def subscriptions(deps: Deps) -> list[Subscription]:
    """Return compensation's subscriptions: cases to price, the recovery's failures, and authorised spend."""

    async def case_opened(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.open_case(conn, wire.open_command(incoming.message, at=incoming.event.time), deps=deps)

    async def case_amended(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.amend_case(conn, wire.amend_command(incoming.message, at=incoming.event.time), deps=deps)

    async def sla_breached(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.record_breach(conn, wire.breach_command(incoming.message, at=incoming.event.time), deps=deps)

    async def customer_countered(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.record_counter(conn, wire.counter_command(incoming.message, at=incoming.event.time), deps=deps)

    async def case_reopened(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.reopen_command(incoming.message, at=incoming.event.time, ce_id=incoming.event.id)
        await handlers.record_reopening(conn, command, deps=deps)

    async def offer_authorized(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.authorization_command(incoming.message, at=incoming.event.time)
        await handlers.record_authorization(conn, command, deps=deps)

    table = (
        ("recovery.case-opened.v1", events_pb2.CaseOpened, case_opened),
        ("recovery.case-amended.v1", events_pb2.CaseAmended, case_amended),
        ("recovery.sla-breached.v1", events_pb2.SlaBreached, sla_breached),
        ("recovery.customer-countered.v1", events_pb2.CustomerCountered, customer_countered),
        ("recovery.case-reopened.v1", events_pb2.CaseReopened, case_reopened),
        ("recovery.offer-authorized.v1", events_pb2.OfferAuthorized, offer_authorized),
    )
    return [
        Subscription(topic=topic(name).name, types=cloudevents.registry(message), handler=each(handler))
        for name, message, handler in table
    ]
