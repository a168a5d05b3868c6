"""Escalation's vocabulary: case states, actors, offers, approvals, limits and the case itself.

Enum values are the proto value names without their prefix, lower case (the kit's wire convention).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Re-exported: money and the contract's enums are escalation's vocabulary too, defined once for every service.
from services.common.money import Money as Money
from services.common.vocabulary import ActorKind as ActorKind
from services.common.vocabulary import ApprovalDecision as ApprovalDecision
from services.common.vocabulary import ApprovalReason as ApprovalReason
from services.common.vocabulary import AuthorizationPart as AuthorizationPart
from services.common.vocabulary import AuthorizationTier as AuthorizationTier
from services.common.vocabulary import Channel as Channel
from services.common.vocabulary import ContactKind as ContactKind
from services.common.vocabulary import ContactOutcome as ContactOutcome
from services.common.vocabulary import CostKind as CostKind
from services.common.vocabulary import CustomerDecision as CustomerDecision
from services.common.vocabulary import OfferAdjustment as OfferAdjustment
from services.common.vocabulary import Outlook as Outlook
from services.common.vocabulary import ProgressStage as ProgressStage
from services.common.vocabulary import RemedyKind as RemedyKind
from services.common.vocabulary import Severity as Severity
from services.common.vocabulary import SlaClock as SlaClock

SYSTEM_ROLE = "system"


class CaseState(enum.Enum):
    QUEUED = "queued"
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    OFFER_PENDING = "offer_pending"
    AWAITING_APPROVAL = "awaiting_approval"
    OFFER_READY = "offer_ready"
    WAITING_ON_CUSTOMER = "waiting_on_customer"
    RESOLVED = "resolved"
    REOPENED = "reopened"


class OfferStatus(enum.Enum):
    PROPOSED = "proposed"
    AWAITING_APPROVAL = "awaiting_approval"
    AUTHORIZED = "authorized"
    REJECTED = "rejected"


class ApprovalStatus(enum.Enum):
    PENDING = "pending"
    DECIDED = "decided"
    CANCELLED = "cancelled"


class SlaStatus(enum.Enum):
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"


class CaseAction(enum.Enum):
    OPENED = "opened"
    AMENDED = "amended"
    CLAIMED = "claimed"
    ACKNOWLEDGED = "acknowledged"
    OFFER_PROPOSED = "offer_proposed"
    OFFER_AUTHORIZED = "offer_authorized"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_DECIDED = "approval_decided"
    TRANSFERRED = "transferred"
    CUSTOMER_DECISION_RECORDED = "customer_decision_recorded"
    SLA_WARNED = "sla_warned"
    SLA_BREACHED = "sla_breached"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    OFFER_ADJUSTED = "offer_adjusted"


@dataclass(frozen=True)
class Actor:
    """Who did something: an employee (JWT claims) or the system."""

    kind: ActorKind
    employee_id: str = ""
    role: str = ""
    team: str = ""

    @classmethod
    def system(cls) -> Actor:
        """Return the system actor (automatic recovery, timers)."""
        return cls(kind=ActorKind.SYSTEM, role=SYSTEM_ROLE)

    @classmethod
    def employee(cls, employee_id: str, role: str, team: str) -> Actor:
        """Return an employee actor."""
        return cls(kind=ActorKind.EMPLOYEE, employee_id=employee_id, role=role, team=team)


@dataclass(frozen=True)
class OfferLine:
    """One line of an offer: what kind of remedy and how much it costs the company."""

    kind: RemedyKind | None
    amount: Money


@dataclass(frozen=True)
class Offer:
    """The case's current offer as escalation sees it."""

    offer_id: str
    version: int
    total: Money
    lines: tuple[OfferLine, ...]
    needs_review: bool = False
    budget_exceeded: bool = False
    status: OfferStatus = OfferStatus.PROPOSED
    # The declared incident's playbook this offer is (compensation sets it); empty for a normal offer.
    playbook_id: str = ""
    # Compensation's policy version the offer was computed under (the playbook's version when it is one).
    policy_version: str = ""


@dataclass(frozen=True)
class Declaration:
    """A disruption declared with a playbook: its offers are pre-approved within the declarer's limits.

    The declarer's per-case and per-remedy limits bound each case; their monthly limit bounds the whole
    incident (``authorized_base_minor`` is what the declaration has authorised so far, in the base currency).
    """

    incident_id: str
    playbook_id: str
    declared_by: str
    declared_by_role: str
    declared_by_team: str
    reason: str
    limits_policy_version: str
    declared_at: datetime
    authorized_base_minor: int = 0


@dataclass(frozen=True)
class Limits:
    """Empowerment limits of one authority, in minor units of the policy currency."""

    role: str
    currency: str
    per_case: int
    per_day: int
    per_month: int
    # Remedy kinds this authority may grant, each with its per-case cap; a kind not listed is not allowed.
    remedy_caps: dict[RemedyKind, int] = field(default_factory=dict)
    employee_override: bool = False


@dataclass(frozen=True)
class Usage:
    """Amounts an authority already authorised in the current day and month (minor units)."""

    today: int = 0
    this_month: int = 0


@dataclass(frozen=True)
class Delegation:
    """Approval authority lent by a delegator to a delegate for a window [starts_at, ends_at)."""

    delegation_id: str
    delegator_employee_id: str
    delegate_employee_id: str
    role: str
    team: str
    starts_at: datetime
    ends_at: datetime

    def active(self, at: datetime) -> bool:
        """True when ``at`` falls in the window."""
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True)
class Reach:
    """How the customer is written to: their time zone, preferred channel and language ("" or None: unknown,
    the receiving service's defaults apply)."""

    timezone: str = ""
    channel: Channel | None = None
    locale: str = ""


@dataclass(frozen=True)
class Contact:
    """One entry of a case's contact log: an apology, a call, a message, a note, or a colleague's report."""

    contact_id: str
    case_id: str
    customer_id: str
    kind: ContactKind
    channel: Channel | None
    outcome: ContactOutcome | None
    note: str
    employee_id: str
    occurred_at: datetime


@dataclass(frozen=True)
class Case:
    """The facts of a case that decisions need (display-only facts stay in the adapters)."""

    case_id: str
    customer_id: str
    state: CaseState
    owner_employee_id: str
    team: str
    severity: Severity | None
    outlook: Outlook | None
    system_detected: bool
    # The owner's role as their token said when they took the case (opened, claimed); empty when not known
    # (a transfer names only the colleague), and then the owner's limits apply when they act themselves.
    owner_role: str = ""
    acknowledged_at: datetime | None = None
    transfer_count: int = 0
    transfer_limit_exceeded: bool = False
    resolution_count: int = 0
    pending_approval_id: str = ""
    current_offer_id: str = ""
    sla_breach_count: int = 0
    attention_role: str = ""
    opened_at: datetime | None = None
    resolved_at: datetime | None = None
    revision: int = 0
    incident_id: str = ""  # the disruption the case is part of (counted together); empty when none
    reach: Reach = field(default_factory=Reach)  # how the customer is told of the case's progress


@dataclass(frozen=True)
class Approval:
    """A request for an approver to authorise an offer above the owner's limits."""

    approval_id: str
    case_id: str
    customer_id: str
    offer_id: str
    offer_version: int
    requested_by: Actor
    owner_employee_id: str
    approver_role: str
    approver_team: str
    amount: Money
    reasons: tuple[ApprovalReason, ...]
    note: str
    decision_due_at: datetime
    escalation_level: int
    requested_at: datetime
    status: ApprovalStatus = ApprovalStatus.PENDING
    decision: ApprovalDecision | None = None
    approved_amount: Money | None = None
    decision_reason: str = ""
    decided_by: Actor | None = None
    decided_at: datetime | None = None
    # The split: the offer's total, what the owner authorised of it at once, and the remainder asked for
    # (``amount``) per offer line, in the offer's line order (empty: every line at its amount).
    offer_total: Money | None = None
    owner_share: Money | None = None
    line_minor: tuple[int, ...] = ()
    split: str = ""


@dataclass(frozen=True)
class ClockState:
    """One SLA clock: its business-time budget, deadline, warning point, pause bookkeeping and status."""

    clock: SlaClock
    status: SlaStatus
    budget: timedelta
    started_at: datetime
    deadline_at: datetime
    warn_at: datetime
    paused_at: datetime | None = None
    paused: timedelta = timedelta(0)
    stopped_at: datetime | None = None
