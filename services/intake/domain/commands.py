"""Commands intake accepts, as the edge builds them from gRPC requests or Kafka records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.intake.domain.model import (
    Area,
    AuthorizationPart,
    Avoidability,
    CaseStatus,
    Category,
    Channel,
    CostItem,
    CustomerRequest,
    Impact,
    Money,
    RiskTag,
    SatisfactionAnswer,
    Source,
)


@dataclass(frozen=True)
class ReportFailure:
    """Record a failure as reported; ``validate_report`` turns it into a ``FailureReport`` or refuses it."""

    # Enum fields are None when the wire said UNSPECIFIED; strings are empty when absent.
    customer_id: str = ""
    source: Source | None = None
    source_event_id: str = ""
    category: Category | None = None
    occurred_at: datetime | None = None
    reference: str = ""
    description: str = ""
    reported_costs: tuple[CostItem, ...] = ()
    stated_impacts: tuple[Impact, ...] = ()
    impact_details: str = ""
    customer_request: CustomerRequest | None = None
    avoidability: Avoidability | None = None
    area: Area = field(default_factory=Area)
    risk_tags: tuple[RiskTag, ...] = ()
    order_value: Money | None = None
    customer_value: Money | None = None
    reported_by_employee_id: str = ""
    survey_score: int | None = None
    related_case_id: str = ""
    customer_timezone: str = ""
    preferred_channel: Channel | None = None
    # The CloudEvents source of a report that named no source of its own (or other_system): it identifies the
    # publisher, so two such systems' equal event ids are two failures.
    publisher: str = ""
    source_system: str = ""
    # The disruption the failure is part of (a cancelled flight): its cases are counted together.
    incident_id: str = ""
    locale: str = ""  # as the publisher sent it (BCP 47); validation parses it


@dataclass(frozen=True)
class RecordCompensation:
    """Remember one authorisation on a case (from escalation's offer-authorized event); a case's authorisations
    add up, each counted once under ``authorization_id``."""

    customer_id: str
    case_id: str
    offer_id: str
    offer_version: int
    amount: Money
    authorized_at: datetime
    authorization_id: str
    part: AuthorizationPart = AuthorizationPart.WHOLE


@dataclass(frozen=True)
class RecordCaseStatus:
    """Remember that a case was resolved or reopened (from escalation's events)."""

    case_id: str
    status: CaseStatus
    at: datetime


@dataclass(frozen=True)
class RecordSatisfaction:
    """Remember a customer's satisfaction answer (from the feedback-received event)."""

    customer_id: str
    case_id: str
    source: str
    feedback_id: str
    answer: SatisfactionAnswer


@dataclass(frozen=True)
class RecordContact:
    """Remember a contact-log entry of one of the customer's cases (from the contact-recorded event); the entry
    is kept as published, for the history view."""

    contact_id: str
    customer_id: str
    case_id: str
    occurred_at: datetime
    entry: bytes
