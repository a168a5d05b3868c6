"""Escalation's Kafka consumers: one subscription per input topic, each decode -> command -> handler."""

from __future__ import annotations

import asyncpg
from recovery.events.v1 import events_pb2

from services.common import cloudevents
from services.common.consumer import Incoming, Subscription, each
from services.common.topics import topic
from services.escalation.adapters import wire
from services.escalation.service_layer import arrivals
from services.escalation.service_layer.steps import Deps


def subscriptions(deps: Deps) -> list[Subscription]:
    """Return escalation's subscriptions: cases opened and amended, offers proposed, reopen requests."""

    async def case_opened(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.open_from_event(incoming.message, at=incoming.event.time)
        await arrivals.open_case(conn, command, facts=incoming.message.SerializeToString(), deps=deps)

    async def case_amended(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await arrivals.amend_case(conn, wire.amend_from_event(incoming.message), message=incoming.message, deps=deps)

    async def offer_proposed(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.offer_from_event(incoming.message, at=incoming.event.time)
        await arrivals.receive_offer(conn, command, message=incoming.message.SerializeToString(), deps=deps)

    async def reopen_requested(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await arrivals.request_reopen(conn, wire.reopen_from_event(incoming.message), deps=deps)

    table = (
        ("recovery.case-opened.v1", events_pb2.CaseOpened, case_opened),
        ("recovery.case-amended.v1", events_pb2.CaseAmended, case_amended),
        ("recovery.offer-proposed.v1", events_pb2.OfferProposed, offer_proposed),
        ("recovery.case-reopen-requested.v1", events_pb2.CaseReopenRequested, reopen_requested),
    )
    return [
        Subscription(topic=topic(name).name, types=cloudevents.registry(message), handler=each(handler))
        for name, message, handler in table
    ]
