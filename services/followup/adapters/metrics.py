"""Followup's business metrics, defined once; the kit's technical metrics (scheduler lateness too) sit beside them.

Satisfaction rate = ``feedback_total{verdict="satisfied"}`` / ``feedback_total{verdict=~"satisfied|dissatisfied"}``;
recovery success = ``recoveries_total{outcome="succeeded"}`` / ``recoveries_total``: the first verdict after each
resolution, so a customer asked twice counts once.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.common.metrics import LATENESS_BUCKETS

UNKNOWN = "unknown"


class FollowupMetrics:
    """Follow-ups scheduled, sent, cancelled, held, pending and overdue by kind; lateness; satisfaction."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scheduled = Counter(
            "recovery_followup_scheduled_total",
            "Follow-ups scheduled, by kind.",
            ["kind"],
            registry=registry,
        )
        self.pushed = Counter(
            "recovery_followup_pushed_total",
            "Follow-ups scheduled later than planned by quiet hours, the contact cap or a hold, by kind.",
            ["kind"],
            registry=registry,
        )
        self.due = Counter(
            "recovery_followup_due_total",
            "Follow-ups that came due and whose FollowupDue event was committed to the outbox, by kind.",
            ["kind"],
            registry=registry,
        )
        self.cancelled = Counter(
            "recovery_followup_cancelled_total",
            "Pending follow-ups cancelled, by kind and why (case_reopened, staff).",
            ["kind", "reason"],
            registry=registry,
        )
        self.held = Counter(
            "recovery_followup_held_total",
            "Pending follow-ups postponed because the customer has a new failure, by kind.",
            ["kind"],
            registry=registry,
        )
        self.pending = Gauge(
            "recovery_followup_pending",
            "Follow-ups waiting for their due time, by kind.",
            ["kind"],
            registry=registry,
        )
        self.overdue = Gauge(
            "recovery_followup_overdue",
            "Pending follow-ups already past their due time (came due, not yet sent), by kind.",
            ["kind"],
            registry=registry,
        )
        self.lateness = Histogram(
            "recovery_followup_lateness_seconds",
            "How long after its due time a follow-up's event was committed, by kind.",
            ["kind"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.feedback = Counter(
            "recovery_followup_feedback_total",
            "Satisfaction answers recorded, by case severity, outlook and verdict (satisfied, dissatisfied, unknown).",
            ["severity", "outlook", "verdict"],
            registry=registry,
        )
        self.recoveries = Counter(
            "recovery_followup_recoveries_total",
            "First verdict after a resolution: did the recovery win the customer back, by severity and outlook.",
            ["severity", "outlook", "outcome"],
            registry=registry,
        )
        self.reopen_requests = Counter(
            "recovery_followup_reopen_requests_total",
            "Case reopen requests sent to escalation after a dissatisfied answer.",
            registry=registry,
        )


def label(member) -> str:
    """Return an enum member's value as a label, ``unknown`` for None."""
    return UNKNOWN if member is None else member.value
