"""Followup's commands: what the consumers and the gRPC API ask the handlers to do (imperative, frozen)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.followup.domain.model import Channel, Feedback, FollowupStatus, ProgressStage, ResolvedCase


@dataclass(frozen=True)
class ScheduleFollowups:
    """A case was resolved: remember it and plan its follow-ups."""

    case: ResolvedCase


@dataclass(frozen=True)
class HoldCaseFollowups:
    """A case was reopened: its pending follow-ups must not go out while it is open again."""

    case_id: str
    customer_id: str
    reason: str
    reopened_at: datetime


@dataclass(frozen=True)
class HoldCustomerFollowups:
    """A new case opened for the customer: we are failing them again, so hold their other check-ins."""

    case_id: str
    customer_id: str
    opened_at: datetime


@dataclass(frozen=True)
class RecordFeedback:
    """Record a satisfaction answer; ``publish`` when it came through the API and must reach intake too."""

    feedback: Feedback
    publish: bool = False


@dataclass(frozen=True)
class NotifyCorrectiveAction:
    """A root cause was fixed: every customer whose resolved case pointed at the area, is named, or was part of
    the incident hears it, once."""

    action_id: str
    area_key: str | None
    description: str
    related_case_ids: tuple[str, ...]
    completed_at: datetime
    incident_id: str = ""


@dataclass(frozen=True)
class CancelFollowup:
    """Staff cancel a pending follow-up, with a reason."""

    followup_id: str
    reason: str
    employee_id: str
    role: str
    team: str = ""


@dataclass(frozen=True)
class ListFollowups:
    """Which follow-ups to list: of a case or of a customer, by status, one page."""

    case_id: str | None
    customer_id: str | None
    statuses: tuple[FollowupStatus, ...]
    page_size: int
    after: tuple[datetime, str] | None = None


@dataclass(frozen=True)
class TellProgress:
    """A case moved in a way its customer is told of: plan the progress update (a newer one replaces it)."""

    case_id: str
    customer_id: str
    stage: ProgressStage
    progressed_at: datetime
    expected_by: datetime | None  # awaiting approval: when the customer hears from us at the latest
    owner_employee_id: str
    customer_timezone: str
    channel: Channel | None
    locale: str
