"""Commands of the case lifecycle (imperative), as the transition table receives them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.escalation.domain.model import Actor, CustomerDecision, Offer, Outlook, Reach, Severity


@dataclass(frozen=True)
class ClaimCase:
    """Take a queued case: ``by`` becomes the owner. ``offer_authorized`` says whether the case's current offer
    was already authorised while it waited (the system's automatic recovery)."""

    by: Actor
    offer_authorized: bool = False


@dataclass(frozen=True)
class AcknowledgeCase:
    """The customer has had the acknowledgement and apology."""

    by: Actor


@dataclass(frozen=True)
class ProposeOffer:
    """Compensation proposed a (new version of the) offer."""

    offer_id: str


@dataclass(frozen=True)
class AuthorizeOffer:
    """Authorise the current offer with ``by``'s own authority (the owner, or the system actor)."""

    by: Actor


@dataclass(frozen=True)
class RequestApproval:
    """Send the current offer to an approver."""

    by: Actor


@dataclass(frozen=True)
class DecideApproval:
    """An approver decided; ``approved`` covers approve and modify-and-approve."""

    by: Actor
    approved: bool


@dataclass(frozen=True)
class PresentOffer:
    """The authorised offer was made to the customer: wait for their answer (the SLA clocks pause)."""

    by: Actor


@dataclass(frozen=True)
class RecordCustomerDecision:
    """The customer answered the offer."""

    by: Actor
    decision: CustomerDecision


@dataclass(frozen=True)
class TransferCase:
    """Give the case to ``to_employee_id`` (empty: to the team's queue) with a reason."""

    by: Actor
    to_employee_id: str
    to_team: str
    reason: str


@dataclass(frozen=True)
class ResolveCase:
    """Close the case."""

    by: Actor


@dataclass(frozen=True)
class ReopenCase:
    """Reopen a resolved case; it goes back to its owner."""

    by: Actor
    reason: str


@dataclass(frozen=True)
class OpenCase:
    """Intake opened a case: queue it (no owner) or give it to the reporter."""

    case_id: str
    customer_id: str
    owner_employee_id: str
    team: str
    severity: Severity | None
    outlook: Outlook | None
    system_detected: bool
    opened_at: datetime
    owner_role: str = ""
    incident_id: str = ""
    reach: Reach = field(default_factory=Reach)


@dataclass(frozen=True)
class AmendCase:
    """Intake merged another failure into the case: its classification may have changed."""

    case_id: str
    revision: int
    severity: Severity | None
    outlook: Outlook | None
    system_detected: bool


@dataclass(frozen=True)
class ReceiveOffer:
    """Compensation proposed an offer version for the case."""

    case_id: str
    customer_id: str
    offer: Offer
    proposed_at: datetime


@dataclass(frozen=True)
class RequestReopen:
    """Followup asks to reopen a case the customer was not satisfied with."""

    case_id: str
    reason: str
    followup_id: str
