"""Intake's small decisions besides classification: the dedupe key, merging into an open case, hot spots."""

from __future__ import annotations

from services.intake.domain.model import FailureReport, OpenCaseSummary, Source
from services.intake.domain.policy import Policy


def dedupe_key(report: FailureReport) -> tuple[Source, str] | None:
    """Return (source, source event id), the key under which a report is one failure; None when it has no id."""
    # Only frontline reports may lack an event id (validation requires it elsewhere); those are deduplicated by the
    # gRPC request id, so an empty id must not make every id-less frontline report collide with each other.
    if not report.source_event_id:
        return None
    return report.source, report.source_event_id


def should_merge(report: FailureReport, open_case: OpenCaseSummary, policy: Policy) -> bool:
    """Return True when the report joins ``open_case``: same customer, same non-empty reference, within the window."""
    if not report.reference or report.reference != open_case.reference:
        return False
    if report.customer_id != open_case.customer_id:
        return False
    # Reports arrive out of order, so a failure that happened shortly *before* the case's first one also joins.
    return abs(report.occurred_at - open_case.first_failure_at) <= policy.merge_window


def is_hot_spot(count: int, baseline: int, *, policy: Policy) -> bool:
    """Return True when a window's ``count`` reaches the minimum and exceeds ``baseline`` times the policy factor."""
    # Basis points keep the comparison in integers: count / baseline > factor_bps / 10000.
    return count >= policy.hotspot_min_count and count * 10_000 > baseline * policy.hotspot_factor_bps
