"""Intake's value types: money, the classification vocabulary, a validated failure report, customer history.

Enum values are the protobuf enum names without their prefix, in lower case (``CATEGORY_LATE_DELIVERY`` ->
``late_delivery``); ``*_UNSPECIFIED`` has no member here: the edge maps it to ``None``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Re-exported: money and the contract's enums are intake's vocabulary too, defined once for every service.
from services.common.money import KNOWN_CURRENCIES as KNOWN_CURRENCIES
from services.common.money import Money as Money
from services.common.vocabulary import Area as Area
from services.common.vocabulary import AuthorizationPart as AuthorizationPart
from services.common.vocabulary import Avoidability as Avoidability
from services.common.vocabulary import Category as Category
from services.common.vocabulary import Channel as Channel
from services.common.vocabulary import CostItem as CostItem
from services.common.vocabulary import CostKind as CostKind
from services.common.vocabulary import CustomerRequest as CustomerRequest
from services.common.vocabulary import HotspotDimension as HotspotDimension
from services.common.vocabulary import Impact as Impact
from services.common.vocabulary import Outlook as Outlook
from services.common.vocabulary import Reason as Reason
from services.common.vocabulary import RemedyKind as RemedyKind
from services.common.vocabulary import RiskTag as RiskTag
from services.common.vocabulary import Severity as Severity
from services.common.vocabulary import Source as Source


class CaseStatus(enum.Enum):
    """Where a case stands as far as intake knows (escalation owns the full lifecycle)."""

    OPEN = "open"
    RESOLVED = "resolved"
    REOPENED = "reopened"


@dataclass(frozen=True)
class FailureReport:
    """A failure report that passed validation: required fields present, money and times sane."""

    customer_id: str
    source: Source
    source_event_id: str
    category: Category
    occurred_at: datetime
    reference: str = ""
    description: str = ""
    reported_costs: tuple[CostItem, ...] = ()
    stated_impacts: frozenset[Impact] = frozenset()
    impact_details: str = ""
    customer_request: CustomerRequest | None = None
    avoidability: Avoidability | None = None
    area: Area = field(default_factory=Area)
    risk_tags: frozenset[RiskTag] = frozenset()
    order_value: Money | None = None
    customer_value: Money | None = None
    reported_by_employee_id: str = ""
    survey_score: int | None = None
    related_case_id: str = ""
    customer_timezone: str = ""
    preferred_channel: Channel | None = None
    publisher: str = ""  # see ReportFailure.publisher
    source_system: str = ""
    incident_id: str = ""
    locale: str = ""  # the language the report asked for (parsed: en, it, lt, pl), "" when it named none

    @property
    def system_detected(self) -> bool:
        """Return True when no employee took the report and a system the policy names detected it (a survey,
        delivery tracking...): the system may put it right at once. A publisher the policy does not name
        (other_system) is not trusted with that: a person looks first."""
        return not self.reported_by_employee_id and self.source is not Source.OTHER_SYSTEM


@dataclass(frozen=True)
class Reporter:
    """The employee who took a frontline report, as their token says: their team owns the case, and their
    role's empowerment limits apply to its first offer."""

    team: str = ""
    role: str = ""


@dataclass(frozen=True)
class SatisfactionAnswer:
    """A customer's answer to a satisfaction question; score 0..10 and satisfied may each be unknown."""

    received_at: datetime
    score: int | None = None
    satisfied: bool | None = None


@dataclass(frozen=True)
class CustomerHistory:
    """What intake knows of a customer before this failure, from its own store."""

    # Times of earlier failures (the store keeps 12 months); the outlook rule filters them by its own window.
    prior_failure_times: tuple[datetime, ...] = ()
    prior_case_count: int = 0
    # Compensation authorised in the case lookback (90 days), one entry per currency.
    compensation_received: tuple[Money, ...] = ()
    last_satisfaction: SatisfactionAnswer | None = None
    # The windows the store looked back over, shown to staff beside the counts.
    failure_lookback: timedelta = timedelta(days=365)
    case_lookback: timedelta = timedelta(days=90)

    def prior_failures_since(self, since: datetime) -> int:
        """Return how many prior failures occurred at or after ``since``."""
        return sum(1 for at in self.prior_failure_times if at >= since)


@dataclass(frozen=True)
class OpenCaseSummary:
    """The facts about an open case the merge rule needs."""

    case_id: str
    customer_id: str
    reference: str
    first_failure_at: datetime


@dataclass(frozen=True)
class Classification:
    """Severity, avoidability and outlook of a failure, each with the reasons behind it."""

    severity: Severity
    severity_reasons: tuple[Reason, ...]
    avoidable: bool
    avoidability_reason: Reason
    outlook: Outlook
    outlook_reasons: tuple[Reason, ...]
    policy_version: str
    # What the reports said (None when nobody knew); ``avoidable`` is the decision drawn from it.
    avoidability: Avoidability | None = None
