"""Compensation's commands: one frozen dataclass per thing the service is asked to do (imperative names)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.compensation.domain.model import (
    AuthorizationPart,
    CaseFacts,
    CustomerRequest,
    LineItem,
    Money,
    OfferAdjustment,
    SlaClock,
)


@dataclass(frozen=True)
class QuoteFirstOffer:
    """A case was opened: store its facts and propose its first offer (once per case id)."""

    facts: CaseFacts
    opened_at: datetime


@dataclass(frozen=True)
class RequoteAmendedCase:
    """Intake merged another failure into the case: replace the facts (newer revision only) and re-quote."""

    facts: CaseFacts
    revision: int
    merged_failure_id: str
    amended_at: datetime


@dataclass(frozen=True)
class RequoteForBreach:
    """An SLA deadline of the recovery was missed: count it (once per deadline) and re-quote."""

    case_id: str
    customer_id: str
    clock: SlaClock | None
    deadline_at: datetime | None
    breached_at: datetime
    approval_id: str = ""


@dataclass(frozen=True)
class RequoteForAdjustment:
    """The case owner adjusted the offer (swap, gesture, late cost, receipt): re-quote with it, once per id."""

    case_id: str
    customer_id: str
    adjusted_offer_id: str
    adjustment_id: str
    adjustment: OfferAdjustment
    reason: str
    adjusted_by: str
    adjusted_at: datetime


@dataclass(frozen=True)
class RequoteForCounter:
    """The customer answered an offer with their own request: re-quote on it."""

    case_id: str
    customer_id: str
    countered_offer_id: str
    request: CustomerRequest | None
    countered_at: datetime


@dataclass(frozen=True)
class RequoteReopenedCase:
    """A resolved case was reopened: count it and re-quote."""

    case_id: str
    customer_id: str
    reason: str
    reopened_at: datetime
    dedupe_key: str


@dataclass(frozen=True)
class RecordAuthorization:
    """(Part of) an offer was authorised: add it to the owning team's spend for the month, once per authorisation.

    A split offer has two: the owner's share and, once approved, the remainder; each with its own id and lines.
    """

    authorization_id: str
    offer_id: str
    case_id: str
    customer_id: str
    team: str
    amount: Money
    line_items: tuple[LineItem, ...]
    authorized_at: datetime
    part: AuthorizationPart = AuthorizationPart.WHOLE


@dataclass(frozen=True)
class ApplyPlaybook:
    """An incident was declared with a playbook: record it (once per incident) and offer its cases the playbook."""

    incident_id: str
    playbook_id: str
    declared_by: str
    declared_at: datetime
