"""Protobuf <-> escalation domain: commands from events and requests, events and resources to the wire."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg
from google.protobuf import json_format
from recovery.escalation.v1 import escalation_pb2 as pb
from recovery.events.v1 import common_pb2, events_pb2

from services.common.money import Money
from services.common.wire import (
    adjustment_from_proto,
    adjustment_to_proto,
    duration_to_proto,
    enum_from_proto,
    enum_to_proto,
    money_to_proto,
    set_optional,
    time_from_proto,
    time_to_proto,
)
from services.escalation.domain import authority, sla
from services.escalation.domain.calendar import BusinessCalendar
from services.escalation.domain.commands import AmendCase, OpenCase, ReceiveOffer, RequestReopen
from services.escalation.domain.errors import FieldViolation, InvalidCommand
from services.escalation.domain.model import (
    Actor,
    ActorKind,
    Approval,
    ApprovalDecision,
    ApprovalReason,
    ApprovalStatus,
    AuthorizationPart,
    AuthorizationTier,
    Case,
    CaseState,
    Channel,
    ClockState,
    Contact,
    ContactKind,
    ContactOutcome,
    CostKind,
    CustomerDecision,
    Declaration,
    Limits,
    Offer,
    OfferAdjustment,
    OfferLine,
    OfferStatus,
    Outlook,
    ProgressStage,
    Reach,
    RemedyKind,
    Severity,
    SlaClock,
    Usage,
)
from services.escalation.domain.rates import Rate

# ------------------------------------------------------------------------------------------------ inbound


def _severity(c: common_pb2.Classification) -> Severity | None:
    return enum_from_proto(common_pb2.Severity, c.severity.severity, Severity)


def _outlook(c: common_pb2.Classification) -> Outlook | None:
    return enum_from_proto(common_pb2.Outlook, c.outlook.outlook, Outlook)


def _require(message, *fields: str) -> None:
    missing = [FieldViolation(f, "required") for f in fields if not getattr(message, f)]
    if missing:
        raise InvalidCommand.of(*missing)


def open_from_event(m: events_pb2.CaseOpened, *, at: datetime) -> OpenCase:
    """Return the command of a CaseOpened; raises InvalidCommand when ids or the team are missing."""
    _require(m, "case_id", "customer_id", "owning_team")
    return OpenCase(
        case_id=m.case_id,
        customer_id=m.customer_id,
        owner_employee_id=m.owner_employee_id,
        owner_role=m.owner_role if m.owner_employee_id else "",
        team=m.owning_team,
        severity=_severity(m.classification),
        outlook=_outlook(m.classification),
        system_detected=m.system_detected,
        opened_at=time_from_proto(m, "opened_at") or at,
        incident_id=m.incident_id,
        reach=reach_of(m),
    )


def facts_reach(facts: bytes) -> Reach:
    """Return how the customer of the stored CaseOpened facts (amended or not) is written to."""
    return reach_of(events_pb2.CaseOpened.FromString(facts))


def reach_of(m: events_pb2.CaseOpened) -> Reach:
    """Return how the customer of a CaseOpened is written to."""
    return Reach(
        timezone=m.customer_timezone,
        channel=enum_from_proto(common_pb2.Channel, m.preferred_channel, Channel),
        locale=m.locale,
    )


def amend_from_event(m: events_pb2.CaseAmended) -> AmendCase:
    """Return the command of a CaseAmended."""
    _require(m, "case_id", "customer_id")
    return AmendCase(
        case_id=m.case_id,
        revision=m.revision,
        severity=_severity(m.classification),
        outlook=_outlook(m.classification),
        system_detected=m.system_detected,
    )


def amended_facts(facts: bytes, m: events_pb2.CaseAmended) -> bytes:
    """Return the stored CaseOpened facts with the amendment's snapshot applied."""
    opened = events_pb2.CaseOpened.FromString(facts)
    del opened.failure_ids[:]
    opened.failure_ids.extend(m.failure_ids)
    opened.category = m.category or opened.category
    opened.reference = m.reference
    opened.classification.CopyFrom(m.classification)
    opened.history.CopyFrom(m.history)
    del opened.reported_costs[:]
    opened.reported_costs.extend(m.reported_costs)
    del opened.stated_impacts[:]
    opened.stated_impacts.extend(m.stated_impacts)
    opened.ClearField("customer_request")
    set_optional(opened, "customer_request", m.customer_request if m.HasField("customer_request") else None)
    opened.area.CopyFrom(m.area)
    del opened.risk_tags[:]
    opened.risk_tags.extend(m.risk_tags)
    opened.system_detected = m.system_detected
    opened.impact_details = m.impact_details
    opened.customer_timezone = m.customer_timezone or opened.customer_timezone
    opened.preferred_channel = m.preferred_channel or opened.preferred_channel
    opened.locale = m.locale or opened.locale
    return opened.SerializeToString()


def offer_lines(message: bytes) -> tuple[OfferLine, ...]:
    """Return the lines of a stored OfferProposed."""
    return _lines(events_pb2.OfferProposed.FromString(message))


def _lines(m: events_pb2.OfferProposed) -> tuple[OfferLine, ...]:
    return tuple(
        OfferLine(
            kind=enum_from_proto(common_pb2.RemedyKind, line.kind, RemedyKind),
            amount=Money(line.amount.amount_minor, line.amount.currency or m.total.currency),
        )
        for line in m.line_items
    )


def offer_from_event(m: events_pb2.OfferProposed, *, at: datetime) -> ReceiveOffer:
    """Return the command of an OfferProposed; raises InvalidCommand naming every bad field."""
    _require(m, "case_id", "customer_id", "offer_id")
    bad = []
    if m.version < 1:
        bad.append(FieldViolation("version", "must be at least 1"))
    if not m.HasField("total") or not m.total.currency or m.total.amount_minor < 0:
        bad.append(FieldViolation("total", "required: a non-negative amount with its currency"))
    if bad:
        raise InvalidCommand.of(*bad)
    offer = Offer(
        offer_id=m.offer_id,
        version=m.version,
        total=Money(m.total.amount_minor, m.total.currency),
        lines=_lines(m),
        needs_review=m.needs_review,
        budget_exceeded=m.budget_exceeded,
        playbook_id=m.playbook_id,
        policy_version=m.policy_version,
    )
    return ReceiveOffer(
        case_id=m.case_id, customer_id=m.customer_id, offer=offer, proposed_at=time_from_proto(m, "proposed_at") or at
    )


def reopen_from_event(m: events_pb2.CaseReopenRequested) -> RequestReopen:
    """Return the command of a CaseReopenRequested."""
    _require(m, "case_id", "customer_id")
    reason = m.reason or m.comment or "the customer was not satisfied"
    return RequestReopen(case_id=m.case_id, reason=reason, followup_id=m.followup_id)


# ----------------------------------------------------------------------------------------------- outbound


def actor_to_proto(actor: Actor | None) -> common_pb2.Actor | None:
    """Return the wire Actor."""
    if actor is None:
        return None
    return common_pb2.Actor(
        kind=enum_to_proto(common_pb2.ActorKind, actor.kind),
        employee_id=actor.employee_id,
        role=actor.role,
        team=actor.team,
    )


def actor_from_proto(m: common_pb2.Actor) -> Actor:
    """Return the domain Actor."""
    return Actor(
        kind=enum_from_proto(common_pb2.ActorKind, m.kind, ActorKind) or ActorKind.EMPLOYEE,
        employee_id=m.employee_id,
        role=m.role,
        team=m.team,
    )


def limits_to_proto(
    limits: Limits, *, employee_id: str, usage: Usage, policy_version: str, delegated_by: str = ""
) -> common_pb2.AuthorityLimits:
    """Return the wire AuthorityLimits (what was in force for one authorisation or decision)."""
    cur = limits.currency
    return common_pb2.AuthorityLimits(
        employee_id=employee_id,
        role=limits.role,
        per_case_limit=common_pb2.Money(amount_minor=limits.per_case, currency=cur),
        per_day_limit=common_pb2.Money(amount_minor=limits.per_day, currency=cur),
        per_month_limit=common_pb2.Money(amount_minor=limits.per_month, currency=cur),
        used_today=common_pb2.Money(amount_minor=usage.today, currency=cur),
        used_this_month=common_pb2.Money(amount_minor=usage.this_month, currency=cur),
        remedy_kind_limits=[
            common_pb2.RemedyKindLimit(
                kind=enum_to_proto(common_pb2.RemedyKind, kind),
                per_case_limit=common_pb2.Money(amount_minor=cap, currency=cur),
            )
            for kind, cap in sorted(limits.remedy_caps.items(), key=lambda kv: kv[0].value)
        ],
        delegated_by_employee_id=delegated_by,
        policy_version=policy_version,
        employee_override=limits.employee_override,
    )


def limits_json(limits: common_pb2.AuthorityLimits) -> dict:
    """Return the limits as the proto3 JSON mapping (how the audit table keeps them)."""
    return json_format.MessageToDict(limits)


def lines_to_proto(message: bytes, lines: tuple[OfferLine, ...] | None = None) -> list[common_pb2.OfferLineItem]:
    """Return the stored offer's line items, with amounts replaced by ``lines`` (a part of a split offer, or lines
    an approver reduced); a line that part leaves at nothing is left out."""
    items = list(events_pb2.OfferProposed.FromString(message).line_items)
    if lines is None:
        return items
    out = []
    for item, line in zip(items, lines, strict=True):
        if item.amount.amount_minor and not line.amount.amount_minor:
            continue
        item.amount.CopyFrom(money_to_proto(line.amount))
        out.append(item)
    return out


def lines_with(offer_lines: tuple[OfferLine, ...], amounts: tuple[int, ...]) -> tuple[OfferLine, ...]:
    """Return the offer's lines with the given per-line amounts (an approval's remainder); as they are when none."""
    if not amounts:
        return offer_lines
    return tuple(
        OfferLine(kind=line.kind, amount=Money(amount, line.amount.currency))
        for line, amount in zip(offer_lines, amounts, strict=True)
    )


def rate_to_proto(rate: Rate) -> common_pb2.ExchangeRate:
    """Return the wire ExchangeRate."""
    return common_pb2.ExchangeRate(
        from_currency=rate.currency, to_currency=rate.base, rate=rate.text, rates_version=rate.version
    )


def rate_json(rate: Rate) -> dict:
    """Return the rate as the proto3 JSON mapping (how the audit table keeps it)."""
    return json_format.MessageToDict(rate_to_proto(rate))


def offer_authorized(
    case: Case,
    offer: Offer,
    *,
    message: bytes,
    by: Actor,
    tier: AuthorizationTier,
    amount: Money,
    lines: tuple[OfferLine, ...],
    limits: common_pb2.AuthorityLimits,
    policy_version: str,
    approval_id: str,
    at: datetime,
    authorization_id: str,
    part: AuthorizationPart,
    rate: Rate,
) -> events_pb2.OfferAuthorized:
    """Return the OfferAuthorized event of one authorisation (the whole offer, or one part of a split one)."""
    proposed = events_pb2.OfferProposed.FromString(message)
    return events_pb2.OfferAuthorized(
        customer_id=case.customer_id,
        case_id=case.case_id,
        offer_id=offer.offer_id,
        offer_version=offer.version,
        authorized_by=actor_to_proto(by),
        tier=enum_to_proto(common_pb2.AuthorizationTier, tier),
        amount=money_to_proto(amount),
        line_items=lines_to_proto(message, lines),
        limits=limits,
        limits_policy_version=policy_version,
        offer_policy_version=proposed.policy_version,
        approval_id=approval_id,
        team=case.team,
        authorized_at=time_to_proto(at),
        authorization_id=authorization_id,
        part=enum_to_proto(common_pb2.AuthorizationPart, part),
        rate=rate_to_proto(rate),
    )


def _request_fields(a: Approval) -> dict:
    """The request's fields, named alike in the ApprovalRequested event and the API's Approval."""
    return {
        "customer_id": a.customer_id,
        "case_id": a.case_id,
        "approval_id": a.approval_id,
        "offer_id": a.offer_id,
        "offer_version": a.offer_version,
        "requested_by": actor_to_proto(a.requested_by),
        "owner_employee_id": a.owner_employee_id,
        "approver_role": a.approver_role,
        "approver_team": a.approver_team,
        "amount": money_to_proto(a.amount),
        "reasons": [enum_to_proto(common_pb2.ApprovalReason, r) for r in a.reasons],
        "note": a.note,
        "decision_due_at": time_to_proto(a.decision_due_at),
        "escalation_level": a.escalation_level,
        "requested_at": time_to_proto(a.requested_at),
        "offer_total": money_to_proto(a.offer_total or a.amount),
        "owner_share": money_to_proto(a.owner_share or Money.zero(a.amount.currency)),
        "split": a.split,
    }


def approval_requested(a: Approval, *, message: bytes, rate: Rate | None) -> events_pb2.ApprovalRequested:
    """Return the ApprovalRequested event of ``a`` (its current level and offer); ``message`` is the offer's
    OfferProposed, whose lines the remainder is shown in."""
    event = events_pb2.ApprovalRequested(**_request_fields(a), line_items=remainder_items(a, message))
    if rate is not None:
        event.rate.CopyFrom(rate_to_proto(rate))
    return event


def remainder_items(a: Approval, message: bytes) -> list[common_pb2.OfferLineItem]:
    """Return the line items an approval asks for (the remainder of the offer after the owner's share)."""
    offer_lines = _lines(events_pb2.OfferProposed.FromString(message))
    return lines_to_proto(message, lines_with(offer_lines, a.line_minor))


def approval_decided(a: Approval, *, limits: common_pb2.AuthorityLimits | None) -> events_pb2.ApprovalDecided:
    """Return the ApprovalDecided event of a decided approval."""
    approved = a.approved_amount or Money.zero(a.amount.currency)
    m = events_pb2.ApprovalDecided(
        customer_id=a.customer_id,
        case_id=a.case_id,
        approval_id=a.approval_id,
        offer_id=a.offer_id,
        offer_version=a.offer_version,
        decision=enum_to_proto(common_pb2.ApprovalDecision, a.decision),
        approved_amount=money_to_proto(approved),
        reason=a.decision_reason,
        decided_by=actor_to_proto(a.decided_by),
        decided_at=time_to_proto(a.decided_at),
    )
    set_optional(m, "limits", limits)
    return m


def sla_breached(
    case: Case, clock: SlaClock, *, deadline_at: datetime, at: datetime, escalated_to: str, approval_id: str = ""
) -> events_pb2.SlaBreached:
    """Return the SlaBreached event."""
    return events_pb2.SlaBreached(
        customer_id=case.customer_id,
        case_id=case.case_id,
        clock=enum_to_proto(common_pb2.SlaClock, clock),
        deadline_at=time_to_proto(deadline_at),
        breached_at=time_to_proto(at),
        severity=enum_to_proto(common_pb2.Severity, case.severity),
        outlook=enum_to_proto(common_pb2.Outlook, case.outlook),
        owner_employee_id=case.owner_employee_id,
        team=case.team,
        escalated_to_role=escalated_to,
        approval_id=approval_id,
    )


def customer_countered(
    case: Case, offer: Offer, request: common_pb2.CustomerRequest, *, by: Actor, at: datetime
) -> events_pb2.CustomerCountered:
    """Return the CustomerCountered event."""
    return events_pb2.CustomerCountered(
        customer_id=case.customer_id,
        case_id=case.case_id,
        offer_id=offer.offer_id,
        offer_version=offer.version,
        request=request,
        recorded_by=actor_to_proto(by),
        countered_at=time_to_proto(at),
    )


def case_resolved(
    case: Case,
    *,
    facts: bytes,
    by: Actor,
    at: datetime,
    root_cause_area: common_pb2.Area | None,
    root_cause: str,
    summary: str,
    decision: CustomerDecision | None,
    compensation: Money | None,
) -> events_pb2.CaseResolved:
    """Return the CaseResolved event."""
    opened = events_pb2.CaseOpened.FromString(facts)
    m = events_pb2.CaseResolved(
        customer_id=case.customer_id,
        case_id=case.case_id,
        owner_employee_id=case.owner_employee_id,
        team=case.team,
        severity=enum_to_proto(common_pb2.Severity, case.severity),
        outlook=enum_to_proto(common_pb2.Outlook, case.outlook),
        category=opened.category,
        resolved_at=time_to_proto(at),
        resolved_by=actor_to_proto(by),
        customer_timezone=opened.customer_timezone,
        preferred_channel=opened.preferred_channel,
        root_cause=root_cause,
        resolution_summary=summary,
        customer_decision=enum_to_proto(common_pb2.CustomerDecision, decision),
        offer_id=case.current_offer_id,
        resolution_number=case.resolution_count,
        incident_id=case.incident_id,
        locale=opened.locale,
    )
    set_optional(m, "root_cause_area", root_cause_area)
    set_optional(m, "compensation_total", money_to_proto(compensation))
    return m


def case_reopened(case: Case, *, reason: str, by: Actor, followup_id: str, at: datetime) -> events_pb2.CaseReopened:
    """Return the CaseReopened event."""
    return events_pb2.CaseReopened(
        customer_id=case.customer_id,
        case_id=case.case_id,
        reason=reason,
        owner_employee_id=case.owner_employee_id,
        reopened_by=actor_to_proto(by),
        followup_id=followup_id,
        reopened_at=time_to_proto(at),
    )


def case_progressed(
    case: Case, stage: ProgressStage, *, at: datetime, expected_by: datetime | None
) -> events_pb2.CaseProgressed:
    """Return the CaseProgressed event: the stage, and how the customer is written to."""
    m = events_pb2.CaseProgressed(
        customer_id=case.customer_id,
        case_id=case.case_id,
        stage=enum_to_proto(common_pb2.ProgressStage, stage),
        progressed_at=time_to_proto(at),
        owner_employee_id=case.owner_employee_id,
        customer_timezone=case.reach.timezone,
        preferred_channel=enum_to_proto(common_pb2.Channel, case.reach.channel),
        locale=case.reach.locale,
    )
    set_optional(m, "expected_by", time_to_proto(expected_by))
    return m


def receipts_due(message: bytes) -> frozenset[CostKind]:
    """Return the cost kinds whose repayment in a stored OfferProposed (new or granted before) waits for a receipt."""
    proposed = events_pb2.OfferProposed.FromString(message)
    lines = [*proposed.line_items, *proposed.granted_before]
    kinds = (enum_from_proto(common_pb2.CostKind, line.cost_kind, CostKind) for line in lines if line.needs_receipt)
    return frozenset(kind or CostKind.OTHER for kind in kinds)


def granted_before(message: bytes) -> bool:
    """True when earlier authorisations of the case granted something (a stored OfferProposed's granted_before)."""
    return any(line.amount.amount_minor > 0 for line in events_pb2.OfferProposed.FromString(message).granted_before)


def offer_adjusted(
    case: Case,
    offer: Offer,
    adjustment: OfferAdjustment,
    *,
    adjustment_id: str,
    reason: str,
    by: Actor,
    at: datetime,
) -> events_pb2.OfferAdjusted:
    """Return the OfferAdjusted event (each gesture signed by the employee who added it)."""
    signed = replace(adjustment, gestures=tuple(replace(g, employee_id=by.employee_id) for g in adjustment.gestures))
    return events_pb2.OfferAdjusted(
        customer_id=case.customer_id,
        case_id=case.case_id,
        offer_id=offer.offer_id,
        offer_version=offer.version,
        adjustment_id=adjustment_id,
        adjustment=adjustment_to_proto(signed),
        reason=reason,
        adjusted_by=actor_to_proto(by),
        adjusted_at=time_to_proto(at),
    )


def adjustment_from_request(request: pb.AdjustOfferRequest) -> OfferAdjustment:
    return adjustment_from_proto(request.adjustment)


def contact_to_proto(contact: Contact) -> common_pb2.Contact:
    """Return one contact-log entry."""
    return common_pb2.Contact(
        contact_id=contact.contact_id,
        case_id=contact.case_id,
        customer_id=contact.customer_id,
        kind=enum_to_proto(common_pb2.ContactKind, contact.kind),
        channel=enum_to_proto(common_pb2.Channel, contact.channel),
        outcome=enum_to_proto(common_pb2.ContactOutcome, contact.outcome),
        note=contact.note,
        employee_id=contact.employee_id,
        occurred_at=time_to_proto(contact.occurred_at),
    )


def contact_recorded(contact: Contact, *, owner_employee_id: str) -> events_pb2.ContactRecorded:
    """Return the ContactRecorded event."""
    return events_pb2.ContactRecorded(
        customer_id=contact.customer_id, contact=contact_to_proto(contact), owner_employee_id=owner_employee_id
    )


def contact_kind_from_proto(number: int) -> ContactKind | None:
    return enum_from_proto(common_pb2.ContactKind, number, ContactKind)


def channel_from_proto(number: int) -> Channel | None:
    return enum_from_proto(common_pb2.Channel, number, Channel)


def contact_outcome_from_proto(number: int) -> ContactOutcome | None:
    return enum_from_proto(common_pb2.ContactOutcome, number, ContactOutcome)


# ---------------------------------------------------------------------------------------------- resources


def approval_to_proto(a: Approval, *, message: bytes | None = None) -> pb.Approval:
    """Return the API's Approval; with its offer's OfferProposed ``message``, the remainder's line items too."""
    m = pb.Approval(
        **_request_fields(a),
        line_items=remainder_items(a, message) if message is not None else [],
        status=enum_to_proto(pb.ApprovalStatus, a.status),
        decision=enum_to_proto(common_pb2.ApprovalDecision, a.decision),
        decision_reason=a.decision_reason,
    )
    set_optional(m, "approved_amount", money_to_proto(a.approved_amount))
    set_optional(m, "decided_by", actor_to_proto(a.decided_by))
    set_optional(m, "decided_at", time_to_proto(a.decided_at))
    return m


def _clock_to_proto(c: ClockState | None, calendar: BusinessCalendar, now: datetime) -> pb.SlaClockState | None:
    if c is None:
        return None
    m = pb.SlaClockState(
        clock=enum_to_proto(common_pb2.SlaClock, c.clock),
        status=enum_to_proto(pb.SlaStatus, c.status),
        deadline_at=time_to_proto(c.deadline_at),
        warn_at=time_to_proto(c.warn_at),
        paused=duration_to_proto(c.paused),
        remaining=duration_to_proto(sla.remaining(c, calendar, now)),
    )
    set_optional(m, "stopped_at", time_to_proto(c.stopped_at))
    return m


def _history_entry(row: asyncpg.Record) -> pb.DecisionEntry:
    m = pb.DecisionEntry(
        entry_id=str(row["entry_id"]),
        action=pb.CaseAction.Value(f"CASE_ACTION_{row['action'].upper()}"),
        actor=common_pb2.Actor(
            kind=common_pb2.ActorKind.Value(f"ACTOR_KIND_{row['actor_kind'].upper()}"),
            employee_id=row["actor_employee_id"],
            role=row["actor_role"],
            team=row["actor_team"],
        ),
        policy_version=row["policy_version"],
        reason=row["reason"],
        detail=row["detail"],
        offer_id=row["offer_id"],
        approval_id=row["approval_id"],
        from_state=_state(row["from_state"]),
        to_state=_state(row["to_state"]),
        occurred_at=time_to_proto(row["occurred_at"]),
    )
    if row["amount_minor"] is not None:
        m.amount.CopyFrom(common_pb2.Money(amount_minor=row["amount_minor"], currency=row["currency"]))
    if row["limits"]:
        json_format.ParseDict(json.loads(row["limits"]), m.limits)
    return m


def _state(value: str | None) -> int:
    return enum_to_proto(pb.CaseState, CaseState(value)) if value else 0


_OFFER_STATUS = {s: enum_to_proto(pb.OfferStatus, s) for s in OfferStatus}


def case_to_proto(
    case: Case,
    *,
    facts: bytes,
    updated_at: datetime,
    offer=None,
    clocks: dict | None = None,
    history: Sequence[asyncpg.Record] = (),
    pending: Approval | None = None,
    calendar: BusinessCalendar,
    now: datetime,
) -> pb.Case:
    """Return the API's Case: decision facts, display facts, current offer, SLA state and history."""
    opened = events_pb2.CaseOpened.FromString(facts)
    m = pb.Case(
        case_id=case.case_id,
        customer_id=case.customer_id,
        state=enum_to_proto(pb.CaseState, case.state),
        owner_employee_id=case.owner_employee_id,
        team=case.team,
        category=opened.category,
        classification=opened.classification,
        reference=opened.reference,
        description=opened.description,
        failure_ids=list(opened.failure_ids),
        system_detected=case.system_detected,
        reported_costs=list(opened.reported_costs),
        area=opened.area,
        risk_tags=list(opened.risk_tags),
        history=opened.history,
        pending_approval_id=case.pending_approval_id,
        incident_id=opened.incident_id,
        decision_history=[_history_entry(r) for r in history],
        transfer_count=case.transfer_count,
        transfer_limit_exceeded=case.transfer_limit_exceeded,
        customer_timezone=opened.customer_timezone,
        preferred_channel=opened.preferred_channel,
        updated_at=time_to_proto(updated_at),
        revision=case.revision,
        sla_breach_count=case.sla_breach_count,
        attention_role=case.attention_role,
    )
    set_optional(m, "customer_request", opened.customer_request if opened.HasField("customer_request") else None)
    set_optional(m, "opened_at", time_to_proto(case.opened_at))
    set_optional(m, "acknowledged_at", time_to_proto(case.acknowledged_at))
    set_optional(m, "resolved_at", time_to_proto(case.resolved_at))
    clocks = clocks or {}
    m.sla.CopyFrom(
        pb.SlaState(
            acknowledge=_clock_to_proto(clocks.get(SlaClock.ACKNOWLEDGE), calendar, now),
            resolve=_clock_to_proto(clocks.get(SlaClock.RESOLVE), calendar, now),
        )
    )
    if offer is not None:
        m.current_offer.CopyFrom(_offer_to_proto(offer))
        set_optional(m.current_offer, "awaiting_approval", awaiting_approval(pending))
    return m


def _offer_to_proto(rec) -> pb.CaseOffer:
    proposed = events_pb2.OfferProposed.FromString(rec.message)
    m = pb.CaseOffer(
        offer_id=rec.offer.offer_id,
        version=rec.offer.version,
        policy_version=proposed.policy_version,
        line_items=list(proposed.line_items),
        total=proposed.total,
        needs_review=rec.offer.needs_review,
        budget_exceeded=rec.offer.budget_exceeded,
        request_outcome=proposed.request_outcome,
        status=_OFFER_STATUS[rec.offer.status],
        customer_decision=enum_to_proto(common_pb2.CustomerDecision, rec.customer_decision),
        proposed_at=time_to_proto(rec.proposed_at),
    )
    m.granted_before.extend(proposed.granted_before)
    if proposed.HasField("granted_before_total"):
        m.granted_before_total.CopyFrom(proposed.granted_before_total)
    grants = [_authorization_to_proto(row) for row in rec.authorizations]
    m.authorizations.extend(grants)
    if grants:
        # The summary fields: who first let (part of) it through, how much in all, when last.
        m.authorized_by.CopyFrom(grants[0].authorized_by)
        m.tier = grants[0].tier
        m.authorized_amount.CopyFrom(
            money_to_proto(Money(sum(g.amount.amount_minor for g in grants), rec.offer.total.currency))
        )
        m.authorized_at.CopyFrom(grants[-1].authorized_at)
    return m


def _authorization_to_proto(row: asyncpg.Record) -> pb.OfferAuthorization:
    event = events_pb2.OfferAuthorized.FromString(bytes(row["event"])) if row["event"] else None
    m = pb.OfferAuthorization(
        authorization_id=row["authorization_id"],
        part=enum_to_proto(common_pb2.AuthorizationPart, AuthorizationPart(row["part"])),
        authorized_by=actor_to_proto(
            Actor(ActorKind(row["actor_kind"]), row["actor_employee_id"], row["actor_role"], row["actor_team"])
        ),
        tier=enum_to_proto(common_pb2.AuthorizationTier, AuthorizationTier(row["tier"])),
        amount=common_pb2.Money(amount_minor=row["amount_minor"], currency=row["currency"]),
        approval_id=row["approval_id"],
        authorized_at=time_to_proto(row["authorized_at"]),
    )
    if event is not None:  # rows from before the split kept no event: their lines are the offer's
        m.line_items.extend(event.line_items)
        m.rate.CopyFrom(event.rate)
    return m


def authority_to_proto(room: authority.Room, rate: Rate, *, employee_id: str, policy_version: str):
    """Return the GetMyAuthority response of the caller's remaining room."""
    limits, cur = room.limits, room.limits.currency
    m = pb.GetMyAuthorityResponse(
        employee_id=employee_id,
        role=limits.role,
        per_case=common_pb2.Money(amount_minor=limits.per_case, currency=cur),
        remaining_today=common_pb2.Money(amount_minor=room.today, currency=cur),
        remaining_this_month=common_pb2.Money(amount_minor=room.this_month, currency=cur),
        remedy_kind_limits=[
            common_pb2.RemedyKindLimit(
                kind=enum_to_proto(common_pb2.RemedyKind, kind),
                per_case_limit=common_pb2.Money(amount_minor=cap, currency=cur),
            )
            for kind, cap in sorted(limits.remedy_caps.items(), key=lambda kv: kv[0].value)
        ],
        rate=rate_to_proto(rate),
        policy_version=policy_version,
    )
    if room.for_offer is not None:
        m.remaining_for_case.CopyFrom(common_pb2.Money(amount_minor=room.for_offer, currency=cur))
    return m


def _declaration_fields(d: Declaration, limits: Limits) -> dict:
    """The fields IncidentDeclaration and IncidentDeclared share: the declaration, with the per-case limit it
    pre-approves (the declarer's, base currency)."""
    return {
        "incident_id": d.incident_id,
        "playbook_id": d.playbook_id,
        "declared_by": d.declared_by,
        "declared_by_role": d.declared_by_role,
        "reason": d.reason,
        "per_case_limit": common_pb2.Money(amount_minor=limits.per_case, currency=limits.currency),
        "limits_policy_version": d.limits_policy_version,
        "declared_at": time_to_proto(d.declared_at),
    }


def declaration_to_proto(d: Declaration, *, limits: Limits) -> pb.IncidentDeclaration:
    """Return the wire declaration (GetIncident, DeclareIncident)."""
    return pb.IncidentDeclaration(**_declaration_fields(d, limits))


def incident_declared(d: Declaration, *, limits: Limits) -> events_pb2.IncidentDeclared:
    """Return the IncidentDeclared event of a declaration."""
    return events_pb2.IncidentDeclared(customer_id=incident_key(d.incident_id), **_declaration_fields(d, limits))


def incident_to_proto(
    incident_id: str, summary, declaration: pb.IncidentDeclaration | None = None
) -> pb.GetIncidentResponse:
    """Return the GetIncident response of an incident's summary (and its declaration, once declared)."""
    return pb.GetIncidentResponse(
        declaration=declaration,
        playbook_authorized=summary.playbook_authorized,
        incident_id=incident_id,
        cases=summary.cases,
        customers=summary.customers,
        by_state=[
            pb.StateCount(state=enum_to_proto(pb.CaseState, CaseState(state)), cases=n)
            for state, n in sorted(summary.by_state.items())
        ],
        offers_authorized=summary.offers_authorized,
        awaiting_approval=summary.awaiting_approval,
        without_offer=summary.without_offer,
        authorized_total=_totals_to_proto(summary.authorized_total),
    )


def _totals_to_proto(totals: dict[str, int]) -> list[common_pb2.Money]:
    """Return amounts per currency (minor units) as Money, in currency order."""
    return [common_pb2.Money(amount_minor=total, currency=currency) for currency, total in sorted(totals.items())]


def incident_key(incident_id: str) -> str:
    """Return the record key (and customer_id) of an incident's updates."""
    return f"incident:{incident_id}"


def incident_updated(incident_id: str, *, revision: int, summary, at: datetime) -> events_pb2.IncidentUpdated:
    """Return the IncidentUpdated event of an incident's summary at its cases' ``revision``."""
    return events_pb2.IncidentUpdated(
        customer_id=incident_key(incident_id),
        incident_id=incident_id,
        revision=revision,
        cases=summary.cases,
        customers=summary.customers,
        offers_authorized=summary.offers_authorized,
        awaiting_approval=summary.awaiting_approval,
        without_offer=summary.without_offer,
        resolved=summary.by_state.get(CaseState.RESOLVED.value, 0),
        authorized_total=_totals_to_proto(summary.authorized_total),
        updated_at=time_to_proto(at),
    )


def awaiting_approval(approval: Approval | None) -> common_pb2.Money | None:
    """Return what a pending approval still waits for, for the case view."""
    if approval is None or approval.status is not ApprovalStatus.PENDING:
        return None
    return money_to_proto(approval.amount)


# ------------------------------------------------------------------------------------------------ requests


def decision_from_proto(number: int) -> ApprovalDecision | None:
    """Return the approval decision of a request (None when unspecified)."""
    return enum_from_proto(common_pb2.ApprovalDecision, number, ApprovalDecision)


def customer_decision_from_proto(number: int) -> CustomerDecision | None:
    """Return the customer decision of a request (None when unspecified)."""
    return enum_from_proto(common_pb2.CustomerDecision, number, CustomerDecision)


def states_from_proto(numbers) -> tuple[CaseState, ...]:
    """Return the case states of a list filter."""
    out = []
    for n in numbers:
        state = enum_from_proto(pb.CaseState, n, CaseState)
        if state is not None:
            out.append(state)
    return tuple(out)


def reasons_of(reasons: Sequence[ApprovalReason]) -> str:
    """Return the reasons as words for the audit trail."""
    return ", ".join(r.value for r in reasons)


def delegation_to_proto(d, *, reason: str, created_at: datetime) -> pb.Delegation:
    """Return the API's Delegation."""
    return pb.Delegation(
        delegation_id=d.delegation_id,
        delegator_employee_id=d.delegator_employee_id,
        delegate_employee_id=d.delegate_employee_id,
        role=d.role,
        starts_at=time_to_proto(d.starts_at),
        ends_at=time_to_proto(d.ends_at),
        reason=reason,
        created_at=time_to_proto(created_at),
    )


def reporter_to_proto(reporter) -> pb.CaseReporter:
    """Return a colleague who reported the case too."""
    return pb.CaseReporter(
        employee_id=reporter.employee_id,
        failure_id=reporter.failure_id,
        reported_at=time_to_proto(reporter.reported_at),
    )
