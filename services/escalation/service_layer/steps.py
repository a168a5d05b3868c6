"""Escalation's shared steps: what every handler does the same way (lock, save with its audit row, clocks,
usage, authorisation), so no concern writes a case or grants money differently from another.

Run inside the caller's transaction (the unit of work): a handler locks the case row, decides with the pure
domain (transition table, limits, clocks), writes through the repository, appends the audit entry and
stages its events in the outbox, so all of it commits together or not at all.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg
from recovery.events.v1 import common_pb2

from services.common import outbox
from services.common.db import lock_keys
from services.common.errors import FailedPrecondition, PreconditionViolation
from services.common.money import Money
from services.common.scheduler import utcnow
from services.common.topics import topic
from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.adapters.metrics import EscalationMetrics
from services.escalation.domain import authority, contacts, lifecycle, sla
from services.escalation.domain import commands as c
from services.escalation.domain.errors import (
    Conflict,
    NotFound,
)
from services.escalation.domain.model import (
    Actor,
    Approval,
    AuthorizationPart,
    AuthorizationTier,
    Case,
    CaseAction,
    CaseState,
    ClockState,
    Contact,
    Declaration,
    Limits,
    Offer,
    OfferLine,
    OfferStatus,
    SlaClock,
    Usage,
)
from services.escalation.domain.policy import Policy
from services.escalation.domain.rates import Rate

log = logging.getLogger(__name__)

SOURCE = "escalation"
OFFER_AUTHORIZED = topic("recovery.offer-authorized.v1").name
APPROVAL_REQUESTED = topic("recovery.approval-requested.v1").name
APPROVAL_DECIDED = topic("recovery.approval-decided.v1").name
SLA_BREACHED = topic("recovery.sla-breached.v1").name
CUSTOMER_COUNTERED = topic("recovery.customer-countered.v1").name
CASE_RESOLVED = topic("recovery.case-resolved.v1").name
CASE_REOPENED = topic("recovery.case-reopened.v1").name
CASE_PROGRESSED = topic("recovery.case-progressed.v1").name
CONTACT_RECORDED = topic("recovery.contact-recorded.v1").name
OFFER_ADJUSTED = topic("recovery.offer-adjusted.v1").name
APPROVAL_DUE = "approval_due"  # the timer kind of an approval's decision deadline


@dataclass(frozen=True)
class Deps:
    """What the handlers need besides the connection: the policy in force, metrics, a clock, ids."""

    policy: Callable[[], Policy]
    metrics: EscalationMetrics
    clock: Callable[[], datetime] = utcnow
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())


async def locked_case(conn: asyncpg.Connection, case_id: str) -> repo.CaseRecord:
    record = await repo.get_case(conn, case_id, lock=True)
    if record is None:
        raise NotFound(f"case {case_id} not found")
    return record


async def stage_event(
    conn: asyncpg.Connection, topic_name: str, message, *, key: str, ce_id: str, at: datetime
) -> None:
    await outbox.stage(conn, outbox.event_record(topic_name, message, key=key, source=SOURCE, ce_id=ce_id, time=at))


async def audit(
    conn: asyncpg.Connection,
    deps: Deps,
    *,
    before: Case | None,
    after: Case,
    action: CaseAction,
    actor: Actor,
    at: datetime,
    **details,
) -> None:
    await repo.append_audit(
        conn, audit_entry(deps, before=before, after=after, action=action, actor=actor, at=at, **details)
    )


def audit_entry(
    deps: Deps, *, before: Case | None, after: Case, action: CaseAction, actor: Actor, at: datetime, **details
) -> repo.AuditEntry:
    """Return the audit row of a change of the case from ``before`` to ``after``."""
    return repo.AuditEntry(
        case_id=after.case_id,
        action=action.value,
        actor=actor,
        policy_version=deps.policy().version,
        occurred_at=at,
        from_state=before.state if before else None,
        to_state=after.state,
        **details,
    )


async def save_and_audit(
    conn: asyncpg.Connection, deps: Deps, *, before: Case | None, after: Case, at: datetime, **entry
) -> None:
    """Write the case and its audit row together: no change of a case goes unrecorded."""
    await save_case(conn, before=before, after=after, now=at)
    await audit(conn, deps, before=before, after=after, at=at, **entry)


async def save_case(
    conn: asyncpg.Connection, *, before: Case | None, after: Case, now: datetime, expected_by: datetime | None = None
) -> None:
    """Write the case, and stage the progress update its move tells the customer (if it tells one)."""
    await repo.save_case(conn, after, now=now)
    record = progress_record(before, after, now=now, expected_by=expected_by)
    if record is not None:
        await outbox.stage(conn, record)


def progress_record(
    before: Case | None, after: Case, *, now: datetime, expected_by: datetime | None = None
) -> outbox.OutgoingRecord | None:
    """Return the CaseProgressed record of the case's move from ``before`` to ``after``; None when no news."""
    stage = contacts.progress(before, after)
    if stage is None:
        return None
    event = wire.case_progressed(after, stage, at=now, expected_by=expected_by)
    ce_id = f"case-progressed:{after.case_id}:{stage.value}:{now.isoformat()}"
    return outbox.event_record(CASE_PROGRESSED, event, key=after.customer_id, source=SOURCE, ce_id=ce_id, time=now)


async def record_contact(conn: asyncpg.Connection, case: Case, contact: Contact) -> None:
    """Append the contact to the case's log and tell the customer's history (and the owner) of it."""
    await repo.insert_contact(conn, contact)
    event = wire.contact_recorded(contact, owner_employee_id=case.owner_employee_id)
    await stage_event(
        conn, CONTACT_RECORDED, event, key=case.customer_id, ce_id=f"contact-recorded:{contact.contact_id}",
        at=contact.occurred_at,
    )  # fmt: skip


async def save_clock(conn: asyncpg.Connection, case_id: str, clock: ClockState) -> None:
    """Store the clock and replace its timers with the ones it needs now."""
    await repo.save_clock(conn, case_id, clock)
    await repo.set_timers(conn, case_id, clock.clock, sla.due_timers(clock))


async def start_clock(conn, deps: Deps, case: Case, clock: SlaClock, now: datetime) -> None:
    await save_clock(conn, case.case_id, started_clock(deps, case, clock, now))


def started_clock(deps: Deps, case: Case, clock: SlaClock, now: datetime) -> ClockState:
    """Return the case's ``clock`` started at ``now`` with the budget its severity and outlook give."""
    policy = deps.policy()
    return sla.start(
        clock=clock,
        budget=policy.sla_budget(clock, case.severity, case.outlook),
        calendar=policy.calendar_for(case.team),
        share_bp=policy.warn_share_bp,
        now=now,
    )


async def each_clock(conn, case_id: str, change: Callable[[ClockState], ClockState]) -> None:
    for clock in (await repo.get_clocks(conn, case_id)).values():
        changed = change(clock)
        if changed != clock:
            await save_clock(conn, case_id, changed)


def current_offer_check(case: Case, offer_id: str) -> None:
    if offer_id != case.current_offer_id:
        why = "not the case's current offer (superseded or unknown)" if case.current_offer_id else "no offer yet"
        raise FailedPrecondition(
            f"offer {offer_id}: {why}",
            (PreconditionViolation(type="STATE", subject=f"offer/{offer_id}", description=why),),
        )


async def load_offer(conn, offer_id: str) -> repo.OfferRecord:
    record = await repo.get_offer(conn, offer_id, lines_of=wire.offer_lines)
    if record is None:
        raise NotFound(f"offer {offer_id} not found")
    return record


def periods(deps: Deps, now: datetime):
    return authority.periods(now, deps.policy().calendar.timezone)


async def lock_usage(conn, deps: Deps, employee_id: str, now: datetime) -> Usage:
    """Return the authority's period usage in the policy's base currency, locked until the transaction ends."""
    day, month = periods(deps, now)
    return await repo.lock_usage(conn, employee_id=employee_id, day=day, month=month, currency=deps.policy().currency)


async def book_usage(conn, deps: Deps, employee_id: str, amount: Money, now: datetime) -> None:
    """Add ``amount`` (in any configured currency) to the authority's base-currency usage, rounded up."""
    day, month = periods(deps, now)
    await repo.book_usage(conn, employee_id=employee_id, day=day, month=month, amount=to_base(deps, amount))


def rate(deps: Deps, currency: str) -> Rate:
    """Return the rate amounts in ``currency`` are checked and booked with; raises FailedPrecondition when the
    policy has none (nobody may authorise such an amount until one is configured)."""
    policy = deps.policy()
    found = policy.rate_for(currency)
    if found is None:
        why = f"no exchange rate from {currency} to {policy.currency} in empowerment policy {policy.version}"
        raise FailedPrecondition(why, (PreconditionViolation("CURRENCY", f"currency/{currency}", why),))
    return found


def to_base(deps: Deps, amount: Money) -> Money:
    return rate(deps, amount.currency).money_to_base(amount)


async def require_capacity(conn, deps: Deps, employee_id: str) -> None:
    capacity = deps.policy().capacity_for(employee_id)
    load = await repo.open_case_count(conn, employee_id)
    if load >= capacity:
        why = f"{employee_id} already owns {load} open cases (capacity {capacity}): rebalance first"
        raise FailedPrecondition(why, (PreconditionViolation("CAPACITY", f"employee/{employee_id}", why),))


def authorization_id_for(offer_id: str, part: AuthorizationPart) -> str:
    """Return the id of one part's authorisation (deterministic: a replay can never authorise a part twice)."""
    return offer_id if part is AuthorizationPart.WHOLE else f"{offer_id}/{part.value}"


def authorization(
    deps: Deps,
    *,
    case: Case,
    offer: Offer,
    message: bytes,
    by: Actor,
    tier: AuthorizationTier,
    authority_employee_id: str,
    limits: common_pb2.AuthorityLimits,
    amount: Money,
    lines: tuple[OfferLine, ...],
    approval_id: str,
    part: AuthorizationPart,
    now: datetime,
) -> tuple[repo.Grant, outbox.OutgoingRecord]:
    """Return one authorisation as stored and its OfferAuthorized record, at the policy's rate for the currency."""
    used = rate(deps, amount.currency)
    authorization_id = authorization_id_for(offer.offer_id, part)
    event = wire.offer_authorized(
        case,
        offer,
        message=message,
        by=by,
        tier=tier,
        amount=amount,
        lines=lines,
        limits=limits,
        policy_version=deps.policy().version,
        approval_id=approval_id,
        at=now,
        authorization_id=authorization_id,
        part=part,
        rate=used,
    )
    grant = repo.Grant(
        authorization_id=authorization_id,
        offer_id=offer.offer_id,
        case_id=case.case_id,
        part=part.value,
        tier=tier.value,
        actor=by,
        authority_employee_id=authority_employee_id,
        amount=amount,
        base_minor=used.to_base(amount.amount_minor),
        rate=used.text,
        rates_version=used.version,
        approval_id=approval_id,
        at=now,
        event=event.SerializeToString(),
    )
    record = outbox.event_record(
        OFFER_AUTHORIZED,
        event,
        key=case.customer_id,
        source=SOURCE,
        ce_id=f"offer-authorized:{authorization_id}",
        time=now,
    )
    return grant, record


async def record_authorization(
    conn,
    deps: Deps,
    *,
    case: Case,
    offer_record: repo.OfferRecord,
    by: Actor,
    tier: AuthorizationTier,
    authority_employee_id: str,
    limits: common_pb2.AuthorityLimits,
    amount: Money,
    lines: tuple[OfferLine, ...],
    approval_id: str,
    now: datetime,
    part: AuthorizationPart = AuthorizationPart.WHOLE,
) -> None:
    """Record one authorisation of the offer (whole, or a part) and stage OfferAuthorized; raises Conflict when
    that part is already authorised. The offer counts as authorised once nothing of it waits any more."""
    grant, record = authorization(
        deps,
        case=case,
        offer=offer_record.offer,
        message=offer_record.message,
        by=by,
        tier=tier,
        authority_employee_id=authority_employee_id,
        limits=limits,
        amount=amount,
        lines=lines,
        approval_id=approval_id,
        part=part,
        now=now,
    )
    if not await repo.insert_authorizations(conn, [grant]):
        raise Conflict(f"offer {offer_record.offer.offer_id} is already authorised ({part.value})")
    if part is not AuthorizationPart.OWNER_SHARE:
        await repo.set_offer_status(conn, offer_record.offer.offer_id, OfferStatus.AUTHORIZED)
    await outbox.stage(conn, record)
    deps.metrics.authorizations.labels(tier=tier.value).inc()


async def serialise_arrival(conn: asyncpg.Connection, case_id: str) -> None:
    """Order a case's opening and its early events: without this, an offer read while the opening is still
    uncommitted is parked after the opening took the parked events, and is never applied."""
    await serialise_arrivals(conn, [case_id])


async def serialise_arrivals(conn: asyncpg.Connection, case_ids: Iterable[str]) -> None:
    """``serialise_arrival`` for a set of cases in one statement, in one global order (no deadlock between sets)."""
    await lock_keys(conn, "case-arrival", case_ids)


async def authorize_whole_offer(
    conn,
    deps: Deps,
    *,
    case: Case,
    offer_record: repo.OfferRecord,
    by: Actor,
    tier: AuthorizationTier,
    limits: common_pb2.AuthorityLimits,
    reason: str,
    now: datetime,
    authority_employee_id: str | None = None,
) -> Case:
    """Authorise the whole offer by one authority (the owner's, the system's, or a declaration's), save and audit;
    returns the case. The authority is ``by``'s own unless another employee's limits are used."""
    transition = lifecycle.apply(case, c.AuthorizeOffer(by=by), now)
    offer = offer_record.offer
    await record_authorization(
        conn,
        deps,
        case=case,
        offer_record=offer_record,
        by=by,
        tier=tier,
        authority_employee_id=by.employee_id if authority_employee_id is None else authority_employee_id,
        limits=limits,
        amount=offer.total,
        lines=offer.lines,
        approval_id="",
        now=now,
    )
    await save_and_audit(
        conn,
        deps,
        before=case,
        after=transition.case,
        action=CaseAction.OFFER_AUTHORIZED,
        actor=by,
        at=now,
        amount=offer.total,
        offer_id=offer.offer_id,
        limits=wire.limits_json(limits),
        rate=wire.rate_json(rate(deps, offer.total.currency)),
        reason=reason,
    )
    return transition.case


SYSTEM_REASON = "automatic recovery: system-detected failure within the automation limit"


def playbook_reason(declaration: Declaration, offer: Offer) -> str:
    """The audit reason of a pre-approved playbook offer: the declaration, the playbook and its version, whose
    authority."""
    d = declaration
    return (
        f"pre-approved by the declaration of incident {d.incident_id}: playbook {offer.playbook_id} of compensation "
        f"policy {offer.policy_version or '(unknown)'}, declared by {d.declared_by} ({d.declared_by_role}) at "
        f"{d.declared_at:%Y-%m-%d %H:%M} UTC under empowerment policy {d.limits_policy_version}: {d.reason}"
    )


def playbook_limits_proto(deps: Deps, declaration: Declaration, limits: Limits) -> common_pb2.AuthorityLimits:
    """The declarer's limits a playbook authorisation used, as recorded on it."""
    return wire.limits_to_proto(
        limits, employee_id=declaration.declared_by, usage=Usage(), policy_version=deps.policy().version
    )


async def playbook_authorize(
    conn, deps: Deps, *, case: Case, offer: Offer, declaration: Declaration, limits: Limits, now: datetime
) -> Case:
    """Authorise the whole playbook offer under the declaration (the system applies the declarer's
    pre-approval) and count it against the incident's room; returns the case."""
    authorised = await authorize_whole_offer(
        conn,
        deps,
        case=case,
        offer_record=await load_offer(conn, offer.offer_id),
        by=Actor.system(),
        tier=AuthorizationTier.PLAYBOOK,
        limits=playbook_limits_proto(deps, declaration, limits),
        reason=playbook_reason(declaration, offer),
        now=now,
        authority_employee_id=declaration.declared_by,
    )
    spent = rate(deps, offer.total.currency).to_base(offer.total.amount_minor)
    await repo.add_declared_spend(conn, {declaration.incident_id: spent})
    return authorised


def system_limits(deps: Deps) -> common_pb2.AuthorityLimits:
    """The limits the system authorises under, as recorded on its authorisations."""
    policy = deps.policy()
    return wire.limits_to_proto(
        authority.system_limits(policy), employee_id="", usage=Usage(), policy_version=policy.version
    )


async def system_authorize(conn, deps: Deps, *, case: Case, offer_id: str, now: datetime) -> None:
    limits = system_limits(deps)
    await authorize_whole_offer(
        conn,
        deps,
        case=case,
        offer_record=await load_offer(conn, offer_id),
        by=Actor.system(),
        tier=AuthorizationTier.SYSTEM,
        limits=limits,
        reason=SYSTEM_REASON,
        now=now,
    )


async def grant_as_owner(
    conn,
    deps: Deps,
    *,
    case: Case,
    offer_record: repo.OfferRecord,
    owner: Actor,
    limits: Limits,
    usage: Usage,
    reason: str,
    now: datetime,
) -> Case:
    """Book the offer against the owner's period usage (locked by the caller, who checked that ``limits`` cover
    it) and authorise it by the owner's authority."""
    await book_usage(conn, deps, owner.employee_id, offer_record.offer.total, now)
    limits_proto = wire.limits_to_proto(
        limits, employee_id=owner.employee_id, usage=usage, policy_version=deps.policy().version
    )
    return await authorize_whole_offer(
        conn,
        deps,
        case=case,
        offer_record=offer_record,
        by=owner,
        tier=AuthorizationTier.OWNER,
        limits=limits_proto,
        reason=reason,
        now=now,
    )


@dataclass(frozen=True)
class Review:
    """A queued case's flagged offer sent up by the system: the request, the case holding it, and what to write."""

    approval: Approval
    case: Case
    record: outbox.OutgoingRecord
    audit: repo.AuditEntry


def review(deps: Deps, *, case: Case, offer: Offer, message: bytes, now: datetime) -> Review:
    """Return the system's approval request for ``case`` (queued, with ``offer`` current) and everything it
    writes; nothing is written here, so a batch writes a set of them in a few statements (``save_reviews``)."""
    policy, system = deps.policy(), Actor.system()
    approval = authority.review_request(policy, case=case, offer=offer, approval_id=deps.new_id(), now=now)
    after = replace(
        lifecycle.apply(case, c.RequestApproval(by=system), now).case, pending_approval_id=approval.approval_id
    )
    used = rate(deps, offer.total.currency)
    record = outbox.event_record(
        APPROVAL_REQUESTED,
        wire.approval_requested(approval, message=message, rate=used),
        key=case.customer_id,
        source=SOURCE,
        ce_id=f"approval-requested:{approval.approval_id}:0",
        time=now,
    )
    entry = audit_entry(
        deps,
        before=case,
        after=after,
        action=CaseAction.APPROVAL_REQUESTED,
        actor=system,
        at=now,
        amount=approval.amount,
        offer_id=offer.offer_id,
        approval_id=approval.approval_id,
        reason=approval.note,
        rate=wire.rate_json(used),
        detail=f"routed to {approval.approver_role} of {approval.approver_team}: "
        f"{wire.reasons_of(approval.reasons)}; {approval.split}",
    )
    return Review(approval=approval, case=after, record=record, audit=entry)


async def save_reviews(conn, deps: Deps, reviews: Sequence[Review]) -> None:
    """Store the requests of ``reviews``, mark their offers awaiting approval and start their decision timers, in
    three statements whatever their number (their cases, events and audits are written by the caller's set)."""
    if not reviews:
        return
    approvals = [r.approval for r in reviews]
    await repo.insert_approvals(conn, approvals)
    await repo.set_offer_statuses(conn, [(a.offer_id, OfferStatus.AWAITING_APPROVAL) for a in approvals])
    await repo.replace_timers(
        conn,
        [(a.case_id, SlaClock.APPROVAL, [(APPROVAL_DUE, a.decision_due_at)], a.approval_id) for a in approvals],
    )


def count_reviews(deps: Deps, reviews: Sequence[Review]) -> Callable[[], None]:
    """Return the hook that counts ``reviews`` as approvals requested (run it once they are committed)."""
    roles = Counter(r.approval.approver_role for r in reviews)

    def count() -> None:
        for role, n in roles.items():
            deps.metrics.approvals_requested.labels(approver_role=role).inc(n)

    return count


async def owner_authorize_at_once(conn, deps: Deps, *, case: Case, now: datetime) -> Case:
    """Frontline first: a proposed offer within the owner's limits is authorised by the owner's authority at
    once, with no human step. Anything else waits in offer pending for the owner to send it up."""
    if case.state is not CaseState.OFFER_PENDING or not (case.owner_employee_id and case.owner_role):
        return case
    owner = Actor.employee(case.owner_employee_id, case.owner_role, case.team)
    policy = deps.policy()
    limits = policy.limits_for(employee_id=owner.employee_id, role=owner.role)
    offer_record = await load_offer(conn, case.current_offer_id)
    usage = await lock_usage(conn, deps, owner.employee_id, now)
    converted, usage_there = authority.in_currency(policy, limits, usage, offer_record.offer.total.currency)
    if not authority.owner_covers(converted, offer=offer_record.offer, usage=usage_there):  # no limits: no
        log.info(
            "offer %s is beyond %s's own authority: it waits for an approval request",
            case.current_offer_id,
            owner.employee_id,
        )
        return case
    return await grant_as_owner(
        conn,
        deps,
        case=case,
        offer_record=offer_record,
        owner=owner,
        limits=limits,
        usage=usage,
        reason="within the owner's limits: authorised at once by the owner's authority",
        now=now,
    )


async def reopen(conn, deps: Deps, record: repo.CaseRecord, *, by: Actor, reason: str, followup_id: str) -> Case:
    now = deps.clock()
    before = record.case
    transition = lifecycle.apply(before, c.ReopenCase(by=by, reason=reason), now)
    after = replace(transition.case, resolved_at=None)
    await start_clock(conn, deps, after, SlaClock.RESOLVE, now)
    await save_case(conn, before=before, after=after, now=now)
    event = wire.case_reopened(after, reason=reason, by=by, followup_id=followup_id, at=now)
    await stage_event(
        conn,
        CASE_REOPENED,
        event,
        key=before.customer_id,
        ce_id=f"case-reopened:{before.case_id}:{before.resolution_count}",
        at=now,
    )
    await audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.REOPENED,
        actor=by,
        at=now,
        reason=reason,
        detail=f"followup {followup_id}" if followup_id else "",
    )
    return after
