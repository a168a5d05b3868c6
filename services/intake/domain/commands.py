"""Commands intake accepts, as the edge builds them from gRPC requests or Kafka records (not yet validated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.intake.domain.model import (
    Area,
    Avoidability,
    Category,
    Channel,
    CostItem,
    CustomerRequest,
    Impact,
    Money,
    RiskTag,
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
