"""Empowerment decisions: what an authority's limits cover, where an approval goes, who may decide it.

Pure functions of (policy, offer, limits, usage, delegations, now). The per-period usage they read is
the one the caller locked (see the repository), so a check and its booking cannot interleave.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from services.common.errors import FailedPrecondition, PreconditionViolation
from services.common.money import Money
from services.escalation.domain.errors import FieldViolation, Forbidden, InvalidCommand, LimitExceeded
from services.escalation.domain.model import (
    Actor,
    ActorKind,
    Approval,
    ApprovalReason,
    Case,
    CaseState,
    Declaration,
    Delegation,
    Limits,
    Offer,
    OfferLine,
    RemedyKind,
    Usage,
)
from services.escalation.domain.policy import Policy
from services.escalation.domain.rates import limits_in, usage_in

# Never reduced by an approver's modify-and-approve or any cap: what the law owes, and the customer's own
# costs at their amount (cutting one would need a reason per line, which a decision does not carry).
PROTECTED_KINDS = frozenset({RemedyKind.STATUTORY_COMPENSATION, RemedyKind.REIMBURSEMENT})


@dataclass(frozen=True)
class Shortfall:
    """One way an amount exceeds an authority's limits, and why in words."""

    reason: ApprovalReason
    detail: str


@dataclass(frozen=True)
class Split:
    """An offer divided line by line (same positions as the offer's lines) into what the owner's own authority
    covers and the remainder that goes to an approver; owner + remainder = the offer on every line."""

    owner: tuple[OfferLine, ...]
    remainder: tuple[OfferLine, ...]

    @property
    def owner_total(self) -> Money:
        return _total(self.owner)

    @property
    def remainder_total(self) -> Money:
        return _total(self.remainder)


def _total(lines: tuple[OfferLine, ...]) -> Money:
    currency = lines[0].amount.currency if lines else ""
    return Money(sum(line.amount.amount_minor for line in lines), currency)


@dataclass(frozen=True)
class Authority:
    """Whose authority a decision uses: the employee whose limits and period usage apply."""

    employee_id: str
    role: str
    team: str
    limits: Limits
    delegated_by: str = ""


@dataclass(frozen=True)
class Route:
    """Where an approval request goes and why it is needed."""

    approver_role: str
    reasons: tuple[ApprovalReason, ...]


def kind_totals(lines: tuple[OfferLine, ...]) -> dict:
    """Return the offer's amount per remedy kind (minor units)."""
    out: dict = {}
    for line in lines:
        out[line.kind] = out.get(line.kind, 0) + line.amount.amount_minor
    return out


def case_shortfalls(limits: Limits, total: Money, lines: tuple[OfferLine, ...]) -> list[Shortfall]:
    """Return how ``total`` (and its lines) exceed the per-case and remedy-kind limits; empty when covered."""
    out = []
    if total.currency != limits.currency:
        # Only reachable for a currency the policy has no rate for (``in_currency`` converts the others).
        return [
            Shortfall(
                ApprovalReason.ABOVE_CASE_LIMIT,
                f"no exchange rate from {total.currency} to {limits.currency} in the empowerment policy: "
                "nobody may authorise it until one is added",
            )
        ]
    if total.amount_minor > limits.per_case:
        out.append(
            Shortfall(ApprovalReason.ABOVE_CASE_LIMIT, f"{total.amount_minor} above per-case limit {limits.per_case}")
        )
    for kind, amount in sorted(kind_totals(lines).items(), key=lambda kv: str(kv[0])):
        if kind is None or amount == 0:
            continue  # an unspecified kind carries no cap of its own, and nothing granted needs none
        cap = limits.remedy_caps.get(kind)
        if cap is None:
            out.append(Shortfall(ApprovalReason.REMEDY_KIND_NOT_ALLOWED, f"{kind.value} not allowed for {limits.role}"))
        elif amount > cap:
            out.append(Shortfall(ApprovalReason.REMEDY_KIND_NOT_ALLOWED, f"{kind.value} {amount} above its cap {cap}"))
    return out


def in_currency(policy: Policy, limits: Limits | None, usage: Usage, currency: str) -> tuple[Limits | None, Usage]:
    """Return base-currency ``limits`` and ``usage`` as they stand in ``currency`` at the policy's rate; unchanged
    when the policy has no rate for it (the checks then refuse, naming the missing rate)."""
    rate = policy.rate_for(currency)
    if limits is None or rate is None:
        return limits, usage
    return limits_in(limits, rate), usage_in(usage, rate)


def most_per_case(policy: Policy, currency: str) -> Money | None:
    """Return the most any authority may grant on one case (the top tier's per-case limit) in ``currency``; None
    when the currency has no rate (nobody authorises in it)."""
    top = policy.limits_for(employee_id="", role=policy.tiers[-1])
    converted, _ = in_currency(policy, top, Usage(), currency)
    if converted is None or converted.currency != currency:
        return None
    return Money(converted.per_case, currency)


def split(limits: Limits | None, usage: Usage, offer: Offer) -> Split:
    """Return what the owner's ``limits`` (in the offer's currency, with their period ``usage``) cover of ``offer``,
    line by line in the offer's order, and the remainder for an approver.

    A line of a kind the owner may not grant goes up whole; a line larger than the room left (per case, today,
    this month, its kind's cap) is divided. A flagged offer goes up whole: a reviewer looks at all of it.
    """
    zero = Money.zero(offer.total.currency)
    if limits is None or flags(offer) or limits.currency != offer.total.currency:
        return Split(owner=tuple(replace(line, amount=zero) for line in offer.lines), remainder=offer.lines)
    room = max(0, min(limits.per_case, limits.per_day - usage.today, limits.per_month - usage.this_month))
    kind_room = dict(limits.remedy_caps)
    owner, remainder = [], []
    for line in offer.lines:
        amount = line.amount.amount_minor
        cap = room if line.kind is None else kind_room.get(line.kind)
        take = 0 if cap is None else max(0, min(amount, room, cap))
        if line.kind is not None and cap is not None:
            kind_room[line.kind] = cap - take
        room -= take
        owner.append(replace(line, amount=Money(take, line.amount.currency)))
        remainder.append(replace(line, amount=Money(amount - take, line.amount.currency)))
    return Split(owner=tuple(owner), remainder=tuple(remainder))


@dataclass(frozen=True)
class Room:
    """What an authority may still grant, in one currency: per case, left today, left this month, and on one
    offer (None without one)."""

    limits: Limits
    today: int
    this_month: int
    for_offer: int | None


def room(limits: Limits, usage: Usage, offer: Offer | None = None) -> Room:
    """Return the room ``limits`` leave after ``usage`` (both in one currency), and on ``offer`` what of it the
    authority could grant now (the owner's share the split would give)."""
    today = max(0, limits.per_day - usage.today)
    this_month = max(0, limits.per_month - usage.this_month)
    for_offer = split(limits, usage, offer).owner_total.amount_minor if offer is not None else None
    return Room(limits=limits, today=today, this_month=this_month, for_offer=for_offer)


def split_detail(split_: Split, total: Money) -> str:
    """Return how an offer was split, in words for the approver."""
    owner, rest = split_.owner_total.amount_minor, split_.remainder_total.amount_minor
    if owner == 0:
        return f"nothing of {total.amount_minor} {total.currency} within the owner's limits: all of it to approve"
    return (
        f"the owner granted {owner} {total.currency} of {total.amount_minor} {total.currency} at once; "
        f"{rest} {total.currency} to approve"
    )


def period_shortfalls(limits: Limits, total: Money, usage: Usage) -> list[Shortfall]:
    """Return how ``total`` on top of ``usage`` exceeds the daily and monthly limits; empty when covered."""
    out = []
    if usage.today + total.amount_minor > limits.per_day:
        out.append(
            Shortfall(
                ApprovalReason.ABOVE_PERIOD_LIMIT,
                f"{usage.today} used today + {total.amount_minor} above per-day limit {limits.per_day}",
            )
        )
    if usage.this_month + total.amount_minor > limits.per_month:
        out.append(
            Shortfall(
                ApprovalReason.ABOVE_PERIOD_LIMIT,
                f"{usage.this_month} used this month + {total.amount_minor} above per-month limit {limits.per_month}",
            )
        )
    return out


def flags(offer: Offer) -> list[Shortfall]:
    """Return the compensation flags that send an offer to approval whatever the limits."""
    out = []
    if offer.budget_exceeded:
        out.append(Shortfall(ApprovalReason.BUDGET_EXCEEDED, "the team's budget for the period would be exceeded"))
    if offer.needs_review:
        out.append(Shortfall(ApprovalReason.NEEDS_REVIEW, "compensation's abuse guard asks for a review"))
    return out


def check_within(limits: Limits, *, subject: str, total: Money, lines: tuple[OfferLine, ...], usage: Usage) -> None:
    """Return when ``limits`` cover the amount with ``usage``; raises LimitExceeded naming every limit broken."""
    missing = case_shortfalls(limits, total, lines) + period_shortfalls(limits, total, usage)
    if missing:
        raise LimitExceeded.of(subject, *(s.detail for s in missing))


def owner_covers(limits: Limits | None, *, offer: Offer, usage: Usage) -> bool:
    """True when the owner's own limits (with their period usage) cover the whole offer and nothing flags it."""
    if limits is None or flags(offer):
        return False
    return not (case_shortfalls(limits, offer.total, offer.lines) + period_shortfalls(limits, offer.total, usage))


def check_owner_may_authorise(limits: Limits | None, *, owner: Actor, offer: Offer, usage: Usage) -> Limits:
    """Return the owner's limits when they cover ``offer``; raises FailedPrecondition saying why not."""
    subject = f"employee/{owner.employee_id}"
    if limits is None:
        raise LimitExceeded.of(subject, f"role {owner.role!r} has no empowerment limits")
    flagged = flags(offer)
    if flagged:
        raise FailedPrecondition(
            "flagged offers always go to approval: " + "; ".join(s.detail for s in flagged),
            tuple(
                PreconditionViolation(type="REVIEW", subject=f"offer/{offer.offer_id}", description=s.detail)
                for s in flagged
            ),
        )
    check_within(limits, subject=subject, total=offer.total, lines=offer.lines, usage=usage)
    return limits


def route(
    policy: Policy,
    *,
    owner_role: str,
    owner_limits: Limits | None,
    offer: Offer,
    usage: Usage,
    ask: Offer | None = None,
) -> Route:
    """Return the lowest tier above the owner whose limits cover ``ask`` (what goes up: the remainder of a split
    offer, the whole ``offer`` when None), and why approval is needed (the owner's shortfalls on the whole offer).

    ``owner_limits`` and ``usage`` are in the offer's currency; each tier's limits are converted to it. When no
    tier covers it, the top tier (who may modify the amount down to what they can approve).
    """
    ask = ask or offer
    reasons: list[ApprovalReason] = []
    if owner_limits is not None:
        missing = case_shortfalls(owner_limits, offer.total, offer.lines)
        missing += period_shortfalls(owner_limits, offer.total, usage)
        reasons += [s.reason for s in missing]
    reasons += [s.reason for s in flags(offer)]
    if not reasons:
        reasons.append(ApprovalReason.OWNER_REQUESTED)
    start = policy.rank(owner_role) + 1
    for tier in policy.tiers[start:]:
        limits, _ = in_currency(policy, policy.roles[tier], Usage(), ask.total.currency)
        if limits is not None and not case_shortfalls(limits, ask.total, ask.lines):
            return Route(approver_role=tier, reasons=tuple(dict.fromkeys(reasons)))
    return Route(approver_role=policy.tiers[-1], reasons=tuple(dict.fromkeys(reasons)))


def higher_tier(policy: Policy, a: str, b: str) -> str:
    """Return the higher of two tiers (a rerouted request never goes back down)."""
    return a if policy.rank(a) >= policy.rank(b) else b


def escalated_role(policy: Policy, role: str) -> str:
    """Return the tier an overdue request or a breached case goes to: one up, or the top tier itself."""
    return policy.tier_above(role) or policy.tiers[-1]


def system_may_authorise(policy: Policy, *, system_detected: bool, offer: Offer) -> bool:
    """True when the system actor authorises ``offer`` at once (automatic proactive recovery)."""
    automation = policy.automation
    if not (automation.enabled and system_detected) or flags(offer):
        return False
    rate = policy.rate_for(offer.total.currency)
    if rate is None or rate.to_base(offer.total.amount_minor) > automation.limit:
        return False
    return all(line.kind in automation.remedies for line in offer.lines)


def playbook_limits(policy: Policy, declaration: Declaration | None, offer: Offer) -> Limits | None:
    """Return the declarer's limits (base currency) when the incident's declaration pre-approves ``offer``; None
    when the offer follows the normal path.

    Pre-approved: the offer is the declared playbook (compensation made it so), no abuse guard asks for a
    review, and the declarer's per-case and per-remedy limits cover it with the incident's total so far within
    their monthly limit. A team budget flag does not stop it: the declarer decided the incident's spend ahead.
    """
    if declaration is None or not offer.playbook_id or offer.playbook_id != declaration.playbook_id:
        return None
    limits = policy.limits_for(employee_id=declaration.declared_by, role=declaration.declared_by_role)
    rate = policy.rate_for(offer.total.currency)
    if limits is None or rate is None or offer.needs_review:
        return None
    local, _ = in_currency(policy, limits, Usage(), offer.total.currency)
    if local is None or case_shortfalls(local, offer.total, offer.lines):
        return None
    if declaration.authorized_base_minor + rate.to_base(offer.total.amount_minor) > limits.per_month:
        return None
    return limits


def check_may_declare(policy: Policy, *, by: Actor, playbook_id: str) -> Limits:
    """Return the limits ``by`` would pre-approve an incident's playbook offers with; raises when they may not."""
    if by.role not in policy.declarer_roles:
        allowed = ", ".join(sorted(policy.declarer_roles)) or "none"
        raise Forbidden(f"role {by.role!r} may not declare an incident; declarer roles: {allowed}")
    if not playbook_id:
        raise InvalidCommand.of(FieldViolation("playbook_id", "required"))
    if playbook_id not in policy.playbooks:
        known = ", ".join(sorted(policy.playbooks)) or "none"
        raise InvalidCommand.of(FieldViolation("playbook_id", f"unknown playbook {playbook_id!r}; one of {known}"))
    limits = policy.limits_for(employee_id=by.employee_id, role=by.role)
    if limits is None:
        raise Forbidden(f"role {by.role!r} has no empowerment limits to pre-approve with")
    return limits


def reviewed_while_queued(case: Case, offer: Offer) -> bool:
    """True when a queued case's offer goes to a reviewer at once instead of waiting for someone to claim it.

    A flagged offer (budget exceeded, abuse guard) needs a reviewer whoever claims the case, so it goes up as
    it arrives: in a mass disruption nothing that needs a decision sits unseen in a queue. Any other offer
    waits for the employee who takes the case, who grants at once what her authority covers (frontline first).
    """
    return case.state is CaseState.QUEUED and not case.pending_approval_id and bool(flags(offer))


def review_request(policy: Policy, *, case: Case, offer: Offer, approval_id: str, now: datetime) -> Approval:
    """Return the system's approval request for the whole of a queued case's flagged offer (pure).

    Nobody owns the case yet, so there is no owner's share: the whole goes up, routed as for the team's first
    tier, that is to the lowest tier above it whose limits cover the offer.
    """
    routed = route(policy, owner_role=policy.tiers[0], owner_limits=None, offer=offer, usage=Usage())
    whole = split(None, Usage(), offer)
    return Approval(
        approval_id=approval_id,
        case_id=case.case_id,
        customer_id=case.customer_id,
        offer_id=offer.offer_id,
        offer_version=offer.version,
        requested_by=Actor.system(),
        owner_employee_id="",
        approver_role=routed.approver_role,
        approver_team=case.team,
        amount=offer.total,
        reasons=routed.reasons,
        note="flagged offer of a queued case: sent for review as it arrived",
        decision_due_at=policy.calendar_for(case.team).add(now, policy.approval_decision),
        escalation_level=0,
        requested_at=now,
        offer_total=offer.total,
        owner_share=whole.owner_total,
        line_minor=tuple(line.amount.amount_minor for line in whole.remainder),
        split=split_detail(whole, offer.total),
    )


def system_limits(policy: Policy) -> Limits:
    """Return the automation limit as Limits, recorded in the audit of a system authorisation."""
    limit = policy.automation.limit
    return Limits(
        role="system",
        currency=policy.currency,
        per_case=limit,
        per_day=0,
        per_month=0,
        remedy_caps=dict.fromkeys(policy.automation.remedies, limit),
    )


def approver_authority(
    policy: Policy,
    *,
    decider: Actor,
    approver_role: str,
    approver_team: str,
    requester_ids: frozenset[str],
    delegations: tuple[Delegation, ...],
    now: datetime,
) -> Authority:
    """Return the authority ``decider`` decides with; raises Forbidden when they may not decide this request.

    Their own when they hold the routed tier or a higher one in the routed team; otherwise an active delegation
    from such an approver. Delegations are looked
    up one level only (they do not cascade), and nobody decides a request they made or own, with their own
    authority or a borrowed one. Whoever decides does it within their own limits (checked by the caller).
    """
    if decider.kind is not ActorKind.EMPLOYEE:
        raise Forbidden("only an employee decides approvals")
    if decider.employee_id in requester_ids:
        raise Forbidden("nobody approves their own request")
    if may_decide(
        policy, role=decider.role, team=decider.team, approver_role=approver_role, approver_team=approver_team
    ):
        limits = policy.limits_for(employee_id=decider.employee_id, role=decider.role)
        if limits is not None:
            return Authority(decider.employee_id, decider.role, decider.team, limits)
    for delegation in delegations:
        usable = (
            delegation.delegate_employee_id == decider.employee_id
            and delegation.active(now)
            and may_decide(
                policy,
                role=delegation.role,
                team=delegation.team,
                approver_role=approver_role,
                approver_team=approver_team,
            )
        )
        if not usable:
            continue
        if delegation.delegator_employee_id in requester_ids:
            raise Forbidden("nobody approves their own request, not even through a delegate")
        limits = policy.limits_for(employee_id=delegation.delegator_employee_id, role=delegation.role)
        if limits is not None:
            return Authority(
                delegation.delegator_employee_id,
                delegation.role,
                delegation.team,
                limits,
                delegated_by=delegation.delegator_employee_id,
            )
    raise Forbidden(
        f"this request is routed to {approver_role} of team {approver_team!r} (or a higher tier), not to the caller"
    )


def may_decide(policy: Policy, *, role: str, team: str, approver_role: str, approver_team: str) -> bool:
    """True when ``role`` of ``team`` is the routed tier of the routed team or a higher tier of that team.

    Teams bound authority as they bound visibility: a request is decided inside the team whose case it is.
    """
    rank = policy.rank(role)
    return team == approver_team and rank >= 0 and rank >= policy.rank(approver_role)


def validate_delegation(
    *, delegator: Actor, delegate_employee_id: str, starts_at: datetime, ends_at: datetime, reason: str
) -> None:
    """Return when the delegation is well formed; raises InvalidCommand naming every bad field."""
    bad = []
    if not delegate_employee_id:
        bad.append(FieldViolation("delegate_employee_id", "required"))
    elif delegate_employee_id == delegator.employee_id:
        bad.append(FieldViolation("delegate_employee_id", "cannot delegate to oneself"))
    if ends_at <= starts_at:
        bad.append(FieldViolation("ends_at", "must be after starts_at"))
    if not reason.strip():
        bad.append(FieldViolation("reason", "required"))
    if bad:
        raise InvalidCommand.of(*bad)


def reduce_lines(lines: tuple[OfferLine, ...], approved: Money) -> tuple[OfferLine, ...]:
    """Return ``lines`` reduced to sum to ``approved``: only goodwill lines are scaled down (integer shares, the
    rounding remainder to the largest fractions); statutory and reimbursement lines keep their amounts.

    Raises InvalidCommand when ``approved`` is below what the protected lines alone come to.
    """
    total = sum(line.amount.amount_minor for line in lines)
    if approved.amount_minor >= total:
        return lines
    fixed = sum(line.amount.amount_minor for line in lines if line.kind in PROTECTED_KINDS)
    if approved.amount_minor < fixed:
        raise InvalidCommand.of(
            FieldViolation(
                "approved_amount",
                f"{approved.amount_minor} is below the {fixed} of statutory compensation and reimbursements, "
                "which are never reduced",
            )
        )
    reducible = [i for i, line in enumerate(lines) if line.kind not in PROTECTED_KINDS and line.amount.amount_minor]
    goodwill = sum(lines[i].amount.amount_minor for i in reducible)
    target = approved.amount_minor - fixed
    shares = {i: lines[i].amount.amount_minor * target // goodwill for i in reducible}
    # The rounding remainder (fewer units than lines) goes a unit each to the largest fractional shares, so
    # no line ever grows above its own amount.
    by_fraction = sorted(reducible, key=lambda i: (-(lines[i].amount.amount_minor * target % goodwill), i))
    for i in by_fraction[: target - sum(shares.values())]:
        shares[i] += 1
    return tuple(
        replace(line, amount=Money(shares[i], line.amount.currency)) if i in shares else line
        for i, line in enumerate(lines)
    )


def periods(now: datetime, timezone: str) -> tuple[date, date]:
    """Return the (day, month start) ``now`` falls in, on the policy calendar's wall clock."""
    local = now.astimezone(ZoneInfo(timezone)).date()
    return local, local.replace(day=1)
