"""Followup's events (past tense, frozen): what a handler decided, before the edge puts it on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.followup.domain.model import Feedback, Followup, ResolvedCase


@dataclass(frozen=True)
class FollowupCameDue:
    """A follow-up reached its due time: contact the customer (or, for a personal note, task the owner)."""

    followup: Followup


@dataclass(frozen=True)
class CaseReopenRequested:
    """A dissatisfied answer asks escalation to reopen the case."""

    case: ResolvedCase
    feedback: Feedback
    reason: str
    requested_at: datetime


@dataclass(frozen=True)
class RecoveryFailed:
    """A dissatisfied answer is itself a failure report: the recovery failed (source followup)."""

    case: ResolvedCase
    feedback: Feedback
    source_event_id: str
    description: str


@dataclass(frozen=True)
class FeedbackRecorded:
    """Feedback recorded by staff, republished so intake learns the customer's last satisfaction."""

    feedback: Feedback
