"""Protobuf <-> followup's domain: the only place that knows both the wire messages and the dataclasses."""

from __future__ import annotations

from datetime import datetime

from recovery.events.v1 import common_pb2, events_pb2
from recovery.followup.v1 import followup_pb2

from services.common.wire import (
    customer_text_to_proto,
    enum_from_proto,
    enum_to_proto,
    locale_from_proto,
    set_optional,
    time_from_proto,
    time_to_proto,
)
from services.followup.domain.commands import (
    HoldCaseFollowups,
    HoldCustomerFollowups,
    NotifyCorrectiveAction,
    TellProgress,
)
from services.followup.domain.errors import FieldViolation, InvalidEvent
from services.followup.domain.events import CaseReopenRequested, FeedbackRecorded, RecoveryFailed
from services.followup.domain.model import (
    Category,
    Channel,
    Feedback,
    Followup,
    FollowupStatus,
    Outlook,
    ProgressStage,
    ResolvedCase,
    Severity,
    Source,
    area_key,
)


def _require(message, *fields: str) -> None:
    missing = [FieldViolation(f, "is required") for f in fields if not getattr(message, f)]
    if missing:
        raise InvalidEvent.of(*missing)


def resolved_case_from_event(message: events_pb2.CaseResolved, *, at: datetime) -> ResolvedCase:
    """Return the case a CaseResolved describes; raises InvalidEvent when it names no case or customer."""
    _require(message, "customer_id", "case_id")
    area = message.root_cause_area
    return ResolvedCase(
        case_id=message.case_id,
        customer_id=message.customer_id,
        owner_employee_id=message.owner_employee_id,
        team=message.team,
        severity=enum_from_proto(common_pb2.Severity, message.severity, Severity),
        outlook=enum_from_proto(common_pb2.Outlook, message.outlook, Outlook),
        category=enum_from_proto(common_pb2.Category, message.category, Category),
        resolved_at=time_from_proto(message, "resolved_at") or at,
        customer_timezone=message.customer_timezone,
        channel=enum_from_proto(common_pb2.Channel, message.preferred_channel, Channel),
        root_component=area.component,
        root_team=area.team,
        resolution_number=max(message.resolution_number, 1),
        incident_id=message.incident_id,
        locale=locale_from_proto(message.locale, "locale"),
    )


def progress_from_event(message: events_pb2.CaseProgressed, *, at: datetime) -> TellProgress:
    """Return the progress update a CaseProgressed asks for; raises InvalidEvent naming a missing or bad field
    (a stage, an awaiting-approval update's expected_by, an unknown locale)."""
    _require(message, "customer_id", "case_id")
    stage = enum_from_proto(common_pb2.ProgressStage, message.stage, ProgressStage)
    if stage is None:
        raise InvalidEvent.of(FieldViolation("stage", f"is required (got {message.stage})"))
    expected_by = time_from_proto(message, "expected_by")
    if stage is ProgressStage.AWAITING_APPROVAL and expected_by is None:
        raise InvalidEvent.of(FieldViolation("expected_by", "is required while awaiting approval"))
    return TellProgress(
        case_id=message.case_id,
        customer_id=message.customer_id,
        stage=stage,
        progressed_at=time_from_proto(message, "progressed_at") or at,
        expected_by=expected_by,
        owner_employee_id=message.owner_employee_id,
        customer_timezone=message.customer_timezone,
        channel=enum_from_proto(common_pb2.Channel, message.preferred_channel, Channel),
        locale=locale_from_proto(message.locale, "locale"),
    )


def hold_case_from_event(message: events_pb2.CaseReopened, *, at: datetime) -> HoldCaseFollowups:
    """Return the hold a CaseReopened asks for."""
    _require(message, "customer_id", "case_id")
    return HoldCaseFollowups(
        case_id=message.case_id,
        customer_id=message.customer_id,
        reason=message.reason,
        reopened_at=time_from_proto(message, "reopened_at") or at,
    )


def hold_customer_from_event(message: events_pb2.CaseOpened, *, at: datetime) -> HoldCustomerFollowups:
    """Return the hold a new case of the customer asks for."""
    _require(message, "customer_id", "case_id")
    return HoldCustomerFollowups(
        case_id=message.case_id,
        customer_id=message.customer_id,
        opened_at=time_from_proto(message, "opened_at") or at,
    )


def feedback_from_event(message: events_pb2.FeedbackReceived, *, at: datetime) -> Feedback:
    """Return the answer a FeedbackReceived carries (an unknown source is refused: it is half the dedupe key)."""
    source = enum_from_proto(common_pb2.Source, message.source, Source)
    if source is None:
        raise InvalidEvent.of(FieldViolation("source", "is required (with feedback_id, the answer's identity)"))
    return Feedback(
        source=source,
        feedback_id=message.feedback_id,
        customer_id=message.customer_id,
        case_id=message.case_id,
        followup_id=message.followup_id,
        score=message.score if message.HasField("score") else None,
        satisfied=message.satisfied if message.HasField("satisfied") else None,
        comment=message.comment,
        received_at=time_from_proto(message, "received_at") or at,
        recorded_by_employee_id=message.recorded_by_employee_id,
    )


def action_from_event(message: events_pb2.CorrectiveActionCompleted, *, at: datetime) -> NotifyCorrectiveAction:
    """Return the notification a completed corrective action asks for."""
    _require(message, "action_id")
    return NotifyCorrectiveAction(
        action_id=message.action_id,
        area_key=area_key(component=message.area.component, team=message.area.team),
        description=message.description,
        related_case_ids=tuple(message.related_case_ids),
        completed_at=time_from_proto(message, "completed_at") or at,
        incident_id=message.incident_id,
    )


def followup_due_to_proto(followup: Followup) -> events_pb2.FollowupDue:
    """Return the FollowupDue event of a follow-up that came due."""
    return events_pb2.FollowupDue(
        customer_id=followup.customer_id,
        case_id=followup.case_id,
        followup_id=followup.followup_id,
        kind=enum_to_proto(common_pb2.FollowupKind, followup.kind),
        due_at=time_to_proto(followup.due_at),
        channel=enum_to_proto(common_pb2.Channel, followup.channel),
        owner_employee_id=followup.owner_employee_id,
        message=followup.text.text,
        text=customer_text_to_proto(followup.text),
        customer_timezone=followup.customer_timezone,
        severity=enum_to_proto(common_pb2.Severity, followup.severity),
        outlook=enum_to_proto(common_pb2.Outlook, followup.outlook),
        action_id=followup.action_id,
        corrective_action_description=followup.action_description,
    )


def _answer(feedback: Feedback) -> common_pb2.SatisfactionAnswer:
    answer = common_pb2.SatisfactionAnswer(received_at=time_to_proto(feedback.received_at))
    if feedback.score is not None:
        answer.score = feedback.score
    if feedback.satisfied is not None:
        answer.satisfied = feedback.satisfied
    return answer


def reopen_requested_to_proto(event: CaseReopenRequested) -> events_pb2.CaseReopenRequested:
    """Return the CaseReopenRequested event."""
    return events_pb2.CaseReopenRequested(
        customer_id=event.case.customer_id,
        case_id=event.case.case_id,
        followup_id=event.feedback.followup_id,
        reason=event.reason,
        feedback=_answer(event.feedback),
        comment=event.feedback.comment,
        requested_at=time_to_proto(event.requested_at),
    )


def recovery_failed_to_proto(event: RecoveryFailed) -> events_pb2.FailureReported:
    """Return the FailureReported of a failed recovery (source followup, related to the case)."""
    case, feedback = event.case, event.feedback
    message = events_pb2.FailureReported(
        customer_id=case.customer_id,
        source=common_pb2.SOURCE_FOLLOWUP,
        source_event_id=event.source_event_id,
        category=enum_to_proto(common_pb2.Category, case.category or Category.SERVICE_QUALITY),
        occurred_at=time_to_proto(feedback.received_at),
        description=event.description,
        impact_details=feedback.comment,
        area=common_pb2.Area(component=case.root_component, team=case.root_team),
        reported_by_employee_id=feedback.recorded_by_employee_id,
        related_case_id=case.case_id,
        customer_timezone=case.customer_timezone,
        preferred_channel=enum_to_proto(common_pb2.Channel, case.channel),
    )
    if feedback.source is Source.SURVEY and feedback.score is not None:
        message.survey_score = feedback.score
    return message


def feedback_to_proto(event: FeedbackRecorded) -> events_pb2.FeedbackReceived:
    """Return the FeedbackReceived event of an answer recorded by staff."""
    feedback = event.feedback
    message = events_pb2.FeedbackReceived(
        customer_id=feedback.customer_id,
        case_id=feedback.case_id,
        followup_id=feedback.followup_id,
        feedback_id=feedback.feedback_id,
        source=enum_to_proto(common_pb2.Source, feedback.source),
        comment=feedback.comment,
        received_at=time_to_proto(feedback.received_at),
        recorded_by_employee_id=feedback.recorded_by_employee_id,
    )
    if feedback.score is not None:
        message.score = feedback.score
    if feedback.satisfied is not None:
        message.satisfied = feedback.satisfied
    return message


def feedback_from_request(
    request: followup_pb2.RecordFeedbackRequest, *, feedback_id: str, customer_id: str, employee_id: str, at: datetime
) -> Feedback:
    """Return the answer a RecordFeedback request carries, recorded by ``employee_id``."""
    return Feedback(
        source=Source.FRONTLINE,
        feedback_id=feedback_id,
        customer_id=customer_id,
        case_id=request.case_id,
        followup_id=request.followup_id,
        score=request.score if request.HasField("score") else None,
        satisfied=request.satisfied if request.HasField("satisfied") else None,
        comment=request.comment,
        received_at=at,
        recorded_by_employee_id=employee_id,
    )


def status_to_proto(status: FollowupStatus) -> int:
    """Return the API's FollowupStatus number."""
    return enum_to_proto(followup_pb2.FollowupStatus, status)


def statuses_from_proto(numbers) -> tuple[FollowupStatus, ...]:
    """Return the statuses a list request filters by (unknown values are ignored)."""
    found = (enum_from_proto(followup_pb2.FollowupStatus, n, FollowupStatus) for n in numbers)
    return tuple(s for s in found if s is not None)


def followup_to_proto(followup: Followup) -> followup_pb2.Followup:
    """Return the API view of a follow-up."""
    message = followup_pb2.Followup(
        followup_id=followup.followup_id,
        case_id=followup.case_id,
        customer_id=followup.customer_id,
        kind=enum_to_proto(common_pb2.FollowupKind, followup.kind),
        status=status_to_proto(followup.status),
        due_at=time_to_proto(followup.due_at),
        original_due_at=time_to_proto(followup.original_due_at),
        channel=enum_to_proto(common_pb2.Channel, followup.channel),
        owner_employee_id=followup.owner_employee_id,
        action_id=followup.action_id,
        scheduled_at=time_to_proto(followup.scheduled_at),
        cancel_reason=followup.cancel_reason,
    )
    set_optional(message, "sent_at", time_to_proto(followup.sent_at))
    set_optional(message, "cancelled_at", time_to_proto(followup.cancelled_at))
    return message
