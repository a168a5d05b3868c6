"""Intake's value types: money, the classification vocabulary, a validated failure report, customer history.

Enum values are the protobuf enum names without their prefix, in lower case (``CATEGORY_LATE_DELIVERY`` ->
``late_delivery``); ``*_UNSPECIFIED`` has no member here: the edge maps it to ``None``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Re-exported: money is part of intake's vocabulary, defined once for every service.
from services.common.money import KNOWN_CURRENCIES as KNOWN_CURRENCIES
from services.common.money import Money as Money


@dataclass(frozen=True)
class Reason:
    """One reason behind a decision: a stable snake-case ``code`` and a ``detail`` for staff."""

    code: str
    detail: str


class Category(enum.Enum):
    LATE_DELIVERY = "late_delivery"
    BILLING_ERROR = "billing_error"
    CANCELLATION = "cancellation"
    DAMAGED_ITEM = "damaged_item"
    WRONG_ITEM = "wrong_item"
    SERVICE_QUALITY = "service_quality"
    NO_SHOW = "no_show"
    OTHER = "other"


class Severity(enum.Enum):
    """How big a failure is; members compare by size (minor < moderate < major < critical)."""

    MINOR = "minor"
    MODERATE = "moderate"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Return 1 for minor up to 4 for critical, the proto enum's numbers."""
        return _SEVERITY_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank


_SEVERITY_RANK = {Severity.MINOR: 1, Severity.MODERATE: 2, Severity.MAJOR: 3, Severity.CRITICAL: 4}


class Avoidability(enum.Enum):
    AVOIDABLE = "avoidable"
    UNAVOIDABLE = "unavoidable"


class Outlook(enum.Enum):
    RECOVERABLE = "recoverable"
    AT_RISK = "at_risk"


class Impact(enum.Enum):
    INCONVENIENCE = "inconvenience"
    TIME_LOST = "time_lost"
    FINANCIAL_LOSS = "financial_loss"
    MISSED_IMPORTANT_EVENT = "missed_important_event"
    SAFETY = "safety"


class RiskTag(enum.Enum):
    COMPLEX_SCHEDULING = "complex_scheduling"
    NEW_PRODUCT = "new_product"
    HIGH_TURNOVER = "high_turnover"


class Source(enum.Enum):
    DELIVERY_TRACKING = "delivery_tracking"
    BILLING = "billing"
    FLIGHT_OPS = "flight_ops"
    SURVEY = "survey"
    FRONTLINE = "frontline"
    FOLLOWUP = "followup"


class CostKind(enum.Enum):
    TOWING = "towing"
    TAXI = "taxi"
    CAR_RENTAL = "car_rental"
    HOTEL = "hotel"
    MEAL = "meal"
    REBOOKING = "rebooking"
    OTHER = "other"


class RemedyKind(enum.Enum):
    REFUND = "refund"
    ACCOUNT_CREDIT = "account_credit"
    VOUCHER = "voucher"
    FREE_UPGRADE = "free_upgrade"
    WAIVED_FEE = "waived_fee"
    REPLACEMENT = "replacement"
    GIFT = "gift"
    APOLOGY_NOTE = "apology_note"
    STATUTORY_COMPENSATION = "statutory_compensation"
    REIMBURSEMENT = "reimbursement"


class HotspotDimension(enum.Enum):
    """A dimension failures are counted by to spot where they cluster."""

    CATEGORY = "category"
    COMPONENT = "component"
    RELEASE = "release"
    TEAM = "team"
    EMPLOYEE = "employee"
    HOUR_OF_DAY = "hour_of_day"


class CaseStatus(enum.Enum):
    """Where a case stands as far as intake knows (escalation owns the full lifecycle)."""

    OPEN = "open"
    RESOLVED = "resolved"
    REOPENED = "reopened"


class Channel(enum.Enum):
    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    PUSH = "push"
    LETTER = "letter"


@dataclass(frozen=True)
class CostItem:
    """One cost the failure caused the customer (towing, taxi, hotel...)."""

    kind: CostKind | None
    amount: Money
    description: str = ""
    has_receipt: bool = False


@dataclass(frozen=True)
class CustomerRequest:
    """What the customer considers a fair solution; ``amount`` is None when they named none."""

    remedy_kind: RemedyKind | None = None
    amount: Money | None = None
    text: str = ""


@dataclass(frozen=True)
class Area:
    """Where in the company the failure came from; every field may be empty."""

    component: str = ""
    release: str = ""
    team: str = ""
    employee_id: str = ""
    location: str = ""


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

    @property
    def system_detected(self) -> bool:
        """Return True when no employee took the report (an internal system or survey detected it)."""
        return not self.reported_by_employee_id


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
