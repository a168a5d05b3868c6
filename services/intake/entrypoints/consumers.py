"""Intake's Kafka consumers: one subscription per input topic, each decode -> commands -> handler.

Failure reports and authorised offers, the hot inputs, are handled a set at a time; the others one record after
another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg
from recovery.events.v1 import events_pb2

from services.common import cloudevents
from services.common.consumer import Incoming, Rejections, Subscription, convert, each
from services.common.topics import topic
from services.common.unit_of_work import UnitOfWork
from services.intake.adapters import wire
from services.intake.domain import rules
from services.intake.service_layer import handlers
from services.intake.service_layer.handlers import Deps

log = logging.getLogger(__name__)


def subscriptions(deps: Deps) -> list[Subscription]:
    """Return intake's subscriptions: failures to accept, and what downstream services did with cases."""

    async def failures_reported(uow: UnitOfWork, records: Sequence[Incoming]) -> Rejections:
        policy = deps.policy()
        converted, refused = convert(
            records,
            # A publisher that names no source is known by its CloudEvents source (open publishers).
            lambda i: rules.attribute_publisher(wire.command_from_event(i.message), i.event.source, policy),
        )
        results = await handlers.report_failures(uow, [command for _, command in converted], deps=deps, channel="kafka")
        return refused + [(i, r) for (i, _), r in zip(converted, results, strict=True) if isinstance(r, Exception)]

    async def offers_authorized(uow: UnitOfWork, records: Sequence[Incoming]) -> Rejections:
        converted, refused = convert(records, lambda i: wire.compensation_from_event(i.message, at=i.event.time))
        await handlers.record_compensations(uow.conn, [command for _, command in converted])
        return refused

    async def contacts_recorded(uow: UnitOfWork, records: Sequence[Incoming]) -> Rejections:
        converted, refused = convert(records, lambda i: wire.contact_from_event(i.message, at=i.event.time))
        await handlers.record_contacts(uow.conn, [command for _, command in converted])
        return refused

    async def case_resolved(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await _record_status(conn, wire.resolution_from_event(incoming.message, at=incoming.event.time))

    async def case_reopened(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await _record_status(conn, wire.reopening_from_event(incoming.message, at=incoming.event.time))

    async def feedback_received(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.satisfaction_from_event(incoming.message, identity=incoming.identity, at=incoming.event.time)
        await handlers.record_satisfaction(conn, command)

    table = (
        ("recovery.failure-reported.v1", events_pb2.FailureReported, failures_reported),
        ("recovery.offer-authorized.v1", events_pb2.OfferAuthorized, offers_authorized),
        ("recovery.contact-recorded.v1", events_pb2.ContactRecorded, contacts_recorded),
        ("recovery.case-resolved.v1", events_pb2.CaseResolved, each(case_resolved)),
        ("recovery.case-reopened.v1", events_pb2.CaseReopened, each(case_reopened)),
        ("recovery.feedback-received.v1", events_pb2.FeedbackReceived, each(feedback_received)),
    )
    return [
        Subscription(topic=topic(name).name, types=cloudevents.registry(message), handler=handler)
        for name, message, handler in table
    ]


async def _record_status(conn: asyncpg.Connection, command) -> None:
    if not await handlers.record_case_status(conn, command):
        # Not an error in the record: intake may not have seen the case (e.g. opened before it kept a store).
        log.warning("case %s is unknown to intake; status %s not recorded", command.case_id, command.status.value)
