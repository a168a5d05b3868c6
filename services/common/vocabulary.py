"""The contract's vocabulary in Python: the enums and small value messages of ``common.proto``, defined once.

Like ``Money``, these are the shared language of the events every service reads and writes, not any
service's rules. Values are the proto value names without the enum prefix, in lower case
(``CATEGORY_LATE_DELIVERY`` -> ``Category.LATE_DELIVERY = "late_delivery"``); ``*_UNSPECIFIED`` has no
member (the edge maps it to ``None``). A unit test keeps every enum equal to its proto.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from services.common.money import Money


class Category(enum.Enum):
    """What kind of failure happened."""

    LATE_DELIVERY = "late_delivery"
    BILLING_ERROR = "billing_error"
    CANCELLATION = "cancellation"
    DAMAGED_ITEM = "damaged_item"
    WRONG_ITEM = "wrong_item"
    SERVICE_QUALITY = "service_quality"
    NO_SHOW = "no_show"
    OTHER = "other"


@functools.total_ordering
class Severity(enum.Enum):
    """How big a failure is; members compare by size (minor < moderate < major < critical)."""

    MINOR = "minor"
    MODERATE = "moderate"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Return 1 for minor up to 4 for critical, the proto enum's numbers."""
        return list(Severity).index(self) + 1

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


class Avoidability(enum.Enum):
    """Whether the cause was within the company's control (None: not known)."""

    AVOIDABLE = "avoidable"
    UNAVOIDABLE = "unavoidable"


class Outlook(enum.Enum):
    """Whether recovery can still win the customer back."""

    RECOVERABLE = "recoverable"
    AT_RISK = "at_risk"


class Impact(enum.Enum):
    """What the failure did to the customer, as they state it."""

    INCONVENIENCE = "inconvenience"
    TIME_LOST = "time_lost"
    FINANCIAL_LOSS = "financial_loss"
    MISSED_IMPORTANT_EVENT = "missed_important_event"
    SAFETY = "safety"


class RiskTag(enum.Enum):
    """Areas that fail more often and deserve closer watch."""

    COMPLEX_SCHEDULING = "complex_scheduling"
    NEW_PRODUCT = "new_product"
    HIGH_TURNOVER = "high_turnover"


class Source(enum.Enum):
    """The system or channel a failure report or feedback came from."""

    DELIVERY_TRACKING = "delivery_tracking"
    BILLING = "billing"
    FLIGHT_OPS = "flight_ops"
    SURVEY = "survey"
    FRONTLINE = "frontline"
    FOLLOWUP = "followup"
    OTHER_SYSTEM = "other_system"


class CostKind(enum.Enum):
    """What kind of out-of-pocket cost the failure caused the customer."""

    TOWING = "towing"
    TAXI = "taxi"
    CAR_RENTAL = "car_rental"
    HOTEL = "hotel"
    MEAL = "meal"
    REBOOKING = "rebooking"
    OTHER = "other"


class RemedyKind(enum.Enum):
    """What the company gives the customer."""

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


class Channel(enum.Enum):
    """How to reach the customer."""

    EMAIL = "email"
    SMS = "sms"
    PHONE = "phone"
    PUSH = "push"
    LETTER = "letter"


class ActorKind(enum.Enum):
    """What kind of actor did something."""

    EMPLOYEE = "employee"
    SYSTEM = "system"


class AuthorizationPart(enum.Enum):
    """Which part of an offer an authorisation covers (a split offer has the owner's share and the remainder)."""

    WHOLE = "whole"
    OWNER_SHARE = "owner_share"
    REMAINDER = "remainder"


class RequestOutcome(enum.Enum):
    """How an offer answers the customer's own request."""

    GRANTED = "granted"
    ALTERNATIVE_OFFERED = "alternative_offered"


class RequoteReason(enum.Enum):
    """Why compensation computed a new version of an offer."""

    CASE_AMENDED = "case_amended"
    SLA_BREACHED = "sla_breached"
    CUSTOMER_COUNTERED = "customer_countered"
    CASE_REOPENED = "case_reopened"
    INCIDENT_DECLARED = "incident_declared"
    FRONTLINE_ADJUSTED = "frontline_adjusted"


class AuthorizationTier(enum.Enum):
    """Which authority let an offer through."""

    OWNER = "owner"
    APPROVER = "approver"
    SYSTEM = "system"
    PLAYBOOK = "playbook"


class ApprovalReason(enum.Enum):
    """Why an approval is needed."""

    ABOVE_CASE_LIMIT = "above_case_limit"
    ABOVE_PERIOD_LIMIT = "above_period_limit"
    REMEDY_KIND_NOT_ALLOWED = "remedy_kind_not_allowed"
    BUDGET_EXCEEDED = "budget_exceeded"
    NEEDS_REVIEW = "needs_review"
    OWNER_REQUESTED = "owner_requested"
    DECISION_OVERDUE = "decision_overdue"


class ApprovalDecision(enum.Enum):
    """An approver's decision."""

    APPROVE = "approve"
    REJECT = "reject"
    MODIFY_AND_APPROVE = "modify_and_approve"


class CustomerDecision(enum.Enum):
    """The customer's answer to an offer."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    COUNTERED = "countered"


class SlaClock(enum.Enum):
    """Which service-level clock of a case."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    APPROVAL = "approval"


class FollowupKind(enum.Enum):
    """What a follow-up is for."""

    SATISFACTION_CHECK = "satisfaction_check"
    CHECK_IN = "check_in"
    PERSONAL_NOTE = "personal_note"
    CORRECTIVE_ACTION_NOTICE = "corrective_action_notice"
    PROGRESS_UPDATE = "progress_update"


class ProgressStage(enum.Enum):
    """Where a case stands as its customer is told it, in the order a case usually goes through them."""

    ACKNOWLEDGED = "acknowledged"
    AWAITING_APPROVAL = "awaiting_approval"
    OFFER_READY = "offer_ready"
    DONE = "done"


class ContactKind(enum.Enum):
    """What a contact-log entry records."""

    APOLOGY = "apology"
    CALL = "call"
    MESSAGE = "message"
    NOTE = "note"
    REPORT = "report"


class ContactOutcome(enum.Enum):
    """How a contact went (None: not stated)."""

    REACHED = "reached"
    NO_ANSWER = "no_answer"
    LEFT_MESSAGE = "left_message"
    CALL_BACK_REQUESTED = "call_back_requested"


class HotspotDimension(enum.Enum):
    """A dimension failures are counted by to spot where they cluster."""

    CATEGORY = "category"
    COMPONENT = "component"
    RELEASE = "release"
    TEAM = "team"
    EMPLOYEE = "employee"
    HOUR_OF_DAY = "hour_of_day"
    INCIDENT = "incident"
    RISK_TAG = "risk_tag"
    LOCATION = "location"


# ------------------------------------------------------------------ value messages of common.proto


@dataclass(frozen=True)
class Reason:
    """One reason behind a decision: a stable snake-case ``code`` and a ``detail`` for staff."""

    code: str
    detail: str


@dataclass(frozen=True)
class CostItem:
    """One cost the failure caused the customer (towing, taxi, hotel...)."""

    kind: CostKind | None
    amount: Money
    description: str = ""
    has_receipt: bool = False
    receipt_reference: str = ""


@dataclass(frozen=True)
class CustomerRequest:
    """What the customer considers a fair solution; ``amount`` is None when they named none."""

    remedy_kind: RemedyKind | None = None
    amount: Money | None = None
    text: str = ""


@dataclass(frozen=True)
class RemedySwap:
    """The customer prefers ``to_kind``: every goodwill line of ``from_kind`` is offered in it (within policy)."""

    from_kind: RemedyKind | None
    to_kind: RemedyKind | None


@dataclass(frozen=True)
class PersonalGesture:
    """A small gesture the frontline adds (flowers, a glass of wine): the customer reads ``description``."""

    description: str
    amount: Money
    reason: str  # for staff and audit
    employee_id: str = ""


@dataclass(frozen=True)
class ReceiptReceived:
    """The customer presented the receipt of a reported cost of ``cost_kind``."""

    cost_kind: CostKind | None
    receipt_reference: str = ""


@dataclass(frozen=True)
class OfferAdjustment:
    """What the frontline changes in an offer, within policy; compensation re-quotes with it."""

    swaps: tuple[RemedySwap, ...] = ()
    gestures: tuple[PersonalGesture, ...] = ()
    late_costs: tuple[CostItem, ...] = ()
    receipts: tuple[ReceiptReceived, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.swaps or self.gestures or self.late_costs or self.receipts)


@dataclass(frozen=True)
class Area:
    """Where in the company the failure came from; every field may be empty."""

    component: str = ""
    release: str = ""
    team: str = ""
    employee_id: str = ""
    location: str = ""


# Each enum beside the proto enum it mirrors; the unit test walks this table.
MIRRORS: dict[type[enum.Enum], str] = {
    Category: "Category",
    Severity: "Severity",
    Avoidability: "Avoidability",
    Outlook: "Outlook",
    Impact: "Impact",
    RiskTag: "RiskTag",
    Source: "Source",
    CostKind: "CostKind",
    RemedyKind: "RemedyKind",
    Channel: "Channel",
    ActorKind: "ActorKind",
    RequestOutcome: "RequestOutcome",
    RequoteReason: "RequoteReason",
    AuthorizationTier: "AuthorizationTier",
    AuthorizationPart: "AuthorizationPart",
    ApprovalReason: "ApprovalReason",
    ApprovalDecision: "ApprovalDecision",
    CustomerDecision: "CustomerDecision",
    SlaClock: "SlaClock",
    FollowupKind: "FollowupKind",
    HotspotDimension: "HotspotDimension",
    ProgressStage: "ProgressStage",
    ContactKind: "ContactKind",
    ContactOutcome: "ContactOutcome",
}
