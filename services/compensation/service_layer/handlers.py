"""Compensation's handlers: one per command, run inside the caller's transaction (the unit of work).

The consumer harness and the gRPC servicer open the transaction; a handler locks the case row (so the
re-quotes of one case run one after another), decides with the pure domain, writes through the repository
and stages the offer-proposed event in the outbox, so the offer and its event commit together or not at all.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg

from services.common import outbox
from services.common.catalogue import Catalogue
from services.common.errors import FieldViolation, InvalidInput
from services.common.scheduler import utcnow
from services.common.topics import topic
from services.common.unit_of_work import UnitOfWork
from services.compensation.adapters import repository, texts, wire
from services.compensation.adapters.metrics import CompensationMetrics
from services.compensation.adapters.policies import PolicyBook
from services.compensation.domain import commands
from services.compensation.domain.errors import UnknownCase, UnknownOffer
from services.compensation.domain.events import OfferProposed
from services.compensation.domain.model import (
    CaseFacts,
    CustomerHistory,
    CustomerRequest,
    GrantedLine,
    Offer,
    RequoteReason,
)
from services.compensation.domain.offer import adjusted, case_currency, granted_of, unverified_claims
from services.compensation.domain.offer import compute_offer as compute_unrendered
from services.compensation.domain.policy import Policy

log = logging.getLogger(__name__)

SOURCE = "compensation"  # ce_source of everything compensation publishes
OFFER_PROPOSED = topic("recovery.offer-proposed.v1").name
# Offer ids are derived from (case id, version): a replayed or duplicated input can never fork a case's offers.
OFFER_NAMESPACE = uuid.UUID("6f1f4a52-64c8-4c41-9a51-3c1f0d5e2b7a")


@dataclass(frozen=True)
class Deps:
    """What compensation's handlers need besides the connection: policies, metrics and a clock."""

    policies: PolicyBook
    metrics: CompensationMetrics
    clock: Callable[[], datetime] = utcnow
    texts: Catalogue = field(default_factory=texts.catalogue)


def compute_offer(*, catalogue: Catalogue, facts: CaseFacts, **inputs) -> Offer:
    """Return the domain's offer on ``facts`` with its customer texts rendered in the case's language."""
    return texts.localise(compute_unrendered(facts=facts, **inputs), facts.locale, catalogue)


def offer_id_for(case_id: str, version: int) -> str:
    """Return the id of a case's offer version (deterministic)."""
    return f"offer-{uuid.uuid5(OFFER_NAMESPACE, f'{case_id}/{version}')}"


def proposed_ce_id(offer_id: str) -> str:
    """Return the CloudEvents id of an offer's offer-proposed event (one business fact, one id)."""
    return f"offer-proposed:{offer_id}"


def repeat_reference_cases(case_id: str, compensated: set[str]) -> tuple[str, ...]:
    """Return the OTHER cases on the case's reference that were compensated (sorted: offers recompute exactly)."""
    return tuple(sorted(compensated - {case_id}))


async def _inputs(
    conn: asyncpg.Connection, facts: CaseFacts, policy: Policy, now: datetime
) -> tuple[CustomerHistory, int, tuple[GrantedLine, ...]]:
    """Return what an offer on ``facts`` is computed from besides them: history, team spend, what was granted."""
    since = now - policy.abuse_window
    compensated = await repository.compensated_references(conn, [(facts.customer_id, facts.reference)], since=since)
    history = CustomerHistory(
        unverified_claims_in_window=await repository.unverified_claims_elsewhere(
            conn, customer_id=facts.customer_id, case_id=facts.case_id, since=since
        ),
        repeat_reference_cases=repeat_reference_cases(
            facts.case_id, compensated.get((facts.customer_id, facts.reference), set())
        ),
    )
    spent = await repository.team_spent(conn, team=facts.owning_team, currency=case_currency(facts, policy), at=now)
    # Facts without a case (a what-if) have nothing granted.
    granted = await repository.granted_lines(conn, facts.case_id) if facts.case_id else ()
    return history, spent, granted


async def _with_playbook(conn: asyncpg.Connection, facts: CaseFacts) -> CaseFacts:
    """Return ``facts`` with the playbook their incident was declared with (unchanged when it was not)."""
    if not facts.incident_id:
        return facts
    playbooks = await repository.playbooks_of(conn, [facts.incident_id])
    return replace(facts, playbook_id=playbooks.get(facts.incident_id, facts.playbook_id))


async def _compute(conn: asyncpg.Connection, facts: CaseFacts, *, deps: Deps) -> repository.NewOffer:
    """Return the offer on ``facts`` now, with everything it is computed from (nothing stored yet)."""
    loaded = await deps.policies.save_current(conn)
    now = deps.clock()
    facts = await _with_playbook(conn, facts)
    # The full entitlement, less what the case's authorisations already granted: a re-quote pays the difference.
    history, spent, granted = await _inputs(conn, facts, loaded.policy, now)
    offer = compute_offer(
        catalogue=deps.texts,
        facts=facts,
        history=history,
        policy=loaded.policy,
        now=now,
        team_spent_minor=spent,
        granted=granted,
    )
    return repository.NewOffer(offer, facts, history, spent, granted)


async def _propose(
    conn: asyncpg.Connection,
    facts: CaseFacts,
    *,
    deps: Deps,
    reason: RequoteReason | None = None,
    detail: str = "",
) -> Offer:
    return await _store(conn, await _compute(conn, facts, deps=deps), deps=deps, reason=reason, detail=detail)


async def _store(
    conn: asyncpg.Connection,
    computed: repository.NewOffer,
    *,
    deps: Deps,
    reason: RequoteReason | None = None,
    detail: str = "",
) -> Offer:
    """Store a computed offer as the case's next version, superseding the current one, and stage its event."""
    offer, facts = computed.offer, computed.facts
    previous = await repository.current_offer(conn, facts.case_id)
    version = previous.version + 1 if previous else 1
    offer = replace(
        offer,
        offer_id=offer_id_for(facts.case_id, version),
        version=version,
        supersedes_offer_id=previous.offer_id if previous else "",
        requote_reason=reason if previous else None,
        requote_detail=detail if previous else "",
    )
    if previous is not None:
        # First retire the current offer: the partial unique index allows one current offer per case.
        await repository.supersede(conn, offer_id=previous.offer_id, by=offer.offer_id)
    await repository.insert_offers(conn, [replace(computed, offer=offer)])
    event = OfferProposed(offer=offer)
    await outbox.stage(
        conn,
        outbox.event_record(
            OFFER_PROPOSED,
            wire.offer_to_event(event.offer),
            key=offer.customer_id,
            source=SOURCE,
            ce_id=proposed_ce_id(offer.offer_id),
        ),
    )
    deps.metrics.proposed(offer, severity=facts.severity)
    return offer


def _proposed_record(offer: Offer) -> outbox.OutgoingRecord:
    return outbox.event_record(
        OFFER_PROPOSED,
        wire.offer_to_event(OfferProposed(offer=offer).offer),
        key=offer.customer_id,
        source=SOURCE,
        ce_id=proposed_ce_id(offer.offer_id),
    )


# ------------------------------------------------------------------------------------ consumers


async def open_cases(uow: UnitOfWork, batch: Sequence[commands.QuoteFirstOffer], *, deps: Deps) -> list[Offer | None]:
    """Store new cases and propose each its first offer, in order; None for a case already known (nothing proposed).

    A fixed number of round trips whatever the batch size: the customers' recent cases (abuse guard), their
    cases on the same references already compensated (repeat guard), the breaches and reopenings counted before
    the case arrived, the teams' spend, then one insert of the cases, one of the offers, and the offer-proposed
    events staged together. A batch with cases of incidents takes two more: a lock on those incidents (against a
    declaration committing beside it unseen) and their playbooks, which a case of a declared incident is offered.
    A first offer has nothing granted before it.
    """
    if not batch:
        return []
    loaded = await deps.policies.save_current(uow.conn)
    policy, now = loaded.policy, deps.clock()
    first: dict[str, commands.QuoteFirstOffer] = {}
    for command in batch:
        first.setdefault(command.facts.case_id, command)  # a case opened twice in one batch: the first counts
    incidents = {c.facts.incident_id for c in first.values() if c.facts.incident_id}
    if incidents:
        await repository.lock_incidents(uow.conn, incidents)
        playbooks = await repository.playbooks_of(uow.conn, incidents)
        first = {
            case_id: replace(c, facts=replace(c.facts, playbook_id=playbooks.get(c.facts.incident_id, "")))
            for case_id, c in first.items()
        }
    since = now - policy.abuse_window
    recent = await repository.recent_cases(uow.conn, [c.facts.customer_id for c in first.values()], since=since)
    compensated = await repository.compensated_references(
        uow.conn, ((c.facts.customer_id, c.facts.reference) for c in first.values()), since=since
    )
    counted = await repository.counted_for(uow.conn, list(first))
    spent = await repository.teams_spent(
        uow.conn, ((c.facts.owning_team, case_currency(c.facts, policy)) for c in first.values()), at=now
    )
    inserted = await repository.insert_cases(
        uow.conn, [(c.facts, c.opened_at, unverified_claims(c.facts)) for c in first.values()]
    )
    # Per customer, each recent case's unverified claims (a dict per customer: a batch stays linear in its size).
    unverified: dict[str, dict[str, int]] = {}
    for case in recent:
        unverified.setdefault(case.customer_id, {})[case.case_id] = case.unverified_claims
    proposed: dict[str, Offer] = {}
    rows = []
    for case_id, command in first.items():
        if case_id not in inserted:
            continue
        breaches, reopens = counted[case_id]
        # The facts as stored, with the recovery's own failures counted in (breaches may come before the case).
        facts = replace(_as_stored(command.facts), sla_breaches=breaches, reopen_count=reopens)
        history = CustomerHistory(
            unverified_claims_in_window=sum(
                claims for other, claims in unverified.get(facts.customer_id, {}).items() if other != case_id
            ),
            repeat_reference_cases=repeat_reference_cases(
                case_id, compensated.get((facts.customer_id, facts.reference), set())
            ),
        )
        team_spent = spent[(facts.owning_team, case_currency(facts, policy))]
        offer = compute_offer(
            catalogue=deps.texts, facts=facts, history=history, policy=policy, now=now, team_spent_minor=team_spent
        )
        offer = replace(
            offer,
            offer_id=offer_id_for(case_id, 1),
            version=1,
            supersedes_offer_id="",
            requote_reason=None,
            requote_detail="",
        )
        proposed[case_id] = offer
        rows.append(repository.NewOffer(offer, facts, history, team_spent))
        if command.opened_at >= since:  # a later case of the customer in this batch sees this one's claims
            unverified.setdefault(facts.customer_id, {})[case_id] = unverified_claims(command.facts)
    await repository.insert_offers(uow.conn, rows)
    uow.stage(*(_proposed_record(row.offer) for row in rows))
    duplicates = len(batch) - len(proposed)

    def count() -> None:
        for row in rows:
            deps.metrics.proposed(row.offer, severity=row.facts.severity)
        if duplicates:
            # Business-key uniqueness beyond the inbox: another case-opened for a known case (a different ce_id).
            deps.metrics.duplicates.labels(kind="case_opened").inc(duplicates)

    uow.after_commit(count)
    seen: set[str] = set()
    results: list[Offer | None] = []
    for command in batch:
        case_id = command.facts.case_id
        results.append(proposed.get(case_id) if case_id not in seen else None)
        seen.add(case_id)
    return results


def _as_stored(facts: CaseFacts) -> CaseFacts:
    """The facts as the store gives them back (the protobuf round trip), so a first offer is computed from exactly
    what a recomputation later reads. The reference has a column of its own, so it is kept."""
    stored = wire.facts_from_proto(
        wire.facts_to_proto(facts, at=facts.failure_at), at=facts.failure_at, case_id=facts.case_id
    )
    return replace(stored, reference=facts.reference)


async def amend_case(conn: asyncpg.Connection, command: commands.RequoteAmendedCase, *, deps: Deps) -> Offer | None:
    """Replace the case's facts with a newer revision and re-quote; None for a stale revision."""
    stored = await repository.lock_case(conn, command.facts.case_id)
    unverified = unverified_claims(command.facts)
    if stored is None:
        # The amendment overtook the opening (different topics): the facts are complete, so open from them.
        opened = commands.QuoteFirstOffer(facts=command.facts, opened_at=command.amended_at)
        await repository.insert_case(
            conn, command.facts, revision=command.revision, opened_at=command.amended_at, unverified=unverified
        )
        stored = await repository.lock_case(conn, opened.facts.case_id)
        assert stored is not None
        return await _propose(conn, stored.facts, deps=deps)
    if command.revision <= stored.revision:
        deps.metrics.duplicates.labels(kind="case_amended").inc()
        return None
    facts = replace(
        command.facts,
        # The customer has been waiting since the case's first failure, not the merged one.
        failure_at=min(stored.facts.failure_at, command.facts.failure_at),
        owning_team=stored.facts.owning_team,
        reference=command.facts.reference or stored.facts.reference,
        # An amendment does not carry the incident: the case stays in the one it was opened in.
        incident_id=stored.facts.incident_id,
        playbook_id=stored.facts.playbook_id,
        sla_breaches=stored.facts.sla_breaches,
        reopen_count=stored.facts.reopen_count,
    )
    await repository.update_case(conn, facts, revision=command.revision, unverified=unverified, at=command.amended_at)
    detail = f"failure {command.merged_failure_id} merged into the case (revision {command.revision})"
    return await _propose(conn, facts, deps=deps, reason=RequoteReason.CASE_AMENDED, detail=detail)


async def record_breach(conn: asyncpg.Connection, command: commands.RequoteForBreach, *, deps: Deps) -> Offer | None:
    """Count a missed deadline once and raise the offer; None when already counted or the case is unknown."""
    clock = command.clock.value if command.clock else "unspecified"
    deadline = command.deadline_at or command.breached_at
    new = await repository.record_breach(
        conn,
        case_id=command.case_id,
        clock=clock,
        deadline_at=deadline,
        approval_id=command.approval_id,
        breached_at=command.breached_at,
    )
    if not new:
        deps.metrics.duplicates.labels(kind="sla_breached").inc()
        return None
    stored = await repository.lock_case(conn, command.case_id)
    if stored is None:
        # Counted now; the first offer includes it when the case-opened event arrives.
        log.warning("SLA breach for case %s not seen opened yet; counted for its first offer", command.case_id)
        return None
    detail = f"{clock} SLA breached at {command.breached_at:%Y-%m-%d %H:%M} UTC (deadline {deadline:%Y-%m-%d %H:%M})"
    return await _propose(conn, stored.facts, deps=deps, reason=RequoteReason.SLA_BREACHED, detail=detail)


async def record_counter(conn: asyncpg.Connection, command: commands.RequoteForCounter, *, deps: Deps) -> Offer | None:
    """Re-quote on the customer's counter-request; None when the case is unknown or the counter already applied."""
    stored = await repository.lock_case(conn, command.case_id)
    if stored is None:
        log.warning("counter on case %s, which compensation never saw opened; ignored", command.case_id)
        return None
    current = await repository.current_offer(conn, command.case_id)
    if (
        current is not None
        and current.requote_reason is RequoteReason.CUSTOMER_COUNTERED
        and current.supersedes_offer_id == command.countered_offer_id
    ):
        deps.metrics.duplicates.labels(kind="customer_countered").inc()
        return None
    facts = replace(stored.facts, customer_request=command.request)
    await repository.update_case(
        conn, facts, revision=stored.revision, unverified=unverified_claims(facts), at=command.countered_at
    )
    detail = f"customer countered offer {command.countered_offer_id or '(unknown)'}: {_describe(command.request)}"
    return await _propose(conn, facts, deps=deps, reason=RequoteReason.CUSTOMER_COUNTERED, detail=detail)


async def record_adjustment(
    conn: asyncpg.Connection, command: commands.RequoteForAdjustment, *, deps: Deps
) -> Offer | None:
    """Re-quote with the frontline's adjustment; None when the case is unknown or this adjustment was applied."""
    stored = await repository.lock_case(conn, command.case_id)
    if stored is None:
        log.warning("adjustment of case %s, which compensation never saw opened; ignored", command.case_id)
        return None
    if not await repository.claim_adjustment(
        conn, command.adjustment_id, case_id=command.case_id, at=command.adjusted_at
    ):
        deps.metrics.duplicates.labels(kind="offer_adjusted").inc()
        return None  # a copy republished under another event id: the adjustment is in the facts already
    facts = adjusted(stored.facts, command.adjustment)
    await repository.update_case(
        conn, facts, revision=stored.revision, unverified=unverified_claims(facts), at=command.adjusted_at
    )
    who = command.adjusted_by or "(unknown)"
    detail = f"adjustment {command.adjustment_id} by {who} of offer {command.adjusted_offer_id}: {command.reason}"
    return await _propose(conn, facts, deps=deps, reason=RequoteReason.FRONTLINE_ADJUSTED, detail=detail)


async def record_reopening(
    conn: asyncpg.Connection, command: commands.RequoteReopenedCase, *, deps: Deps
) -> Offer | None:
    """Count a reopening once and re-quote; None when already counted or the case is unknown."""
    new = await repository.record_reopening(
        conn,
        case_id=command.case_id,
        dedupe_key=command.dedupe_key,
        reason=command.reason,
        reopened_at=command.reopened_at,
    )
    if not new:
        deps.metrics.duplicates.labels(kind="case_reopened").inc()
        return None
    stored = await repository.lock_case(conn, command.case_id)
    if stored is None:
        log.warning("reopening of case %s, which compensation never saw opened; counted", command.case_id)
        return None
    detail = f"case reopened: {command.reason or 'no reason given'}"
    return await _propose(conn, stored.facts, deps=deps, reason=RequoteReason.CASE_REOPENED, detail=detail)


async def apply_playbook(conn: asyncpg.Connection, command: commands.ApplyPlaybook, *, deps: Deps) -> list[Offer]:
    """Record an incident's declaration once and offer its known cases the playbook; returns the offers proposed.

    A redelivered declaration is a counted duplicate. The re-quotes run in this one transaction, case by case, each
    case locked like any re-quote (declarations are rare, so a set-based path is not worth it). A case the normal
    rules give more keeps its current offer; its stored facts name the playbook, so later re-quotes weigh it. Cases
    opened after the declaration get the playbook with their first offer (``open_cases``).
    """
    await repository.lock_incidents(conn, [command.incident_id])
    new = await repository.record_playbook(
        conn,
        incident_id=command.incident_id,
        playbook_id=command.playbook_id,
        declared_by=command.declared_by,
        declared_at=command.declared_at,
        recorded_at=deps.clock(),
    )
    if not new:
        deps.metrics.duplicates.labels(kind="incident_declared").inc()
        return []
    by = command.declared_by or "(unknown)"
    detail = f"incident {command.incident_id} declared with playbook {command.playbook_id} by {by}"
    proposed = []
    for case_id in await repository.cases_of_incident(conn, command.incident_id):
        stored = await repository.lock_case(conn, case_id)
        if stored is None:
            continue  # listed in this transaction, and cases are never deleted: cannot happen
        facts = replace(stored.facts, playbook_id=command.playbook_id)
        await repository.update_case(
            conn, facts, revision=stored.revision, unverified=unverified_claims(facts), at=command.declared_at
        )
        computed = await _compute(conn, facts, deps=deps)
        if not computed.offer.playbook_id:
            continue  # the case needs more than the playbook: its offer stands
        proposed.append(await _store(conn, computed, deps=deps, reason=RequoteReason.INCIDENT_DECLARED, detail=detail))
    return proposed


def authorization_violations(command: commands.RecordAuthorization) -> list[FieldViolation]:
    """Return what makes an authorisation unfit for the ledger (its lines are what a re-quote deducts)."""
    violations = []
    if not command.offer_id:
        violations.append(FieldViolation("offer_id", "is required"))
    amount = command.amount
    if not amount.currency:
        violations.append(FieldViolation("amount", "is required"))
    if amount.amount_minor < 0:
        violations.append(FieldViolation("amount.amount_minor", f"must not be negative, got {amount.amount_minor}"))
    total = 0
    for i, line in enumerate(command.line_items):
        if line.amount.currency != amount.currency:
            got = f"is {line.amount.currency!r}, not the amount's {amount.currency!r}"
            violations.append(FieldViolation(f"line_items[{i}].amount.currency", got))
        if line.amount.amount_minor < 0:
            got = f"must not be negative, got {line.amount.amount_minor}"
            violations.append(FieldViolation(f"line_items[{i}].amount.amount_minor", got))
        total += line.amount.amount_minor
    if amount.currency and total != amount.amount_minor:
        got = f"sum to {total} {amount.currency}, not the amount {amount.amount_minor} {amount.currency}"
        violations.append(FieldViolation("line_items", got))
    return violations


async def record_authorizations(
    uow: UnitOfWork, batch: Sequence[commands.RecordAuthorization], *, deps: Deps
) -> list[tuple[int, InvalidInput]]:
    """Add authorisations to their teams' monthly spend, once per authorisation id, with the lines they granted;
    returns the (index, error) of each refused.

    A split offer's two authorisations (the owner's share, the approved remainder) are two rows; a redelivered
    one is a counted duplicate. Two statements whatever the batch size: the owning teams of events that name
    none, and the spend rows.
    """
    refused: list[tuple[int, InvalidInput]] = []
    valid: list[commands.RecordAuthorization] = []
    for i, command in enumerate(batch):
        violations = authorization_violations(command)
        if violations:
            refused.append((i, InvalidInput.of(*violations)))
        else:
            valid.append(command)
    unnamed = [command.case_id for command in valid if not command.team]
    teams = await repository.owning_teams(uow.conn, unnamed) if unnamed else {}
    spends = [
        repository.Spend(
            authorization_id=command.authorization_id,
            offer_id=command.offer_id,
            case_id=command.case_id,
            team=command.team or teams.get(command.case_id, ""),
            currency=command.amount.currency,
            amount_minor=command.amount.amount_minor,
            authorized_at=command.authorized_at,
            part=command.part,
            lines=granted_of(command.line_items),
        )
        for command in valid
    ]
    new = await repository.record_spends(uow.conn, spends)

    def count() -> None:
        seen: set[str] = set()
        for command in valid:
            if command.authorization_id in new and command.authorization_id not in seen:
                deps.metrics.authorized(command.line_items)
            else:
                deps.metrics.duplicates.labels(kind="offer_authorized").inc()
            seen.add(command.authorization_id)

    uow.after_commit(count)
    return refused


def _describe(request: CustomerRequest | None) -> str:
    if request is None:
        return "no request"
    parts = [request.remedy_kind.value if request.remedy_kind else "", request.text]
    if request.amount is not None:
        parts.append(f"{request.amount.amount_minor} {request.amount.currency}")
    return ", ".join(p for p in parts if p) or "no request"


# ------------------------------------------------------------------------------------ queries (gRPC)


async def _policy(conn: asyncpg.Connection, version: str, deps: Deps) -> Policy:
    if not version or version == deps.policies.loaded.version:
        return (await deps.policies.save_current(conn)).policy
    policy, _ = await deps.policies.version(conn, version)
    return policy


async def quote(
    conn: asyncpg.Connection,
    *,
    deps: Deps,
    case_id: str = "",
    facts: CaseFacts | None = None,
    request: CustomerRequest | None = None,
    policy_version: str = "",
) -> Offer:
    """Return a what-if offer (nothing stored) on a stored case or given facts; raises UnknownCase/Version."""
    if case_id:
        stored = await repository.get_case(conn, case_id)
        if stored is None:
            raise UnknownCase(f"case {case_id!r} is unknown to compensation")
        facts = stored.facts
    assert facts is not None
    if request is not None:
        facts = replace(facts, customer_request=request)
    facts = await _with_playbook(conn, facts)
    policy = await _policy(conn, policy_version, deps)
    now = deps.clock()
    history, spent, granted = await _inputs(conn, facts, policy, now)
    return compute_offer(
        catalogue=deps.texts,
        facts=facts,
        history=history,
        policy=policy,
        now=now,
        team_spent_minor=spent,
        granted=granted,
    )


async def recompute(conn: asyncpg.Connection, offer_id: str, *, deps: Deps) -> Offer:
    """Return a stored offer computed again from its own inputs and policy version; raises UnknownOffer."""
    inputs = await repository.offer_inputs(conn, offer_id)
    if inputs is None:
        raise UnknownOffer(f"offer {offer_id!r} does not exist")
    policy, _ = await deps.policies.version(conn, inputs.offer.policy_version)
    fresh = compute_offer(
        catalogue=deps.texts,
        facts=inputs.facts,
        history=inputs.history,
        policy=policy,
        now=inputs.offer.proposed_at,
        team_spent_minor=inputs.team_spent_minor,
        granted=inputs.granted,
    )
    stored = inputs.offer
    return replace(
        fresh,
        offer_id=stored.offer_id,
        version=stored.version,
        supersedes_offer_id=stored.supersedes_offer_id,
        superseded_by_offer_id=stored.superseded_by_offer_id,
        requote_reason=stored.requote_reason,
        requote_detail=stored.requote_detail,
    )


async def get_offer(conn: asyncpg.Connection, offer_id: str) -> Offer:
    """Return one offer version; raises UnknownOffer."""
    offer = await repository.get_offer(conn, offer_id)
    if offer is None:
        raise UnknownOffer(f"offer {offer_id!r} does not exist")
    return offer
