"""Plain builders for intake domain tests: a valid report, a policy, times."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from services.intake.domain.commands import ReportFailure
from services.intake.domain.model import Category, FailureReport, Source
from services.intake.domain.policy import Policy, load_policy

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

POLICY_TEXT = """
version = "test.1"

[severity.base]
late_delivery = "minor"
billing_error = "minor"
cancellation = "moderate"
damaged_item = "moderate"
wrong_item = "minor"
service_quality = "minor"
no_show = "major"
other = "minor"

[severity.impact]
financial_loss = "moderate"
missed_important_event = "major"
safety = "critical"

[severity.money]
include_order_value = true

[severity.money.thresholds.EUR]
moderate = 10000
major = 50000
critical = 500000

[outlook]
repeat_window_days = 365

[merge]
window_hours = 48

[routing]
default_team = "care"

[routing.category]
billing_error = "billing-care"

[hotspot]
factor_bps = 30000
min_count = 5
"""


def policy(**changes) -> Policy:
    return replace(load_policy(POLICY_TEXT), **changes)


def raw_report(**changes) -> ReportFailure:
    base = ReportFailure(
        customer_id="cust-1",
        source=Source.DELIVERY_TRACKING,
        source_event_id="evt-1",
        category=Category.LATE_DELIVERY,
        occurred_at=NOW,
        reference="order-1",
        description="parcel two days late",
    )
    return replace(base, **changes)


def report(**changes) -> FailureReport:
    base = FailureReport(
        customer_id="cust-1",
        source=Source.DELIVERY_TRACKING,
        source_event_id="evt-1",
        category=Category.LATE_DELIVERY,
        occurred_at=NOW,
        reference="order-1",
    )
    return replace(base, **changes)
