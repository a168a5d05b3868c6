"""Intake's Kafka consumers: one subscription per input topic, each decode -> command -> handler."""

from __future__ import annotations

import logging

import asyncpg
from recovery.events.v1 import events_pb2

from services.common import cloudevents
from services.common.consumer import Incoming, Subscription, each
from services.common.topics import topic
from services.intake.adapters import wire
from services.intake.service_layer import handlers
from services.intake.service_layer.handlers import Deps

log = logging.getLogger(__name__)


def subscriptions(deps: Deps) -> list[Subscription]:
    """Return intake's subscriptions: failures to accept, and what downstream services did with cases."""

    async def failure_reported(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.report_failure(conn, wire.command_from_event(incoming.message), deps=deps, channel="kafka")

    async def offer_authorized(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await handlers.record_compensation(conn, wire.compensation_from_event(incoming.message, at=incoming.event.time))

    async def case_resolved(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await _record_status(conn, wire.resolution_from_event(incoming.message, at=incoming.event.time))

    async def case_reopened(conn: asyncpg.Connection, incoming: Incoming) -> None:
        await _record_status(conn, wire.reopening_from_event(incoming.message, at=incoming.event.time))

    async def feedback_received(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.satisfaction_from_event(incoming.message, ce_id=incoming.event.id, at=incoming.event.time)
        await handlers.record_satisfaction(conn, command)

    table = (
        ("recovery.failure-reported.v1", events_pb2.FailureReported, failure_reported),
        ("recovery.offer-authorized.v1", events_pb2.OfferAuthorized, offer_authorized),
        ("recovery.case-resolved.v1", events_pb2.CaseResolved, case_resolved),
        ("recovery.case-reopened.v1", events_pb2.CaseReopened, case_reopened),
        ("recovery.feedback-received.v1", events_pb2.FeedbackReceived, feedback_received),
    )
    return [
        Subscription(topic=topic(name).name, types=cloudevents.registry(message), handler=each(handler))
        for name, message, handler in table
    ]


async def _record_status(conn: asyncpg.Connection, command) -> None:
    if not await handlers.record_case_status(conn, command):
        # Not an error in the record: intake may not have seen the case (e.g. opened before it kept a store).
        log.warning("case %s is unknown to intake; status %s not recorded", command.case_id, command.status.value)
