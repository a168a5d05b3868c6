"""Compensation's business metrics, defined once; the kit's technical metrics sit beside them in one registry.

Money is counted as integer minor units per currency (label ``currency``), never converted or summed across
currencies; labels are bounded (remedy kinds, currencies the policy prices, severities, re-quote reasons).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter

from services.compensation.domain.model import LineItem, Offer, RequoteReason, Severity


class CompensationMetrics:
    """Offers proposed, value proposed and authorised by kind, re-quotes, review and budget flags."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.offers_proposed = Counter(
            "recovery_compensation_offers_proposed_total",
            "Offer versions proposed, by the case's severity ('none' when unclassified).",
            ["severity"],
            registry=registry,
        )
        self.value_proposed = Counter(
            "recovery_compensation_value_proposed_minor_total",
            "Value of proposed offer lines, in minor units, by remedy kind and currency.",
            ["kind", "currency"],
            registry=registry,
        )
        self.value_authorized = Counter(
            "recovery_compensation_value_authorized_minor_total",
            "Value of authorised offer lines (spend ledger), in minor units, by remedy kind and currency.",
            ["kind", "currency"],
            registry=registry,
        )
        self.requotes = Counter(
            "recovery_compensation_requotes_total",
            "Offers re-quoted (a new version superseding the previous one), by reason.",
            ["reason"],
            registry=registry,
        )
        self.flagged_for_review = Counter(
            "recovery_compensation_offers_flagged_for_review_total",
            "Offers the abuse guard (or a currency problem) marked for a human to review first.",
            registry=registry,
        )
        self.budget_exceeded = Counter(
            "recovery_compensation_offers_budget_exceeded_total",
            "Offers that would take the owning team over its budget for the month.",
            registry=registry,
        )
        self.duplicates = Counter(
            "recovery_compensation_duplicates_ignored_total",
            "Events ignored by business key (case already opened, breach or authorisation already counted), by kind.",
            ["kind"],
            registry=registry,
        )

    def proposed(self, offer: Offer, *, severity: Severity | None) -> None:
        """Count one proposed offer version and its value per line kind."""
        self.offers_proposed.labels(severity=severity.value if severity else "none").inc()
        self._value(self.value_proposed, offer.line_items)
        if offer.requote_reason is not None:
            self.requoted(offer.requote_reason)
        if offer.needs_review:
            self.flagged_for_review.inc()
        if offer.budget_exceeded:
            self.budget_exceeded.inc()

    def requoted(self, reason: RequoteReason) -> None:
        """Count one re-quote."""
        self.requotes.labels(reason=reason.value).inc()

    def authorized(self, lines: Iterable[LineItem]) -> None:
        """Add authorised lines to the authorised value per kind."""
        self._value(self.value_authorized, lines)

    @staticmethod
    def _value(counter: Counter, lines: Iterable[LineItem]) -> None:
        for line in lines:
            if line.amount.amount_minor > 0:
                counter.labels(kind=line.kind.value, currency=line.amount.currency).inc(line.amount.amount_minor)
