"""Domain events of the case lifecycle (past tense); the service layer turns them into audit and outbox rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.escalation.domain.model import Actor, CaseAction, CustomerDecision


@dataclass(frozen=True)
class CaseClaimed:
    case_id: str
    owner_employee_id: str
    at: datetime
    action = CaseAction.CLAIMED


@dataclass(frozen=True)
class CaseAcknowledged:
    case_id: str
    at: datetime
    action = CaseAction.ACKNOWLEDGED


@dataclass(frozen=True)
class OfferProposed:
    case_id: str
    offer_id: str
    at: datetime
    action = CaseAction.OFFER_PROPOSED


@dataclass(frozen=True)
class OfferAuthorized:
    case_id: str
    by: Actor
    at: datetime
    action = CaseAction.OFFER_AUTHORIZED


@dataclass(frozen=True)
class ApprovalRequested:
    case_id: str
    by: Actor
    at: datetime
    action = CaseAction.APPROVAL_REQUESTED


@dataclass(frozen=True)
class ApprovalDecided:
    case_id: str
    by: Actor
    approved: bool
    at: datetime
    action = CaseAction.APPROVAL_DECIDED


@dataclass(frozen=True)
class OfferPresented:
    case_id: str
    by: Actor
    at: datetime
    action = CaseAction.CUSTOMER_DECISION_RECORDED


@dataclass(frozen=True)
class CustomerDecisionRecorded:
    case_id: str
    decision: CustomerDecision
    at: datetime
    action = CaseAction.CUSTOMER_DECISION_RECORDED


@dataclass(frozen=True)
class CaseTransferred:
    case_id: str
    from_employee_id: str
    to_employee_id: str
    to_team: str
    reason: str
    at: datetime
    action = CaseAction.TRANSFERRED


@dataclass(frozen=True)
class CaseResolved:
    case_id: str
    by: Actor
    at: datetime
    action = CaseAction.RESOLVED


@dataclass(frozen=True)
class CaseReopened:
    case_id: str
    reason: str
    at: datetime
    action = CaseAction.REOPENED
