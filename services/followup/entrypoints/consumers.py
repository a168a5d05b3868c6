"""Followup's Kafka consumers: one subscription per input topic, each decode -> command -> handler."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from recovery.events.v1 import events_pb2

from services.common import cloudevents
from services.common.consumer import Incoming, Rejections, Subscription, convert, each
from services.common.topics import topic
from services.common.unit_of_work import UnitOfWork
from services.followup.adapters import wire
from services.followup.domain.commands import RecordFeedback, ScheduleFollowups
from services.followup.service_layer import handlers
from services.followup.service_layer.handlers import Deps


def subscriptions(deps: Deps) -> list[Subscription]:
    """Return followup's subscriptions: resolutions to schedule, what holds them, progress to tell, answers and
    corrective actions."""

    async def case_resolved(conn: asyncpg.Connection, incoming: Incoming) -> None:
        case = wire.resolved_case_from_event(incoming.message, at=incoming.event.time)
        await handlers.schedule_followups(conn, ScheduleFollowups(case), deps=deps)

    async def case_reopened(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.hold_case_from_event(incoming.message, at=incoming.event.time)
        await handlers.hold_case_followups(conn, command, deps=deps)

    async def cases_opened(uow: UnitOfWork, records: Sequence[Incoming]) -> Rejections:
        converted, refused = convert(records, lambda i: wire.hold_customer_from_event(i.message, at=i.event.time))
        await handlers.hold_customers_followups(uow.conn, [command for _, command in converted], deps=deps)
        return refused

    async def case_progressed(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.progress_from_event(incoming.message, at=incoming.event.time)
        await handlers.tell_progress(conn, command, deps=deps)

    async def feedback_received(conn: asyncpg.Connection, incoming: Incoming) -> None:
        feedback = wire.feedback_from_event(incoming.message, at=incoming.event.time)
        await handlers.record_feedback(conn, RecordFeedback(feedback), deps=deps)

    async def corrective_action(conn: asyncpg.Connection, incoming: Incoming) -> None:
        command = wire.action_from_event(incoming.message, at=incoming.event.time)
        await handlers.notify_corrective_action(conn, command, deps=deps)

    table = (
        ("recovery.case-resolved.v1", events_pb2.CaseResolved, each(case_resolved)),
        ("recovery.case-reopened.v1", events_pb2.CaseReopened, each(case_reopened)),
        ("recovery.case-opened.v1", events_pb2.CaseOpened, cases_opened),
        ("recovery.case-progressed.v1", events_pb2.CaseProgressed, each(case_progressed)),
        ("recovery.feedback-received.v1", events_pb2.FeedbackReceived, each(feedback_received)),
        ("recovery.corrective-action-completed.v1", events_pb2.CorrectiveActionCompleted, each(corrective_action)),
    )
    return [
        Subscription(topic=topic(name).name, types=cloudevents.registry(message), handler=handler)
        for name, message, handler in table
    ]
