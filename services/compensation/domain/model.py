"""Compensation's value types: the facts an offer is computed from, the customer's history, the offer itself.

Enum values are the protobuf enum names without their prefix, in lower case; ``*_UNSPECIFIED`` is None.
Money is integer minor units plus an ISO-4217 code (``services.common.money.Money``), never a float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Re-exported: money and the contract's enums are compensation's vocabulary too, defined once for every service.
from services.common.money import KNOWN_CURRENCIES as KNOWN_CURRENCIES
from services.common.money import Money as Money
from services.common.texts import CustomerText as CustomerText
from services.common.vocabulary import AuthorizationPart as AuthorizationPart
from services.common.vocabulary import Avoidability as Avoidability
from services.common.vocabulary import Category as Category
from services.common.vocabulary import CostItem as CostItem
from services.common.vocabulary import CostKind as CostKind
from services.common.vocabulary import CustomerRequest as CustomerRequest
from services.common.vocabulary import Impact as Impact
from services.common.vocabulary import OfferAdjustment as OfferAdjustment
from services.common.vocabulary import Outlook as Outlook
from services.common.vocabulary import PersonalGesture as PersonalGesture
from services.common.vocabulary import Reason as Reason
from services.common.vocabulary import ReceiptReceived as ReceiptReceived
from services.common.vocabulary import RemedyKind as RemedyKind
from services.common.vocabulary import RemedySwap as RemedySwap
from services.common.vocabulary import RequestOutcome as RequestOutcome
from services.common.vocabulary import RequoteReason as RequoteReason
from services.common.vocabulary import Severity as Severity
from services.common.vocabulary import SlaClock as SlaClock


@dataclass(frozen=True)
class CaseFacts:
    """What compensation knows about a case: intake's facts plus what happened to the recovery since.

    ``failure_at`` is when the customer's wait began (the failure); ``sla_breaches`` and ``reopen_count``
    count the recovery's own failures (breached deadlines, reopenings).
    """

    customer_id: str
    category: Category | None
    severity: Severity | None
    failure_at: datetime
    avoidability: Avoidability | None = None
    outlook: Outlook | None = None
    reported_costs: tuple[CostItem, ...] = ()
    stated_impacts: tuple[Impact, ...] = ()
    customer_request: CustomerRequest | None = None
    order_value: Money | None = None
    customer_value: Money | None = None
    prior_failure_count: int = 0
    system_detected: bool = False
    sla_breaches: int = 0
    reopen_count: int = 0
    case_id: str = ""
    owning_team: str = ""
    # The order, booking or contract reference the case concerns (empty when none); the repeat guard keys on it.
    reference: str = ""
    # The disruption the case is part of, and the playbook its declaration names (empty until declared).
    incident_id: str = ""
    playbook_id: str = ""
    # The language the customer is written to in (en, it, lt, pl; empty: the fallback).
    locale: str = ""
    # The frontline's adjustments so far: the kinds the customer prefers, and the personal gestures added.
    swaps: tuple[RemedySwap, ...] = ()
    gestures: tuple[PersonalGesture, ...] = ()


@dataclass(frozen=True)
class CustomerHistory:
    """What compensation's own store says about the customer beyond this case (for the abuse guard)."""

    # Costs reported without a receipt on the customer's OTHER cases within the policy's abuse window.
    unverified_claims_in_window: int = 0
    # The customer's OTHER cases on this case's (non-empty) reference that received an authorisation within
    # the abuse window: paying the same reference again wants a human first.
    repeat_reference_cases: tuple[str, ...] = ()


@dataclass(frozen=True)
class GrantedLine:
    """One line an earlier authorisation of the case granted (what a re-quote does not offer again)."""

    kind: RemedyKind
    amount: Money
    cost_kind: CostKind | None = None


@dataclass(frozen=True)
class LineItem:
    """One line of an offer: what, how much, which rule, why (for staff) and why (for the customer)."""

    kind: RemedyKind
    amount: Money
    rule_id: str
    internal_reason: str
    customer_text: CustomerText  # rendered in the case's language before it leaves the service
    needs_receipt: bool = False
    cost_kind: CostKind | None = None


@dataclass(frozen=True)
class Offer:
    """An offer version. ``offer_id`` is empty for a what-if quote; the service layer numbers stored ones."""

    case_id: str
    customer_id: str
    policy_version: str
    line_items: tuple[LineItem, ...]
    total: Money
    proposed_at: datetime
    needs_review: bool = False
    review_reasons: tuple[Reason, ...] = ()
    budget_exceeded: bool = False
    request_outcome: RequestOutcome | None = None
    offer_id: str = ""
    version: int = 0
    supersedes_offer_id: str = ""
    superseded_by_offer_id: str = ""
    requote_reason: RequoteReason | None = None
    requote_detail: str = ""
    # What earlier authorisations of the case granted, one line per bucket; line_items are only what is new.
    granted_before: tuple[LineItem, ...] = ()
    # The declared incident's playbook when the offer is it (escalation pre-approves those); empty otherwise.
    playbook_id: str = ""
    # The language its customer texts are rendered in; empty until the service layer renders them.
    locale: str = ""

    @property
    def granted_before_total(self) -> Money:
        """Return the sum of ``granted_before`` (zero on a first offer), in the offer's currency."""
        return Money(sum(line.amount.amount_minor for line in self.granted_before), self.total.currency)

    def amount_of(self, *kinds: RemedyKind) -> int:
        """Return the sum of the lines of these kinds, in minor units."""
        return sum(line.amount.amount_minor for line in self.line_items if line.kind in kinds)
