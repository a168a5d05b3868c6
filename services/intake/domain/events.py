"""Events intake's domain decides on; the edge publishes them as the protobuf messages of the same name."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.intake.domain.model import Classification, CustomerHistory, FailureReport, HotspotDimension


@dataclass(frozen=True)
class CaseOpened:
    """A failure found no open case to join, so a new case was opened for it."""

    case_id: str
    failure_id: str
    report: FailureReport
    classification: Classification
    history: CustomerHistory
    owner_employee_id: str
    owning_team: str
    opened_at: datetime
    owner_role: str = ""
    locale: str = "en"  # the language the case speaks to the customer in (see rules.case_locale)


@dataclass(frozen=True)
class CaseAmended:
    """An open case absorbed another failure; ``case_report`` combines all of the case's failures."""

    case_id: str
    revision: int
    failure_id: str
    merged_report: FailureReport
    failure_ids: tuple[str, ...]
    case_report: FailureReport
    classification: Classification
    history: CustomerHistory
    amended_at: datetime
    # (failure id, report) of every failure the case covers, oldest first: which publisher event became which.
    reports: tuple[tuple[str, FailureReport], ...] = ()
    locale: str = "en"


@dataclass(frozen=True)
class HotspotDetected:
    """A window's failure count in one dimension exceeded its trailing baseline by the policy factor."""

    hotspot_id: str
    dimension: HotspotDimension
    value: str
    window_start: datetime
    window_end: datetime
    count: int
    baseline_total: int
    baseline_windows: int
    factor_bps: int
    detected_at: datetime
