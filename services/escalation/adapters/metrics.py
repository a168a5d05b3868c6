"""Escalation's business metrics, defined once; the kit's technical metrics sit beside them in one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Minutes to days: acknowledgement is expected within hours, resolution within days.
DURATION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 432000, 864000)


class EscalationMetrics:
    """Cases by state, time to acknowledge and resolve, SLA warnings and breaches, authorisations, approvals,
    transfers and overloaded employees."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cases_by_state = Gauge(
            "recovery_escalation_cases", "Cases by lifecycle state.", ["state"], registry=registry
        )
        self.time_to_acknowledge = Histogram(
            "recovery_escalation_time_to_acknowledge_seconds",
            "Wall-clock time from case opened to acknowledged.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_resolve = Histogram(
            "recovery_escalation_time_to_resolve_seconds",
            "Wall-clock time from case opened to resolved.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.sla_warnings = Counter(
            "recovery_escalation_sla_warnings_total",
            "SLA clocks past their warning point, by clock and severity.",
            ["clock", "severity"],
            registry=registry,
        )
        self.sla_breaches = Counter(
            "recovery_escalation_sla_breaches_total",
            "SLA deadlines missed, by clock and severity.",
            ["clock", "severity"],
            registry=registry,
        )
        self.authorizations = Counter(
            "recovery_escalation_authorizations_total",
            "Offers authorised, by tier (owner, approver, system, playbook).",
            ["tier"],
            registry=registry,
        )
        self.incidents_declared = Counter(
            "recovery_escalation_incidents_declared_total",
            "Incidents declared with a playbook whose offers the declarer pre-approves.",
            registry=registry,
        )
        self.approvals_requested = Counter(
            "recovery_escalation_approvals_requested_total",
            "Approval requests routed, by approver role.",
            ["approver_role"],
            registry=registry,
        )
        self.approvals_escalated = Counter(
            "recovery_escalation_approvals_escalated_total",
            "Approval requests routed one tier up after a missed decision deadline.",
            registry=registry,
        )
        self.approvals_pending = Gauge(
            "recovery_escalation_approvals_pending", "Approval requests awaiting a decision.", registry=registry
        )
        self.approvals_oldest_age = Gauge(
            "recovery_escalation_approvals_pending_oldest_age_seconds",
            "Age of the oldest approval request awaiting a decision.",
            registry=registry,
        )
        self.approval_decisions = Counter(
            "recovery_escalation_approval_decisions_total",
            "Approval decisions, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.transfers = Counter(
            "recovery_escalation_transfers_total",
            "Case transfers, by whether the case is now flagged.",
            ["limit_exceeded"],
            registry=registry,
        )
        self.overloaded_employees = Gauge(
            "recovery_escalation_overloaded_employees",
            "Employees owning more open cases than their capacity.",
            registry=registry,
        )
        self.limit_refusals = Counter(
            "recovery_escalation_limit_refusals_total",
            "Authorisations or decisions refused because limits did not cover them, by kind.",
            ["kind"],
            registry=registry,
        )
