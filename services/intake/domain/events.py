"""Events intake's domain decides on; the edge publishes them as the protobuf messages of the same name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.intake.domain.model import Classification, CustomerHistory, FailureReport


@dataclass(frozen=True)
class CaseOpened:
    """A failure found no open case to join, so a new case was opened for it."""

    case_id: str
    failure_id: str
    report: FailureReport
    classification: Classification
    history: CustomerHistory
    owner_employee_id: str
    opened_at: datetime


@dataclass(frozen=True)
class CaseAmended:
    """An open case absorbed another failure (same customer and reference within the merge window)."""

    case_id: str
    failure_id: str
    report: FailureReport
    classification: Classification
    amended_at: datetime


@dataclass(frozen=True)
class DuplicateDropped:
    """A report with an already-seen (source, source event id) was dropped."""

    failure_id: str
    report: FailureReport


@dataclass(frozen=True)
class HotspotDetected:
    """A window's failure count in one dimension exceeded its trailing baseline by the policy factor."""

    dimension: str
    value: str
    window_start: datetime
    window_end: datetime
    count: int
    baseline: int
