"""Protobuf <-> compensation's domain: events in, offers out, what-if facts from the API.

Nothing here decides anything about money; it only translates (and validates what-if facts, which arrive
from a client rather than from intake's already validated events).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from recovery.compensation.v1 import compensation_pb2
from recovery.events.v1 import common_pb2, events_pb2

from services.common.errors import InvalidInput
from services.common.wire import (
    adjustment_from_proto,
    cost_from_proto,
    cost_to_proto,
    customer_text_from_proto,
    customer_text_to_proto,
    duration_from_proto,
    duration_to_proto,
    enum_from_proto,
    enum_to_proto,
    enums_from_proto,
    gesture_from_proto,
    gesture_to_proto,
    locale_from_proto,
    money_from_proto,
    money_to_proto,
    request_from_proto,
    request_to_proto,
    set_optional,
    swap_from_proto,
    swap_to_proto,
    time_from_proto,
    time_to_proto,
)
from services.compensation.domain import commands
from services.compensation.domain.errors import FieldViolation, InvalidCaseFacts, InvalidEvent
from services.compensation.domain.model import (
    KNOWN_CURRENCIES,
    AuthorizationPart,
    Avoidability,
    CaseFacts,
    Category,
    CostKind,
    Impact,
    LineItem,
    Money,
    Offer,
    Outlook,
    Reason,
    RemedyKind,
    RequestOutcome,
    RequoteReason,
    Severity,
    SlaClock,
)

MAX_COSTS = 50

# ------------------------------------------------------------------------------------ values


def line_to_proto(line: LineItem) -> common_pb2.OfferLineItem:
    """Return the wire offer line."""
    return common_pb2.OfferLineItem(
        kind=enum_to_proto(common_pb2.RemedyKind, line.kind),
        amount=money_to_proto(line.amount),
        rule_id=line.rule_id,
        internal_reason=line.internal_reason,
        customer_explanation=line.customer_text.text,
        needs_receipt=line.needs_receipt,
        cost_kind=enum_to_proto(common_pb2.CostKind, line.cost_kind),
        customer_text=customer_text_to_proto(line.customer_text),
    )


def line_from_proto(line: common_pb2.OfferLineItem) -> LineItem:
    """Return the domain offer line (a kind unknown to this build reads as a zero-cost apology note)."""
    return LineItem(
        kind=enum_from_proto(common_pb2.RemedyKind, line.kind, RemedyKind) or RemedyKind.APOLOGY_NOTE,
        amount=money_from_proto(line, "amount") or Money(0, ""),
        rule_id=line.rule_id,
        internal_reason=line.internal_reason,
        customer_text=customer_text_from_proto(line, "customer_text", words=line.customer_explanation),
        needs_receipt=line.needs_receipt,
        cost_kind=enum_from_proto(common_pb2.CostKind, line.cost_kind, CostKind),
    )


# ------------------------------------------------------------------------------------ case facts


def _classified(classification: common_pb2.Classification) -> dict:
    return {
        "severity": enum_from_proto(common_pb2.Severity, classification.severity.severity, Severity),
        "avoidability": enum_from_proto(
            common_pb2.Avoidability, classification.avoidability.avoidability, Avoidability
        ),
        "outlook": enum_from_proto(common_pb2.Outlook, classification.outlook.outlook, Outlook),
    }


def _common_facts(message, *, failure_at: datetime) -> dict:
    return {
        "customer_id": message.customer_id,
        "case_id": message.case_id,
        "category": enum_from_proto(common_pb2.Category, message.category, Category),
        "failure_at": failure_at,
        "reported_costs": tuple(cost_from_proto(c) for c in message.reported_costs),
        "stated_impacts": enums_from_proto(common_pb2.Impact, message.stated_impacts, Impact),
        "customer_request": request_from_proto(message, "customer_request"),
        "order_value": money_from_proto(message, "order_value"),
        "customer_value": money_from_proto(message, "customer_value"),
        "prior_failure_count": message.history.prior_failure_count,
        "system_detected": message.system_detected,
        # Intake chose and checked it; any other value dead-letters the record, named.
        "locale": locale_from_proto(message.locale, "locale"),
        **_classified(message.classification),
    }


def open_command(message: events_pb2.CaseOpened, *, at: datetime) -> commands.QuoteFirstOffer:
    """Return the command a case-opened event asks for (``at``: the event time when fields are unset)."""
    opened_at = time_from_proto(message, "opened_at") or at
    failure_at = time_from_proto(message, "occurred_at") or opened_at
    facts = CaseFacts(
        **_common_facts(message, failure_at=failure_at),
        owning_team=message.owning_team,
        reference=message.reference,
        incident_id=message.incident_id,
    )
    return commands.QuoteFirstOffer(facts=facts, opened_at=opened_at)


def amend_command(message: events_pb2.CaseAmended, *, at: datetime) -> commands.RequoteAmendedCase:
    """Return the command a case-amended event asks for (the stored case keeps its failure time and incident)."""
    amended_at = time_from_proto(message, "amended_at") or at
    # The event carries no case-level failure time; the handler keeps the stored one (the wait began then).
    first_failure = time_from_proto(message.merged_failure, "occurred_at") or amended_at
    return commands.RequoteAmendedCase(
        facts=CaseFacts(**_common_facts(message, failure_at=first_failure), reference=message.reference),
        revision=message.revision,
        merged_failure_id=message.merged_failure_id,
        amended_at=amended_at,
    )


def breach_command(message: events_pb2.SlaBreached, *, at: datetime) -> commands.RequoteForBreach:
    """Return the command an SLA-breached event asks for."""
    return commands.RequoteForBreach(
        case_id=message.case_id,
        customer_id=message.customer_id,
        clock=enum_from_proto(common_pb2.SlaClock, message.clock, SlaClock),
        deadline_at=time_from_proto(message, "deadline_at"),
        breached_at=time_from_proto(message, "breached_at") or at,
        approval_id=message.approval_id,
    )


def counter_command(message: events_pb2.CustomerCountered, *, at: datetime) -> commands.RequoteForCounter:
    """Return the command a customer-countered event asks for."""
    return commands.RequoteForCounter(
        case_id=message.case_id,
        customer_id=message.customer_id,
        countered_offer_id=message.offer_id,
        request=request_from_proto(message, "request"),
        countered_at=time_from_proto(message, "countered_at") or at,
    )


def adjustment_command(message: events_pb2.OfferAdjusted, *, at: datetime) -> commands.RequoteForAdjustment:
    """Return the command an offer-adjusted event asks for; raises InvalidEvent naming missing ids."""
    missing = [name for name in ("case_id", "adjustment_id") if not getattr(message, name)]
    if missing:
        raise InvalidEvent.of(*(FieldViolation(name, "is required") for name in missing))
    return commands.RequoteForAdjustment(
        case_id=message.case_id,
        customer_id=message.customer_id,
        adjusted_offer_id=message.offer_id,
        adjustment_id=message.adjustment_id,
        adjustment=adjustment_from_proto(message.adjustment),
        reason=message.reason,
        adjusted_by=message.adjusted_by.employee_id,
        adjusted_at=time_from_proto(message, "adjusted_at") or at,
    )


def reopen_command(message: events_pb2.CaseReopened, *, at: datetime, ce_id: str) -> commands.RequoteReopenedCase:
    """Return the command a case-reopened event asks for (deduped by followup id, else by event id)."""
    return commands.RequoteReopenedCase(
        case_id=message.case_id,
        customer_id=message.customer_id,
        reason=message.reason,
        reopened_at=time_from_proto(message, "reopened_at") or at,
        dedupe_key=f"followup:{message.followup_id}" if message.followup_id else f"event:{ce_id}",
    )


def authorization_command(message: events_pb2.OfferAuthorized, *, at: datetime) -> commands.RecordAuthorization:
    """Return the command an offer-authorized event asks for.

    Producers before the split sent no authorisation id (one authorisation per offer: the offer id stands in)
    and no part (the whole offer).
    """
    return commands.RecordAuthorization(
        authorization_id=message.authorization_id or message.offer_id,
        part=enum_from_proto(common_pb2.AuthorizationPart, message.part, AuthorizationPart) or AuthorizationPart.WHOLE,
        offer_id=message.offer_id,
        case_id=message.case_id,
        customer_id=message.customer_id,
        team=message.team,
        amount=money_from_proto(message, "amount") or Money(0, ""),
        line_items=tuple(line_from_proto(li) for li in message.line_items),
        authorized_at=time_from_proto(message, "authorized_at") or at,
    )


def declaration_command(message: events_pb2.IncidentDeclared, *, at: datetime) -> commands.ApplyPlaybook:
    """Return the command an incident-declared event asks for; raises InvalidEvent without incident or playbook."""
    missing = [
        FieldViolation(name, "is required") for name in ("incident_id", "playbook_id") if not getattr(message, name)
    ]
    if missing:
        raise InvalidEvent.of(*missing)
    return commands.ApplyPlaybook(
        incident_id=message.incident_id,
        playbook_id=message.playbook_id,
        declared_by=message.declared_by,
        declared_at=time_from_proto(message, "declared_at") or at,
    )


def facts_to_proto(facts: CaseFacts, *, at: datetime) -> compensation_pb2.CaseFacts:
    """Return the wire facts as seen at ``at`` (``waited`` = at - failure_at), for storage and what-ifs."""
    wire = compensation_pb2.CaseFacts(
        customer_id=facts.customer_id,
        category=enum_to_proto(common_pb2.Category, facts.category),
        severity=enum_to_proto(common_pb2.Severity, facts.severity),
        avoidability=enum_to_proto(common_pb2.Avoidability, facts.avoidability),
        outlook=enum_to_proto(common_pb2.Outlook, facts.outlook),
        reported_costs=[cost_to_proto(c) for c in facts.reported_costs],
        stated_impacts=[enum_to_proto(common_pb2.Impact, i) for i in facts.stated_impacts],
        history=common_pb2.HistorySummary(prior_failure_count=facts.prior_failure_count),
        system_detected=facts.system_detected,
        waited=duration_to_proto(at - facts.failure_at),
        sla_breach_count=facts.sla_breaches,
        reopen_count=facts.reopen_count,
        owning_team=facts.owning_team,
        incident_id=facts.incident_id,
        playbook_id=facts.playbook_id,
        locale=facts.locale,
        swaps=[swap_to_proto(s) for s in facts.swaps],
        gestures=[gesture_to_proto(g) for g in facts.gestures],
    )
    set_optional(wire, "customer_request", request_to_proto(facts.customer_request))
    set_optional(wire, "order_value", money_to_proto(facts.order_value))
    set_optional(wire, "customer_value", money_to_proto(facts.customer_value))
    return wire


def facts_from_proto(wire: compensation_pb2.CaseFacts, *, at: datetime, case_id: str = "") -> CaseFacts:
    """Return the domain facts of wire facts seen at ``at`` (the wait began ``waited`` before it)."""
    waited = duration_from_proto(wire, "waited") or timedelta(0)
    return CaseFacts(
        customer_id=wire.customer_id,
        case_id=case_id,
        category=enum_from_proto(common_pb2.Category, wire.category, Category),
        severity=enum_from_proto(common_pb2.Severity, wire.severity, Severity),
        avoidability=enum_from_proto(common_pb2.Avoidability, wire.avoidability, Avoidability),
        outlook=enum_from_proto(common_pb2.Outlook, wire.outlook, Outlook),
        failure_at=at - waited,
        reported_costs=tuple(cost_from_proto(c) for c in wire.reported_costs),
        stated_impacts=enums_from_proto(common_pb2.Impact, wire.stated_impacts, Impact),
        customer_request=request_from_proto(wire, "customer_request"),
        order_value=money_from_proto(wire, "order_value"),
        customer_value=money_from_proto(wire, "customer_value"),
        prior_failure_count=wire.history.prior_failure_count,
        system_detected=wire.system_detected,
        sla_breaches=wire.sla_breach_count,
        reopen_count=wire.reopen_count,
        owning_team=wire.owning_team,
        incident_id=wire.incident_id,
        playbook_id=wire.playbook_id,
        locale=wire.locale,
        swaps=tuple(swap_from_proto(s) for s in wire.swaps),
        gestures=tuple(gesture_from_proto(g) for g in wire.gestures),
    )


def _check_money(money: Money | None, path: str, violations: list[FieldViolation]) -> None:
    if money is None:
        return
    if money.currency not in KNOWN_CURRENCIES:
        violations.append(FieldViolation(f"{path}.currency", f"unknown ISO-4217 currency {money.currency!r}"))
    if money.amount_minor < 0:
        violations.append(FieldViolation(f"{path}.amount_minor", "must not be negative"))


def check_facts(wire: compensation_pb2.CaseFacts, prefix: str = "facts") -> None:
    """Raise InvalidCaseFacts naming every field of what-if facts no offer can be computed from."""
    violations: list[FieldViolation] = []
    if not wire.customer_id:
        violations.append(FieldViolation(f"{prefix}.customer_id", "is required"))
    if wire.category == 0:
        violations.append(FieldViolation(f"{prefix}.category", "is required"))
    if wire.severity == 0:
        violations.append(FieldViolation(f"{prefix}.severity", "is required"))
    if len(wire.reported_costs) > MAX_COSTS:
        violations.append(FieldViolation(f"{prefix}.reported_costs", f"at most {MAX_COSTS} costs"))
    for i, cost in enumerate(wire.reported_costs):
        if not cost.HasField("amount"):
            violations.append(FieldViolation(f"{prefix}.reported_costs[{i}].amount", "is required"))
        _check_money(money_from_proto(cost, "amount"), f"{prefix}.reported_costs[{i}].amount", violations)
    for name in ("order_value", "customer_value"):
        _check_money(money_from_proto(wire, name), f"{prefix}.{name}", violations)
    if wire.HasField("customer_request"):
        _check_money(money_from_proto(wire.customer_request, "amount"), f"{prefix}.customer_request.amount", violations)
    if wire.HasField("waited") and wire.waited.seconds < 0:
        violations.append(FieldViolation(f"{prefix}.waited", "must not be negative"))
    if wire.sla_breach_count < 0 or wire.reopen_count < 0:
        violations.append(FieldViolation(f"{prefix}.sla_breach_count", "counts must not be negative"))
    if wire.history.prior_failure_count < 0:
        violations.append(FieldViolation(f"{prefix}.history.prior_failure_count", "must not be negative"))
    try:
        locale_from_proto(wire.locale, f"{prefix}.locale")
    except InvalidInput as exc:
        violations.extend(exc.violations)
    if violations:
        raise InvalidCaseFacts.of(*violations)


# ------------------------------------------------------------------------------------ offers


def offer_to_proto(offer: Offer) -> compensation_pb2.Offer:
    """Return the API's offer message."""
    wire = compensation_pb2.Offer(
        offer_id=offer.offer_id,
        case_id=offer.case_id,
        customer_id=offer.customer_id,
        version=offer.version,
        policy_version=offer.policy_version,
        line_items=[line_to_proto(line) for line in offer.line_items],
        total=money_to_proto(offer.total),
        needs_review=offer.needs_review,
        review_reasons=[common_pb2.Reason(code=r.code, detail=r.detail) for r in offer.review_reasons],
        budget_exceeded=offer.budget_exceeded,
        supersedes_offer_id=offer.supersedes_offer_id,
        superseded_by_offer_id=offer.superseded_by_offer_id,
        requote_reason=enum_to_proto(common_pb2.RequoteReason, offer.requote_reason),
        requote_detail=offer.requote_detail,
        request_outcome=enum_to_proto(common_pb2.RequestOutcome, offer.request_outcome),
        granted_before=[line_to_proto(line) for line in offer.granted_before],
        playbook_id=offer.playbook_id,
        locale=offer.locale,
    )
    if offer.total.currency:
        wire.granted_before_total.CopyFrom(money_to_proto(offer.granted_before_total))
    set_optional(wire, "proposed_at", time_to_proto(offer.proposed_at))
    return wire


def offer_from_proto(wire: compensation_pb2.Offer) -> Offer:
    """Return the domain offer of a stored API offer message."""
    return Offer(
        offer_id=wire.offer_id,
        case_id=wire.case_id,
        customer_id=wire.customer_id,
        version=wire.version,
        policy_version=wire.policy_version,
        line_items=tuple(line_from_proto(li) for li in wire.line_items),
        total=money_from_proto(wire, "total") or Money(0, ""),
        proposed_at=time_from_proto(wire, "proposed_at"),  # type: ignore[arg-type]
        needs_review=wire.needs_review,
        review_reasons=tuple(Reason(r.code, r.detail) for r in wire.review_reasons),
        budget_exceeded=wire.budget_exceeded,
        supersedes_offer_id=wire.supersedes_offer_id,
        superseded_by_offer_id=wire.superseded_by_offer_id,
        requote_reason=enum_from_proto(common_pb2.RequoteReason, wire.requote_reason, RequoteReason),
        requote_detail=wire.requote_detail,
        request_outcome=enum_from_proto(common_pb2.RequestOutcome, wire.request_outcome, RequestOutcome),
        granted_before=tuple(line_from_proto(li) for li in wire.granted_before),
        playbook_id=wire.playbook_id,
        locale=wire.locale,
    )


def offer_to_event(offer: Offer) -> events_pb2.OfferProposed:
    """Return the offer-proposed event of a stored offer."""
    api = offer_to_proto(offer)
    event = events_pb2.OfferProposed(
        customer_id=api.customer_id,
        case_id=api.case_id,
        offer_id=api.offer_id,
        version=api.version,
        policy_version=api.policy_version,
        line_items=api.line_items,
        total=api.total,
        needs_review=api.needs_review,
        review_reasons=api.review_reasons,
        budget_exceeded=api.budget_exceeded,
        supersedes_offer_id=api.supersedes_offer_id,
        requote_reason=api.requote_reason,
        requote_detail=api.requote_detail,
        request_outcome=api.request_outcome,
        granted_before=[line_to_proto(line) for line in offer.granted_before],
        granted_before_total=money_to_proto(offer.granted_before_total),
        playbook_id=api.playbook_id,
        locale=api.locale,
    )
    event.proposed_at.CopyFrom(api.proposed_at)
    return event
