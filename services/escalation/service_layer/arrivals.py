"""Escalation's handlers for what arrives from Kafka: cases opened and amended, offers proposed, reopen requests.

Decisions the issue left open (see the report): an offer within the owner's limits is authorised at once by
the owner's authority; the ``system`` actor authorises at once system-detected failures within the policy's
automation limit; a queued case's flagged offer goes to a reviewer as it arrives (nobody owns the case yet,
and a reviewer must look whoever claims it); anything else waits in offer pending for the owner to send it up.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import asyncpg
from recovery.events.v1 import events_pb2

from services.common import outbox
from services.common.money import Money
from services.common.unit_of_work import UnitOfWork
from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.domain import authority, contacts, lifecycle, sla
from services.escalation.domain import commands as c
from services.escalation.domain.errors import Conflict, FieldViolation, InvalidCommand, NotFound
from services.escalation.domain.model import (
    Actor,
    AuthorizationPart,
    AuthorizationTier,
    Case,
    CaseAction,
    CaseState,
    Declaration,
    Limits,
    OfferStatus,
    SlaClock,
    Usage,
)
from services.escalation.service_layer import approvals, steps

log = logging.getLogger(__name__)

OPENING_CLOCKS = (SlaClock.ACKNOWLEDGE, SlaClock.RESOLVE)


def _new_case(command: c.OpenCase) -> Case:
    return Case(
        case_id=command.case_id,
        customer_id=command.customer_id,
        state=CaseState.OPEN if command.owner_employee_id else CaseState.QUEUED,
        owner_employee_id=command.owner_employee_id,
        team=command.team,
        severity=command.severity,
        outlook=command.outlook,
        system_detected=command.system_detected,
        owner_role=command.owner_role,
        opened_at=command.opened_at,
        incident_id=command.incident_id,
        reach=command.reach,
    )


def _opened_detail(case: Case) -> str:
    return f"owner {case.owner_employee_id or '(queued)'}, team {case.team}"


async def open_cases(uow: UnitOfWork, batch: Sequence[tuple[c.OpenCase, bytes]], *, deps: steps.Deps) -> None:
    """``open_case`` for a set of cases (each with its CaseOpened bytes), in order, in a fixed number of round
    trips: lock their arrivals, insert the new ones, start their clocks and timers, audit, take parked events.

    Events parked for a case before it arrived (rare: an offer overtaking its case) are applied one by one after.
    """
    if not batch:
        return
    conn, now = uow.conn, deps.clock()
    await steps.serialise_arrivals(conn, (command.case_id for command, _ in batch))
    cases: dict[str, tuple[Case, bytes]] = {}
    for command, facts in batch:
        cases.setdefault(command.case_id, (_new_case(command), facts))  # opened twice in one batch: once
    inserted = await repo.insert_cases(conn, list(cases.values()), now=now)
    new = [case for case, _ in cases.values() if case.case_id in inserted]
    # Counted from when intake opened the case, not from when this consumer got to it.
    clocks = [
        (case.case_id, steps.started_clock(deps, case, k, case.opened_at)) for case in new for k in OPENING_CLOCKS
    ]
    await repo.save_clocks(conn, clocks)
    await repo.replace_timers(conn, [(case_id, k.clock, sla.due_timers(k), "") for case_id, k in clocks])
    await repo.append_audits(
        conn,
        [
            steps.audit_entry(
                deps,
                before=None,
                after=case,
                action=CaseAction.OPENED,
                actor=Actor.system(),
                at=now,
                detail=_opened_detail(case),
            )
            for case in new
        ],
    )
    parked = await repo.take_parked_events_of(conn, (case.case_id for case in new))
    for case in new:
        for kind, payload in parked.get(case.case_id, ()):
            await _apply_parked(conn, kind, payload, deps=deps, now=now)


async def _apply_parked(conn: asyncpg.Connection, kind: str, payload: bytes, *, deps: steps.Deps, now) -> None:
    if kind == "offer":
        message = events_pb2.OfferProposed.FromString(payload)
        await receive_offer(conn, wire.offer_from_event(message, at=now), message=payload, deps=deps)
    else:
        amended = events_pb2.CaseAmended.FromString(payload)
        await amend_case(conn, wire.amend_from_event(amended), message=amended, deps=deps)


async def amend_case(
    conn: asyncpg.Connection, command: c.AmendCase, *, message: events_pb2.CaseAmended, deps: steps.Deps
) -> None:
    """Apply intake's amendment: new facts and classification; running SLA clocks get the new budget."""
    now = deps.clock()
    await steps.serialise_arrival(conn, command.case_id)
    record = await repo.get_case(conn, command.case_id, lock=True)
    if record is None:
        await repo.park_event(conn, command.case_id, "amendment", message.SerializeToString(), now)
        return
    if command.revision <= record.facts_revision:
        return  # stale or repeated amendment: the snapshot we hold is as new
    before = record.case
    after = replace(before, severity=command.severity, outlook=command.outlook, system_detected=command.system_detected)
    facts = wire.amended_facts(record.facts, message)
    reach = wire.facts_reach(facts)
    await repo.save_facts(conn, before.case_id, facts=facts, revision=command.revision, reach=reach)
    policy = deps.policy()
    calendar = policy.calendar_for(after.team)
    for clock in (await repo.get_clocks(conn, before.case_id)).values():
        if clock.status not in sla.RUNNING:
            continue
        budget = policy.sla_budget(clock.clock, after.severity, after.outlook)
        # Business time paused so far is added back, so the clock keeps its pauses with the new budget.
        moved = replace(
            clock,
            budget=budget,
            deadline_at=calendar.add(clock.started_at, budget + clock.paused),
            warn_at=calendar.add(clock.started_at, sla.warn_span(budget, policy.warn_share_bp) + clock.paused),
        )
        await steps.save_clock(conn, before.case_id, moved)
    detail = f"revision {command.revision}: failure {message.merged_failure_id} merged"
    colleague = message.merged_failure.reported_by_employee_id
    if colleague and colleague != before.owner_employee_id:
        # The reporter is in the loop: they may open the case, and its owner sees a colleague heard from the
        # customer (the case view lists them; watchers get the change).
        reporter = repo.Reporter(colleague, message.merged_failure_id, now)
        if await repo.add_reporter(conn, before.case_id, reporter):
            detail += f"; reported by {colleague} too, who heard from the customer"
            heard = contacts.reported(
                before, contact_id=deps.new_id(), employee_id=colleague,
                description=message.merged_failure.description, at=now,
            )  # fmt: skip
            await steps.record_contact(conn, before, heard)  # the owner is told a colleague heard from them
    await steps.save_and_audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.AMENDED,
        actor=Actor.system(),
        at=now,
        detail=detail,
    )


async def receive_offer(conn: asyncpg.Connection, command: c.ReceiveOffer, *, message: bytes, deps: steps.Deps) -> None:
    """Make the offer the case's current one when it is the highest version; the system authorises it at once
    when automatic recovery covers it."""
    now = deps.clock()
    await steps.serialise_arrival(conn, command.case_id)
    record = await repo.get_case(conn, command.case_id, lock=True)
    if record is None:
        await repo.park_event(conn, command.case_id, "offer", message, now)
        return
    offer = command.offer
    if not await repo.insert_offer(conn, command.case_id, offer, message=message, proposed_at=command.proposed_at):
        return  # this offer (or another with its version) is already known
    if await repo.highest_offer_version(conn, command.case_id) > offer.version:
        log.info(
            "offer %s v%d is older than the case's current offer; kept, not current", offer.offer_id, offer.version
        )
        return
    before = record.case
    if before.state is CaseState.RESOLVED:
        log.warning("offer %s arrived for resolved case %s; kept, not current", offer.offer_id, before.case_id)
        return
    transition = lifecycle.apply(before, c.ProposeOffer(offer_id=offer.offer_id), now)
    # What earlier offers granted stays granted (compensation's re-quote offers only what is new), so nothing
    # is given back to anyone's usage; a pending approval follows the new offer instead of being cancelled.
    after = replace(transition.case, current_offer_id=offer.offer_id)
    # A queued case's flagged offer may already be with a reviewer (sent up as it arrived).
    follows = before.state in (CaseState.AWAITING_APPROVAL, CaseState.QUEUED) and bool(before.pending_approval_id)
    if follows:
        await _follow_requote(conn, deps, case=after, message=message, offer=offer, now=now)
    elif before.state is CaseState.WAITING_ON_CUSTOMER:
        calendar = deps.policy().calendar_for(before.team)
        await steps.each_clock(conn, before.case_id, lambda k: sla.resume(k, calendar, now))
    await steps.save_and_audit(
        conn,
        deps,
        before=before,
        after=after,
        action=CaseAction.OFFER_PROPOSED,
        actor=Actor.system(),
        at=now,
        amount=offer.total,
        offer_id=offer.offer_id,
        approval_id=before.pending_approval_id if follows else "",
        detail=f"version {offer.version}" + ("; the pending approval follows it" if follows else ""),
    )
    policy = deps.policy()
    declaration = await _declaration_of(conn, after, offer)
    pre_approved = authority.playbook_limits(policy, declaration, offer)
    if follows:
        if declaration is not None and pre_approved is not None:
            # Asked before the incident was declared: the declarer's pre-approval decides it now.
            await approvals.decide_by_declaration(
                conn, deps, case=after, offer=offer, declaration=declaration, limits=pre_approved, now=now
            )
        return  # otherwise the approver decides it: nobody authorises it at once
    if declaration is not None and pre_approved is not None:
        await steps.playbook_authorize(
            conn, deps, case=after, offer=offer, declaration=declaration, limits=pre_approved, now=now
        )
    elif authority.system_may_authorise(policy, system_detected=after.system_detected, offer=offer):
        await steps.system_authorize(conn, deps, case=after, offer_id=offer.offer_id, now=now)
    elif authority.reviewed_while_queued(after, offer):
        review = steps.review(deps, case=after, offer=offer, message=message, now=now)
        await steps.save_reviews(conn, deps, [review])
        await repo.save_case(conn, review.case, now=now)
        await outbox.stage(conn, review.record)
        await repo.append_audit(conn, review.audit)
        steps.count_reviews(deps, [review])()
    else:
        await steps.owner_authorize_at_once(conn, deps, case=after, now=now)


async def _declaration_of(conn: asyncpg.Connection, case: Case, offer) -> Declaration | None:
    """The case's incident declaration, locked, when the offer is a playbook one (no statement otherwise)."""
    if not (offer.playbook_id and case.incident_id):
        return None
    return (await repo.declarations_of(conn, [case.incident_id], lock=True)).get(case.incident_id)


async def _follow_requote(conn, deps: steps.Deps, *, case: Case, message: bytes, offer, now) -> None:
    """Move the case's pending approval onto its re-quoted offer: the new offer's amount (all of it is new, the
    owner's share of the old one stands), at the tier it had or a higher one the new amount needs, with its
    deadline and escalation level kept. Published again as ApprovalRequested, and audited."""
    policy = deps.policy()
    pending = await repo.get_approval(conn, case.pending_approval_id, lock=True)
    if pending is None:
        raise NotFound(f"approval {case.pending_approval_id} of case {case.case_id} not found")
    rate = steps.rate(deps, offer.total.currency)
    routed = authority.route(policy, owner_role=policy.tiers[0], owner_limits=None, offer=offer, usage=Usage())
    moved = replace(
        pending,
        offer_id=offer.offer_id,
        offer_version=offer.version,
        amount=offer.total,
        approver_role=authority.higher_tier(policy, pending.approver_role, routed.approver_role),
        offer_total=offer.total,
        owner_share=Money.zero(offer.total.currency),
        line_minor=(),
        split=f"follows re-quote version {offer.version}: {offer.total.amount_minor} {offer.total.currency} to "
        f"approve (earlier authorisations stand)",
    )
    await repo.follow_requote(conn, moved)
    await repo.set_offer_status(conn, offer.offer_id, OfferStatus.AWAITING_APPROVAL)
    await steps.stage_event(
        conn,
        steps.APPROVAL_REQUESTED,
        wire.approval_requested(moved, message=message, rate=rate),
        key=case.customer_id,
        ce_id=f"approval-requested:{moved.approval_id}:{moved.escalation_level}:v{offer.version}",
        at=now,
    )
    await steps.audit(
        conn,
        deps,
        before=case,
        after=case,
        action=CaseAction.APPROVAL_REQUESTED,
        actor=Actor.system(),
        at=now,
        amount=moved.amount,
        offer_id=offer.offer_id,
        approval_id=moved.approval_id,
        rate=wire.rate_json(rate),
        detail=f"routed to {moved.approver_role} of {moved.approver_team}: {moved.split}",
    )


async def receive_offers(uow: UnitOfWork, batch: Sequence[tuple[c.ReceiveOffer, bytes]], *, deps: steps.Deps) -> None:
    """``receive_offer`` for a set of offers (each with its OfferProposed bytes), in a fixed number of round trips
    for the common shape: a case's first offer, which the system authorises at once or which waits for a human.

    Everything else (a re-quote, a case waiting on the customer or resolved, an owner who may grant it at once,
    two offers of one case in the batch) goes one by one through ``receive_offer`` after the set, on its own
    case: each case's offers keep their order, and no two paths touch the same case.
    """
    if not batch:
        return
    conn, now, policy = uow.conn, deps.clock(), deps.policy()
    await steps.serialise_arrivals(conn, (command.case_id for command, _ in batch))
    records = await repo.lock_cases(conn, (command.case_id for command, _ in batch))
    await repo.park_events(
        conn,
        [(command.case_id, "offer", message) for command, message in batch if command.case_id not in records],
        now=now,
    )
    arrived = [(command, message) for command, message in batch if command.case_id in records]
    # Declared incidents' playbook offers are pre-approved: their declarations, locked (none: no statement).
    declarations = await repo.declarations_of(
        conn,
        (records[cmd.case_id].case.incident_id for cmd, _ in arrived if cmd.offer.playbook_id),
        lock=True,
    )
    # Planned in record order as the set will spend it: what the plan sends one by one re-checks on its own.
    planned, room = _DeclaredRoom(policy, declarations), _DeclaredRoom(policy, declarations)
    per_case = Counter(command.case_id for command, _ in arrived)
    first, rest = [], []
    for command, message in arrived:
        case = records[command.case_id].case
        pre_approved = planned.take(case, command.offer) is not None
        simple = per_case[command.case_id] == 1 and _first_offer(case, command, policy, pre_approved)
        (first if simple else rest).append((command, message))
    inserted = await repo.insert_offers(conn, [(cmd.case_id, cmd.offer, msg, cmd.proposed_at) for cmd, msg in first])
    highest = await repo.highest_offer_versions(conn, (cmd.case_id for cmd, _ in first))
    saved, audits, grants, reviews = [], [], [], []
    system = Actor.system()
    limits = steps.system_limits(deps)  # the same for every offer the system authorises under this policy
    limits_json = wire.limits_json(limits)
    for command, message in first:
        offer = command.offer
        if offer.offer_id not in inserted:
            continue  # this offer (or another with its version) is already known
        if highest.get(command.case_id, 0) > offer.version:
            log.info(
                "offer %s v%d is older than the case's current offer; kept, not current", offer.offer_id, offer.version
            )
            continue
        before = records[command.case_id].case
        # A first offer: no earlier one to release, no pending approval to cancel, no paused clock to resume.
        after = replace(
            lifecycle.apply(before, c.ProposeOffer(offer_id=offer.offer_id), now).case,
            current_offer_id=offer.offer_id,
            pending_approval_id="",
        )
        audits.append(
            steps.audit_entry(
                deps,
                before=before,
                after=after,
                action=CaseAction.OFFER_PROPOSED,
                actor=system,
                at=now,
                amount=offer.total,
                offer_id=offer.offer_id,
                detail=f"version {offer.version}",
            )
        )
        final = after

        whole = None
        pre_approved = room.take(after, offer)
        if pre_approved is not None:
            declaration, declarer_limits = pre_approved
            playbook_limits = steps.playbook_limits_proto(deps, declaration, declarer_limits)
            whole = (
                AuthorizationTier.PLAYBOOK,
                declaration.declared_by,
                playbook_limits,
                wire.limits_json(playbook_limits),
                steps.playbook_reason(declaration, offer),
            )
        elif authority.system_may_authorise(policy, system_detected=after.system_detected, offer=offer):
            whole = (AuthorizationTier.SYSTEM, "", limits, limits_json, steps.SYSTEM_REASON)
        if whole is not None:
            tier, authority_id, used_limits, used_json, reason = whole
            final = lifecycle.apply(after, c.AuthorizeOffer(by=system), now).case
            grant, record = steps.authorization(
                deps,
                case=after,
                offer=offer,
                message=message,
                by=system,
                tier=tier,
                authority_employee_id=authority_id,
                limits=used_limits,
                amount=offer.total,
                lines=offer.lines,
                approval_id="",
                part=AuthorizationPart.WHOLE,
                now=now,
            )
            grants.append(grant)
            uow.stage(record)
            audits.append(
                steps.audit_entry(
                    deps,
                    before=after,
                    after=final,
                    action=CaseAction.OFFER_AUTHORIZED,
                    actor=system,
                    at=now,
                    amount=offer.total,
                    offer_id=offer.offer_id,
                    limits=used_json,
                    rate=wire.rate_json(steps.rate(deps, offer.total.currency)),
                    reason=reason,
                )
            )
        elif authority.reviewed_while_queued(after, offer):
            review = steps.review(deps, case=after, offer=offer, message=message, now=now)
            reviews.append(review)
            uow.stage(review.record)
            audits.append(review.audit)
            final = review.case
        saved.append(final)
        progressed = steps.progress_record(before, final, now=now)
        if progressed is not None:
            uow.stage(progressed)
    await repo.save_cases(conn, saved, now=now)
    if len(await repo.insert_authorizations(conn, grants)) != len(grants):
        raise Conflict("an offer of this batch is already authorised")  # cannot be for a first offer: isolate it
    await repo.set_offer_statuses(conn, [(g.offer_id, OfferStatus.AUTHORIZED) for g in grants])
    await repo.add_declared_spend(conn, room.spent)
    await steps.save_reviews(conn, deps, reviews)
    await repo.append_audits(conn, audits)
    if grants:
        tiers = Counter(g.tier for g in grants)

        def count_grants() -> None:
            for tier, n in tiers.items():
                deps.metrics.authorizations.labels(tier=tier).inc(n)

        uow.after_commit(count_grants)
    if reviews:
        uow.after_commit(steps.count_reviews(deps, reviews))
    await uow.flush()  # the set's events before the one-by-one ones, in the order they were decided
    for command, message in rest:
        await receive_offer(conn, command, message=message, deps=deps)


def _first_offer(case: Case, command: c.ReceiveOffer, policy, pre_approved: bool) -> bool:
    """True when the offer is the case's first and nobody but the system (on its own authority or a declared
    incident's) could authorise it at once."""
    if case.current_offer_id or case.state in (CaseState.RESOLVED, CaseState.WAITING_ON_CUSTOMER):
        return False
    system = authority.system_may_authorise(policy, system_detected=case.system_detected, offer=command.offer)
    owner_may_grant = bool(case.owner_employee_id and case.owner_role)
    return pre_approved or system or not owner_may_grant


class _DeclaredRoom:
    """What the declarations of a batch's incidents still pre-approve, as the batch spends it in record order."""

    def __init__(self, policy, declarations: dict[str, Declaration]) -> None:
        self._policy = policy
        self._declarations = declarations
        self.spent: dict[str, int] = {}  # per incident, base minor units authorised in this batch

    def _limits(self, case: Case, offer) -> tuple[Declaration, Limits] | None:
        declaration = self._declarations.get(case.incident_id)
        if declaration is None:
            return None
        so_far = replace(
            declaration,
            authorized_base_minor=declaration.authorized_base_minor + self.spent.get(case.incident_id, 0),
        )
        limits = authority.playbook_limits(self._policy, so_far, offer)
        return None if limits is None else (declaration, limits)

    def take(self, case: Case, offer) -> tuple[Declaration, Limits] | None:
        """Return the declaration and the declarer's limits when they pre-approve the offer, spending its room."""
        found = self._limits(case, offer)
        if found is not None:
            rate = self._policy.rate_for(offer.total.currency)
            self.spent[case.incident_id] = self.spent.get(case.incident_id, 0) + rate.to_base(offer.total.amount_minor)
        return found


async def request_reopen(conn: asyncpg.Connection, command: c.RequestReopen, *, deps: steps.Deps) -> None:
    """Reopen the case at followup's request (the customer was not satisfied); a case not resolved stays as it is."""
    record = await repo.get_case(conn, command.case_id, lock=True)
    if record is None:
        raise InvalidCommand.of(FieldViolation("case_id", f"unknown case {command.case_id}"))
    if record.case.state is not CaseState.RESOLVED:
        log.info("reopen of case %s requested while %s: nothing to do", command.case_id, record.case.state.value)
        return
    await steps.reopen(conn, deps, record, by=Actor.system(), reason=command.reason, followup_id=command.followup_id)
