"""Translation between intake's dataclasses and the protobuf contracts (events and the gRPC API).

Decoding never validates: it carries what the wire said (UNSPECIFIED enums as None, unset messages as
None) into a ``ReportFailure`` command, and ``validate_report`` decides. Encoding is total.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from recovery.events.v1 import common_pb2, events_pb2
from recovery.intake.v1 import intake_pb2

from services.common.errors import FieldViolation, InvalidInput
from services.common.wire import (
    cost_from_proto,
    cost_to_proto,
    duration_to_proto,
    enum_from_proto,
    enum_to_proto,
    enums_from_proto,
    money_from_proto,
    money_to_proto,
    request_from_proto,
    request_to_proto,
    set_optional,
    time_from_proto,
    time_to_proto,
)
from services.intake.domain.commands import (
    RecordCaseStatus,
    RecordCompensation,
    RecordContact,
    RecordSatisfaction,
    ReportFailure,
)
from services.intake.domain.events import CaseAmended, CaseOpened, HotspotDetected
from services.intake.domain.model import (
    Area,
    AuthorizationPart,
    Avoidability,
    CaseStatus,
    Category,
    Channel,
    Classification,
    CustomerHistory,
    FailureReport,
    HotspotDimension,
    Impact,
    Reason,
    RiskTag,
    SatisfactionAnswer,
    Source,
)
from services.intake.domain.validation import money_violations

# ------------------------------------------------------------------------------------------ decoding


def _area(area: common_pb2.Area) -> Area:
    return Area(
        component=area.component,
        release=area.release,
        team=area.team,
        employee_id=area.employee_id,
        location=area.location,
    )


def _common_fields(message) -> dict:
    """Return the ReportFailure fields that FailureReported and ReportFailureRequest share."""
    return {
        "customer_id": message.customer_id,
        "reference": message.reference,
        "category": enum_from_proto(common_pb2.Category, message.category, Category),
        "occurred_at": time_from_proto(message, "occurred_at"),
        "description": message.description,
        "reported_costs": tuple(cost_from_proto(item) for item in message.reported_costs),
        "stated_impacts": enums_from_proto(common_pb2.Impact, message.stated_impacts, Impact),
        "impact_details": message.impact_details,
        "customer_request": request_from_proto(message, "customer_request"),
        "avoidability": enum_from_proto(common_pb2.Avoidability, message.avoidability, Avoidability),
        "area": _area(message.area),
        "risk_tags": enums_from_proto(common_pb2.RiskTag, message.risk_tags, RiskTag),
        "order_value": money_from_proto(message, "order_value"),
        "customer_value": money_from_proto(message, "customer_value"),
        "customer_timezone": message.customer_timezone,
        "preferred_channel": enum_from_proto(common_pb2.Channel, message.preferred_channel, Channel),
        "incident_id": message.incident_id,
        "locale": message.locale,
    }


def command_from_event(message: events_pb2.FailureReported) -> ReportFailure:
    """Return the command a FailureReported record asks for (not yet validated)."""
    return ReportFailure(
        **_common_fields(message),
        source=enum_from_proto(common_pb2.Source, message.source, Source),
        source_event_id=message.source_event_id,
        reported_by_employee_id=message.reported_by_employee_id,
        survey_score=message.survey_score if message.HasField("survey_score") else None,
        related_case_id=message.related_case_id,
        source_system=message.source_system,
    )


def command_from_request(request: intake_pb2.ReportFailureRequest, *, reporter: str) -> ReportFailure:
    """Return the command a frontline ReportFailure call asks for: the caller reports, the request id dedupes."""
    return ReportFailure(
        **_common_fields(request),
        source=Source.FRONTLINE,
        source_event_id=request.request_id,
        reported_by_employee_id=reporter,
    )


# ------------------------------------------------------------------------------------------ encoding


def _area_to_proto(area: Area) -> common_pb2.Area:
    return common_pb2.Area(
        component=area.component,
        release=area.release,
        team=area.team,
        employee_id=area.employee_id,
        location=area.location,
    )


def _sorted(members) -> list:
    # Sets have no order; sort so the same report always serialises to the same bytes.
    return sorted(members, key=lambda member: member.value)


def _facts(message, report: FailureReport) -> None:
    """Copy the facts every case event and the stored report share onto ``message``."""
    message.reference = report.reference
    message.category = enum_to_proto(common_pb2.Category, report.category)
    message.reported_costs.extend(cost_to_proto(item) for item in report.reported_costs)
    message.stated_impacts.extend(enum_to_proto(common_pb2.Impact, i) for i in _sorted(report.stated_impacts))
    message.impact_details = report.impact_details
    set_optional(message, "customer_request", request_to_proto(report.customer_request))
    message.area.CopyFrom(_area_to_proto(report.area))
    message.risk_tags.extend(enum_to_proto(common_pb2.RiskTag, t) for t in _sorted(report.risk_tags))
    set_optional(message, "order_value", money_to_proto(report.order_value))
    set_optional(message, "customer_value", money_to_proto(report.customer_value))
    message.customer_timezone = report.customer_timezone
    message.preferred_channel = enum_to_proto(common_pb2.Channel, report.preferred_channel)


def report_to_proto(report: FailureReport) -> events_pb2.FailureReported:
    """Return an accepted report as the FailureReported message (also how the store keeps it)."""
    message = events_pb2.FailureReported(
        customer_id=report.customer_id,
        source=enum_to_proto(common_pb2.Source, report.source),
        source_event_id=report.source_event_id,
        occurred_at=time_to_proto(report.occurred_at),
        description=report.description,
        avoidability=enum_to_proto(common_pb2.Avoidability, report.avoidability),
        reported_by_employee_id=report.reported_by_employee_id,
        related_case_id=report.related_case_id,
        source_system=report.source_system,
        incident_id=report.incident_id,
        locale=report.locale,
    )
    _facts(message, report)
    if report.survey_score is not None:
        message.survey_score = report.survey_score
    return message


def _reasons(reasons: tuple[Reason, ...]) -> list[common_pb2.Reason]:
    return [common_pb2.Reason(code=r.code, detail=r.detail) for r in reasons]


def classification_to_proto(c: Classification) -> common_pb2.Classification:
    """Return the classification with every reason behind it."""
    stated = Avoidability.AVOIDABLE if c.avoidable else c.avoidability
    return common_pb2.Classification(
        severity=common_pb2.SeverityAssessment(
            severity=enum_to_proto(common_pb2.Severity, c.severity), reasons=_reasons(c.severity_reasons)
        ),
        avoidability=common_pb2.AvoidabilityAssessment(
            avoidability=enum_to_proto(common_pb2.Avoidability, stated), reasons=_reasons((c.avoidability_reason,))
        ),
        outlook=common_pb2.OutlookAssessment(
            outlook=enum_to_proto(common_pb2.Outlook, c.outlook), reasons=_reasons(c.outlook_reasons)
        ),
        policy_version=c.policy_version,
    )


def satisfaction_to_proto(answer: SatisfactionAnswer | None) -> common_pb2.SatisfactionAnswer | None:
    """Return the wire answer; None when there is none."""
    if answer is None:
        return None
    wire = common_pb2.SatisfactionAnswer(received_at=time_to_proto(answer.received_at))
    if answer.score is not None:
        wire.score = answer.score
    if answer.satisfied is not None:
        wire.satisfied = answer.satisfied
    return wire


def history_to_proto(history: CustomerHistory) -> common_pb2.HistorySummary:
    """Return the history summary staff and downstream services see."""
    wire = common_pb2.HistorySummary(
        prior_failure_count=len(history.prior_failure_times),
        failure_lookback=duration_to_proto(history.failure_lookback),
        prior_case_count=history.prior_case_count,
        compensation_received=[money_to_proto(m) for m in history.compensation_received],
        case_lookback=duration_to_proto(history.case_lookback),
    )
    set_optional(wire, "last_satisfaction", satisfaction_to_proto(history.last_satisfaction))
    return wire


def source_events_to_proto(reports) -> list[common_pb2.SourceEvent]:
    """Return the publisher events behind (failure id, report) pairs; reports without an event id are left out."""
    return [
        common_pb2.SourceEvent(
            source=enum_to_proto(common_pb2.Source, report.source),
            source_event_id=report.source_event_id,
            failure_id=failure_id,
        )
        for failure_id, report in reports
        if report.source_event_id
    ]


def case_opened_to_proto(event: CaseOpened) -> events_pb2.CaseOpened:
    """Return the CaseOpened event message."""
    report = event.report
    message = events_pb2.CaseOpened(
        customer_id=report.customer_id,
        case_id=event.case_id,
        owner_employee_id=event.owner_employee_id,
        owner_role=event.owner_role,
        owning_team=event.owning_team,
        failure_ids=[event.failure_id],
        source=enum_to_proto(common_pb2.Source, report.source),
        system_detected=report.system_detected,
        occurred_at=time_to_proto(report.occurred_at),
        description=report.description,
        classification=classification_to_proto(event.classification),
        history=history_to_proto(event.history),
        opened_at=time_to_proto(event.opened_at),
        related_case_id=report.related_case_id,
        source_events=source_events_to_proto([(event.failure_id, report)]),
        incident_id=report.incident_id,
        locale=event.locale,
    )
    _facts(message, report)
    return message


def case_amended_to_proto(event: CaseAmended) -> events_pb2.CaseAmended:
    """Return the CaseAmended event message: the case's facts after the merge, and the merged failure."""
    message = events_pb2.CaseAmended(
        customer_id=event.case_report.customer_id,
        case_id=event.case_id,
        revision=event.revision,
        merged_failure_id=event.failure_id,
        merged_failure=report_to_proto(event.merged_report),
        failure_ids=list(event.failure_ids),
        classification=classification_to_proto(event.classification),
        history=history_to_proto(event.history),
        system_detected=event.case_report.system_detected,
        amended_at=time_to_proto(event.amended_at),
        source_events=source_events_to_proto(event.reports),
        locale=event.locale,
    )
    _facts(message, event.case_report)
    return message


def hotspot_to_proto(event: HotspotDetected) -> events_pb2.HotspotDetected:
    """Return the HotspotDetected event message, keyed ``hotspot:<dimension>:<value>``."""
    return events_pb2.HotspotDetected(
        customer_id=hotspot_key(event.dimension, event.value),
        hotspot_id=event.hotspot_id,
        dimension=enum_to_proto(common_pb2.HotspotDimension, event.dimension),
        value=event.value,
        window_start_at=time_to_proto(event.window_start),
        window_end_at=time_to_proto(event.window_end),
        count=event.count,
        baseline_total=event.baseline_total,
        baseline_windows=event.baseline_windows,
        factor_bp=event.factor_bps,
        detected_at=time_to_proto(event.detected_at),
    )


def hotspot_key(dimension: HotspotDimension, value: str) -> str:
    """Return the record key of a hot spot (the catalogue's ``hotspot:<dimension>:<value>``)."""
    return f"hotspot:{dimension.value}:{value}"


_CASE_STATUS = {
    CaseStatus.OPEN: intake_pb2.CASE_STATUS_OPEN,
    CaseStatus.RESOLVED: intake_pb2.CASE_STATUS_RESOLVED,
    CaseStatus.REOPENED: intake_pb2.CASE_STATUS_REOPENED,
}


def case_status_to_proto(status: CaseStatus) -> int:
    """Return the API's CaseStatus value."""
    return _CASE_STATUS[status]


# ------------------------------------------------------------------- downstream events intake records


def _require(message, *fields: str) -> None:
    """Raise InvalidInput naming every required string field that is empty."""
    missing = [FieldViolation(name, "is required") for name in fields if not getattr(message, name)]
    if missing:
        raise InvalidInput.of(*missing)


def compensation_from_event(message: events_pb2.OfferAuthorized, *, at: datetime) -> RecordCompensation:
    """Return what an OfferAuthorized event tells intake; raises InvalidInput when it cannot say it."""
    _require(message, "customer_id", "case_id", "offer_id")
    amount = money_from_proto(message, "amount")
    violations = [FieldViolation("amount", "is required")] if amount is None else money_violations(amount, "amount")
    if violations:
        raise InvalidInput.of(*violations)
    assert amount is not None
    return RecordCompensation(
        customer_id=message.customer_id,
        case_id=message.case_id,
        offer_id=message.offer_id,
        offer_version=message.offer_version,
        amount=amount,
        authorized_at=time_from_proto(message, "authorized_at") or at,
        # Producers before the split sent neither: their one authorisation per offer was the whole of it.
        authorization_id=message.authorization_id or message.offer_id,
        part=enum_from_proto(common_pb2.AuthorizationPart, message.part, AuthorizationPart) or AuthorizationPart.WHOLE,
    )


def resolution_from_event(message: events_pb2.CaseResolved, *, at: datetime) -> RecordCaseStatus:
    """Return the status change a CaseResolved event records."""
    _require(message, "customer_id", "case_id")
    return RecordCaseStatus(
        case_id=message.case_id, status=CaseStatus.RESOLVED, at=time_from_proto(message, "resolved_at") or at
    )


def reopening_from_event(message: events_pb2.CaseReopened, *, at: datetime) -> RecordCaseStatus:
    """Return the status change a CaseReopened event records."""
    _require(message, "customer_id", "case_id")
    return RecordCaseStatus(
        case_id=message.case_id, status=CaseStatus.REOPENED, at=time_from_proto(message, "reopened_at") or at
    )


def contact_from_event(message: events_pb2.ContactRecorded, *, at: datetime) -> RecordContact:
    """Return the contact-log entry a ContactRecorded carries; raises InvalidInput naming a missing id."""
    _require(message, "customer_id")
    missing = [f"contact.{name}" for name in ("contact_id", "case_id") if not getattr(message.contact, name)]
    if missing:
        raise InvalidInput.of(*(FieldViolation(name, "is required") for name in missing))
    return RecordContact(
        contact_id=message.contact.contact_id,
        customer_id=message.customer_id,
        case_id=message.contact.case_id,
        occurred_at=time_from_proto(message.contact, "occurred_at") or at,
        entry=message.contact.SerializeToString(),
    )


def contacts_to_proto(entries: Sequence[bytes]) -> list[common_pb2.Contact]:
    """Return stored contact-log entries as the contract's messages."""
    return [common_pb2.Contact.FromString(entry) for entry in entries]


def satisfaction_from_event(
    message: events_pb2.FeedbackReceived, *, identity: tuple[str, str], at: datetime
) -> RecordSatisfaction:
    """Return the answer a FeedbackReceived event carries; raises InvalidInput when the score is out of range."""
    _require(message, "customer_id", "case_id")
    score = message.score if message.HasField("score") else None
    if score is not None and not 0 <= score <= 10:
        raise InvalidInput.of(FieldViolation("score", f"must be from 0 to 10, got {score}"))
    return RecordSatisfaction(
        customer_id=message.customer_id,
        case_id=message.case_id,
        source=(enum_from_proto(common_pb2.Source, message.source, Source) or Source.SURVEY).value,
        # Survey systems should send their own id; without one the CloudEvents identity (source and id) is the
        # best key there is: two systems' equal ids are two answers.
        feedback_id=message.feedback_id or "/".join(identity),
        answer=SatisfactionAnswer(
            received_at=time_from_proto(message, "received_at") or at,
            score=score,
            satisfied=message.satisfied if message.HasField("satisfied") else None,
        ),
    )
