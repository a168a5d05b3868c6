"""Followup's value types: kinds and statuses of follow-ups, the resolved case it remembers, feedback.

Enum values are the protobuf enum names without their prefix, in lower case
(``FOLLOWUP_KIND_CHECK_IN`` -> ``check_in``); ``*_UNSPECIFIED`` has no member: the edge maps it to ``None``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

# Re-exported: the contract's enums are followup's vocabulary too, defined once for every service.
from services.common.texts import CustomerText as CustomerText
from services.common.vocabulary import Category as Category
from services.common.vocabulary import Channel as Channel
from services.common.vocabulary import FollowupKind as FollowupKind
from services.common.vocabulary import Outlook as Outlook
from services.common.vocabulary import ProgressStage as ProgressStage
from services.common.vocabulary import Severity as Severity
from services.common.vocabulary import Source as Source

# The kinds a resolution plans; corrective-action notices come from CorrectiveActionCompleted instead.
RESOLUTION_KINDS: tuple[FollowupKind, ...] = (
    FollowupKind.SATISFACTION_CHECK,
    FollowupKind.CHECK_IN,
    FollowupKind.PERSONAL_NOTE,
)


class FollowupStatus(enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    ANSWERED = "answered"
    CANCELLED = "cancelled"


class CaseStatus(enum.Enum):
    RESOLVED = "resolved"
    REOPENED = "reopened"


def area_key(*, component: str, team: str) -> str | None:
    """Return the key a root cause is matched by: ``component:<c>``, else ``team:<t>``, else None."""
    if component:
        return f"component:{component}"
    if team:
        return f"team:{team}"
    return None


@dataclass(frozen=True)
class ResolvedCase:
    """What followup remembers of a resolved case: whom to contact, how, and where its root cause was."""

    case_id: str
    customer_id: str
    owner_employee_id: str
    team: str
    severity: Severity | None
    outlook: Outlook | None
    category: Category | None
    resolved_at: datetime
    customer_timezone: str
    channel: Channel | None
    root_component: str
    root_team: str
    resolution_number: int
    incident_id: str = ""  # the disruption the case was part of (a corrective action may name it)
    locale: str = ""  # the language the customer is written to in (CaseResolved.locale); "": the fallback

    @property
    def area_key(self) -> str | None:
        """Return the key corrective actions are matched against, or None when the root cause is unknown."""
        return area_key(component=self.root_component, team=self.root_team)


@dataclass(frozen=True)
class PlannedFollowup:
    """A follow-up the schedule decided on: what, for which occasion, when first planned and when due."""

    kind: FollowupKind
    occasion: str
    original_due_at: datetime
    due_at: datetime
    contact: bool
    text: CustomerText  # what it says: a catalogue template and its parameters, not yet rendered


@dataclass(frozen=True)
class Followup:
    """A follow-up as stored."""

    followup_id: str
    case_id: str
    customer_id: str
    kind: FollowupKind
    occasion: str
    status: FollowupStatus
    due_at: datetime
    original_due_at: datetime
    channel: Channel | None
    owner_employee_id: str
    customer_timezone: str
    severity: Severity | None
    outlook: Outlook | None
    text: CustomerText  # rendered in the customer's language (text.text is the message)
    action_id: str
    action_description: str
    contact: bool
    scheduled_at: datetime
    sent_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str = ""


@dataclass(frozen=True)
class Feedback:
    """A customer's satisfaction answer; ``satisfied`` None means not given (never read as "no")."""

    source: Source
    feedback_id: str
    customer_id: str
    case_id: str
    followup_id: str
    score: int | None
    satisfied: bool | None
    comment: str
    received_at: datetime
    recorded_by_employee_id: str = ""
