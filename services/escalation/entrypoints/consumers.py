"""Escalation's Kafka consumers: one subscription per input topic, each decode -> commands -> handler.

Cases opened and offers proposed, the hot inputs, are handled a set at a time; the others one record after another.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from recovery.events.v1 import events_pb2

from services.common import cloudevents
from services.common.consumer import Incoming, Rejections, Subscription, convert, each
from services.common.topics import topic
from services.common.unit_of_work import UnitOfWork
from services.escalation.adapters import wire
from services.escalation.service_layer import arrivals
from services.escalation.service_layer.steps import Deps


def subscriptions(deps: Deps) -> list[Subscription]:
    """Return escalation's subscriptions: cases opened and amended, offers proposed, reopen requests."""

    async def cases_opened(uow: UnitOfWork, records: Sequence[Incoming]) -> Rejections:
        converted, refused = convert(
            records, lambda i: (wire.open_from_event(i.message, at=i.event.time), i.message.SerializeToString())
        )
        await arrivals.open_cases(uow, [command for _, command in converted], deps=deps)
        return refused

    async def case_amended(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await arrivals.amend_case(conn, wire.amend_from_event(incoming.message), message=incoming.message, deps=deps)

    async def offers_proposed(uow: UnitOfWork, records: Sequence[Incoming]) -> Rejections:
        converted, refused = convert(
            records, lambda i: (wire.offer_from_event(i.message, at=i.event.time), i.message.SerializeToString())
        )
        await arrivals.receive_offers(uow, [command for _, command in converted], deps=deps)
        return refused

    async def reopen_requested(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await arrivals.request_reopen(conn, wire.reopen_from_event(incoming.message), deps=deps)

    table = (
        ("recovery.case-opened.v1", events_pb2.CaseOpened, cases_opened),
        ("recovery.case-amended.v1", events_pb2.CaseAmended, each(case_amended)),
        ("recovery.offer-proposed.v1", events_pb2.OfferProposed, offers_proposed),
        ("recovery.case-reopen-requested.v1", events_pb2.CaseReopenRequested, each(reopen_requested)),
    )
    return [
        Subscription(topic=topic(name).name, types=cloudevents.registry(message), handler=handler)
        for name, message, handler in table
    ]
