"""The offer: a pure, deterministic function of (case facts, customer history, policy, now).

``compute_offer`` returns the itemised offer; the rounding rules are in ``domain/policy.py``'s docstring.
The parts, in the order the lines appear:

1. reimbursement of each distinct reported cost (in the case's currency), cut to the policy's per-kind cap; two
   reports of one cost (the same receipt reference, or the same kind and amount) are reimbursed once;
2. statutory lines (a regulation's fixed amounts): separate, never capped or scaled;
3. the goodwill part: a gesture sized by severity and adjustments, shaped by the customer's request
   (granted plus a small extra, or the closest allowed alternative), capped per case and by order value,
   never below the floor for a real failure;
4. the apology note (zero cost, always).

A case of a declared incident (``facts.playbook_id``) is offered its playbook instead of parts 1 and 3 when the
playbook's fixed lines give at least what those parts would (``choose_playbook``): the statutory lines and the
apology stay, and ``Offer.playbook_id`` says it is the playbook (escalation pre-approves those). A playbook pays
fixed amounts whatever was reported, so the abuse and repeat guards do not hold it for review.

A re-quote then deducts what earlier authorisations of the case granted (``deduct_granted``): the offer's lines
are only what is new, and ``granted_before`` says what was already given. Then the abuse guard and the repeat
guard (review flags) and the team budget (budget flag, on what is new); none of them changes the amounts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.common.money import scale
from services.common.texts import CustomerText, text
from services.compensation.domain.model import (
    Avoidability,
    CaseFacts,
    Category,
    CostItem,
    CostKind,
    CustomerHistory,
    GrantedLine,
    LineItem,
    Money,
    Offer,
    OfferAdjustment,
    PersonalGesture,
    Reason,
    RemedyKind,
    RequestOutcome,
)
from services.compensation.domain.policy import GOODWILL_KINDS, Playbook, Policy, StatutoryRule

FULL_BP = 10_000


def compute_offer(
    *,
    facts: CaseFacts,
    history: CustomerHistory,
    policy: Policy,
    now: datetime,
    team_spent_minor: int = 0,
    granted: Sequence[GrantedLine] = (),
) -> Offer:
    """Return the offer for ``facts`` under ``policy`` at ``now``; the same inputs always give the same offer.

    ``team_spent_minor`` is what the owning team has had authorised this month in the case's currency;
    ``granted`` the lines earlier authorisations of the case granted (empty for a first offer).
    """
    currency = case_currency(facts, policy)
    reviews: list[Reason] = []
    lines: list[LineItem] = []
    outcome = None
    playbook = None
    if currency not in policy.currencies:
        reviews.append(Reason("currency_not_priced", f"the policy has no amounts in {currency}"))
    else:
        reimbursed = _reimbursements(facts, policy, currency, reviews)
        statutory = _statutory_lines(facts, policy, currency)
        goodwill = size_goodwill(facts, policy, currency, now)
        goodwill_lines, outcome = _shape_by_request(facts, policy, currency, goodwill)
        normal = reimbursed + goodwill_lines
        playbook, reviews_of_playbook = choose_playbook(facts, policy, currency, normal)
        reviews += reviews_of_playbook
        if playbook is None:
            lines += reimbursed + statutory + goodwill_lines
        else:
            lines += statutory + playbook_lines(facts, playbook, currency, normal)
            # A request is answered by the playbook, which gives at least as much, in its own kinds.
            outcome = RequestOutcome.ALTERNATIVE_OFFERED if outcome is not None else None
        lines = apply_swaps(lines, facts, policy)
        lines += gesture_lines(facts.gestures, policy, currency, reviews)
    lines.append(_apology(currency))
    new_lines, granted_before = deduct_granted(lines, granted, currency)
    granted_before = receipts_still_due(granted_before, lines)
    reviews += _granted_currency_reasons(granted, currency)
    if playbook is None:
        reviews += _abuse_reasons(facts, history, policy)
        reviews += _repeat_reference_reasons(history, policy)
    lines = list(new_lines)
    total = Money(sum(line.amount.amount_minor for line in lines), currency)
    budget = policy.budget(facts.owning_team, currency)
    return Offer(
        case_id=facts.case_id,
        customer_id=facts.customer_id,
        policy_version=policy.version,
        line_items=tuple(lines),
        total=total,
        proposed_at=now,
        needs_review=bool(reviews),
        review_reasons=tuple(reviews),
        budget_exceeded=budget is not None and team_spent_minor + total.amount_minor > budget,
        request_outcome=outcome,
        granted_before=granted_before,
        playbook_id=playbook.playbook_id if playbook else "",
    )


# ------------------------------------------------------------------------------- the frontline's own remedy


def adjusted(facts: CaseFacts, adjustment: OfferAdjustment) -> CaseFacts:
    """Return the facts with the frontline's adjustment applied: a swap of a kind replaces an earlier swap of the
    same kind, gestures add up, late costs are reported costs like any other, and a receipt received marks every
    reported cost of its kind as having one."""
    swaps = {swap.from_kind: swap for swap in facts.swaps}
    swaps.update({swap.from_kind: swap for swap in adjustment.swaps})
    costs = list(facts.reported_costs) + list(adjustment.late_costs)
    for receipt in adjustment.receipts:
        costs = [
            replace(cost, has_receipt=True, receipt_reference=cost.receipt_reference or receipt.receipt_reference)
            if (cost.kind or CostKind.OTHER) is (receipt.cost_kind or CostKind.OTHER)
            else cost
            for cost in costs
        ]
    return replace(
        facts,
        swaps=tuple(swaps.values()),
        gestures=facts.gestures + adjustment.gestures,
        reported_costs=tuple(costs),
    )


def apply_swaps(lines: Sequence[LineItem], facts: CaseFacts, policy: Policy) -> list[LineItem]:
    """Return ``lines`` with each goodwill line of a swapped kind offered in the kind the customer prefers, when the
    category allows that kind (otherwise kept, and staff see why). The law's lines, repayments and the apology
    keep their kinds."""
    wanted = {swap.from_kind: swap.to_kind for swap in facts.swaps if swap.from_kind and swap.to_kind}
    allowed = allowed_kinds(policy, facts.category)
    out = []
    for line in lines:
        to_kind = wanted.get(line.kind)
        if to_kind is None or line.kind not in GOODWILL_KINDS:
            out.append(line)
        elif to_kind in allowed:
            internal = f"{line.internal_reason}; swapped from {line.kind.value} to {to_kind.value} at the frontline"
            swapped = text("offer.swapped", offered=kind_words(to_kind))
            out.append(replace(line, kind=to_kind, internal_reason=internal, customer_text=swapped))
        else:
            category = (facts.category or Category.OTHER).value
            internal = f"{line.internal_reason}; a swap to {to_kind.value} is not offered for {category}: kept"
            out.append(replace(line, internal_reason=internal))
    return out


def gesture_lines(
    gestures: Sequence[PersonalGesture], policy: Policy, currency: str, reviews: list[Reason]
) -> list[LineItem]:
    """Return a line per personal gesture the frontline added, all of them together within the policy's gesture
    cap (a gesture above what is left is cut to it; one in another currency goes to review, unpaid)."""
    left = policy.gesture_cap.get(currency, policy.case_cap[currency])
    lines = []
    for i, gesture in enumerate(gestures):
        if gesture.amount.currency != currency:
            reviews.append(Reason("gesture_currency_mismatch", f"personal gesture {i} is in {gesture.amount.currency}"))
            continue
        amount = min(gesture.amount.amount_minor, left)
        left -= amount
        internal = f"personal gesture by {gesture.employee_id or 'the owner'}: {gesture.reason}"
        if amount < gesture.amount.amount_minor:
            internal += f"; cut to the gesture cap ({gesture.amount.amount_minor - amount} not given)"
        if amount <= 0:
            continue
        lines.append(
            LineItem(
                kind=RemedyKind.GIFT,
                amount=Money(amount, currency),
                rule_id="frontline.gesture",
                internal_reason=internal,
                customer_text=text("offer.personal_gesture", gesture=gesture.description),
            )
        )
    return lines


def receipts_still_due(granted_before: Sequence[LineItem], lines: Sequence[LineItem]) -> tuple[LineItem, ...]:
    """Return what was granted before, each repayment saying whether it still waits for its receipt (a receipt
    received since clears it, though nothing new is offered for it)."""
    due = {line.cost_kind for line in lines if line.kind is RemedyKind.REIMBURSEMENT and line.needs_receipt}
    return tuple(
        replace(line, needs_receipt=line.kind is RemedyKind.REIMBURSEMENT and line.cost_kind in due)
        for line in granted_before
    )


def case_currency(facts: CaseFacts, policy: Policy) -> str:
    """Return the currency of the case: the order's, else the customer value's, else the first cost's."""
    for money in (facts.order_value, facts.customer_value, *(c.amount for c in facts.reported_costs)):
        if money is not None:
            return money.currency
    return policy.currencies[0]


def round_up(amount_minor: int, step: int) -> int:
    """Return ``amount_minor`` rounded up to a multiple of ``step`` (integers only)."""
    return -(-amount_minor // step) * step


# ------------------------------------------------------------------------------------ distinct costs


@dataclass(frozen=True)
class DistinctCost:
    """A cost counted once: its first report (``index`` in the reported costs) and the reports that repeat it."""

    cost: CostItem
    index: int
    # (index, why) of each report dropped as the same cost, in report order.
    duplicates: tuple[tuple[int, str], ...] = ()


def _receipt_key(cost: CostItem) -> str:
    # Customers type receipt numbers by hand: case and surrounding blanks do not make another receipt.
    return cost.receipt_reference.strip().casefold()


def _cost_keys(cost: CostItem) -> list[tuple]:
    if cost.amount.amount_minor <= 0:
        return []  # nothing to repay: never merged, so a zero report cannot swallow a real cost
    keys: list[tuple] = [("kind_amount", cost.kind or CostKind.OTHER, cost.amount.amount_minor, cost.amount.currency)]
    if _receipt_key(cost):
        keys.append(("receipt", _receipt_key(cost)))
    return keys


def _why_same(kept: CostItem, dropped: CostItem) -> str:
    if _receipt_key(kept) and _receipt_key(kept) == _receipt_key(dropped):
        return f"same receipt reference {dropped.receipt_reference.strip()!r}"
    if _cost_keys(kept)[0] == _cost_keys(dropped)[0]:
        return "same kind and amount"
    return "linked to it by another report of the same cost"


def distinct_costs(costs: Sequence[CostItem]) -> tuple[DistinctCost, ...]:
    """Return the reported costs counted once each, in report order.

    Two costs are one when they share a non-empty receipt reference, or have the same kind (unset reads as
    other), amount and currency; being one cost is transitive. The first report stands for the cost (its
    amount is repaid); it has a receipt when any report of it has one.
    """
    root = list(range(len(costs)))

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    first: dict[tuple, int] = {}
    for i, cost in enumerate(costs):
        for key in _cost_keys(cost):
            if key in first:
                a, b = find(first[key]), find(i)
                root[max(a, b)] = min(a, b)  # the earliest report stays the root
            else:
                first[key] = i
    members: dict[int, list[int]] = {}
    for i in range(len(costs)):
        members.setdefault(find(i), []).append(i)
    result = []
    for head, group in members.items():
        kept = costs[head]
        reports = [costs[i] for i in group]
        merged = replace(
            kept,
            has_receipt=any(c.has_receipt for c in reports),
            receipt_reference=next((c.receipt_reference for c in reports if c.receipt_reference), ""),
            description=next((c.description for c in reports if c.description), ""),
        )
        dropped = tuple((i, _why_same(kept, costs[i])) for i in group[1:])
        result.append(DistinctCost(merged, head, dropped))
    return tuple(result)


# ------------------------------------------------------------------------------------ reimbursement


def _reimbursements(facts: CaseFacts, policy: Policy, currency: str, reviews: list[Reason]) -> list[LineItem]:
    lines = []
    caps = policy.reimbursement_caps[currency]
    threshold = policy.receipt_threshold[currency]
    for distinct in distinct_costs(facts.reported_costs):
        i, cost = distinct.index, distinct.cost
        if cost.amount.currency != currency:
            # Never converted: a human decides how to repay a cost in another currency.
            reviews.append(Reason("cost_currency_mismatch", f"reported cost {i} is in {cost.amount.currency}"))
            continue
        if cost.amount.amount_minor <= 0:
            continue
        kind = cost.kind or CostKind.OTHER
        cap = caps[kind]
        amount = min(cost.amount.amount_minor, cap)
        needs_receipt = not cost.has_receipt and cost.amount.amount_minor > threshold
        internal = f"reported {cost.amount.amount_minor} {currency}, {kind.value} cap {cap}"
        if amount < cost.amount.amount_minor:
            internal += f": cut to the cap ({cost.amount.amount_minor - amount} not repaid)"
        if needs_receipt:
            internal += f"; above the receipt threshold {threshold} without a receipt"
        if distinct.duplicates:
            # Staff only: the customer is repaid the cost once and needs no account of our bookkeeping.
            dropped = ", ".join(f"reported cost {j} ({why})" for j, why in distinct.duplicates)
            internal += f"; reported cost {i} repaid once, duplicates dropped: {dropped}"
        template = "offer.reimbursement_receipt" if needs_receipt else "offer.reimbursement"
        explanation = text(template, cost=kind_words(kind), amount=Money(amount, currency))
        lines.append(
            LineItem(
                kind=RemedyKind.REIMBURSEMENT,
                amount=Money(amount, currency),
                rule_id=f"reimbursement.{kind.value}",
                internal_reason=internal,
                customer_text=explanation,
                needs_receipt=needs_receipt,
                cost_kind=kind,
            )
        )
    return lines


# ------------------------------------------------------------------------------------------ statutory


def _statutory_lines(facts: CaseFacts, policy: Policy, currency: str) -> list[LineItem]:
    lines = []
    for rule in policy.statutory:
        if not statutory_applies(rule, facts):
            continue
        amount = statutory_amount(rule, facts, currency)
        if amount <= 0:
            continue
        lines.append(
            LineItem(
                kind=RemedyKind.STATUTORY_COMPENSATION,
                amount=Money(amount, currency),
                rule_id=rule.rule_id,
                internal_reason=f"statutory amount for {rule.category.value} (order value band); never capped",
                customer_text=rule.customer_text,
            )
        )
    return lines


def statutory_applies(rule: StatutoryRule, facts: CaseFacts) -> bool:
    """True when the regulation behind ``rule`` gives the customer its fixed amount for this case."""
    if facts.category != rule.category:
        return False
    if rule.min_severity is not None and (facts.severity is None or facts.severity < rule.min_severity):
        return False
    return not (rule.excluded_when_unavoidable and facts.avoidability is Avoidability.UNAVOIDABLE)


def statutory_amount(rule: StatutoryRule, facts: CaseFacts, currency: str) -> int:
    """Return the fixed amount of the band the order value falls in (the first band without an order value)."""
    bands = rule.bands[currency]
    order = facts.order_value.amount_minor if facts.order_value and facts.order_value.currency == currency else 0
    amount = bands[0].amount_minor
    for band in bands:
        if order >= band.from_minor:
            amount = band.amount_minor
    return amount


# ------------------------------------------------------------------------------------------- goodwill


@dataclass(frozen=True)
class Adjustment:
    """One reason the gesture grows, in basis points of the base."""

    code: str
    bp: int
    detail: str


@dataclass(frozen=True)
class GoodwillSize:
    """The gesture and the room it lives in: ``floor <= amount <= room`` for a real failure."""

    amount: int
    room: int
    floor: int
    base: int
    raw: int
    adjustments: tuple[Adjustment, ...]
    cap_detail: str
    real_failure: bool

    def describe(self) -> str:
        """Return the staff-facing arithmetic behind the gesture."""
        adj = ", ".join(f"{a.detail} +{a.bp} bp" for a in self.adjustments if a.bp) or "no adjustments"
        return f"base {self.base}; {adj}; = {self.raw} rounded up; {self.cap_detail}; floor {self.floor}"


def _value_tier(facts: CaseFacts, policy: Policy, currency: str) -> Adjustment:
    tiers = policy.goodwill.value_tiers[currency]
    value = (
        facts.customer_value.amount_minor if facts.customer_value and facts.customer_value.currency == currency else 0
    )
    tier = tiers[0]
    for candidate in tiers:
        if value >= candidate.floor_minor:
            tier = candidate
    return Adjustment("value_tier", tier.bp, f"value tier {tier.name}")


def _repeat(facts: CaseFacts, policy: Policy, currency: str) -> Adjustment:
    # Higher, not lower: a repeat failure has broken the paradox, so it takes a bigger gesture to hold on.
    priors = min(max(facts.prior_failure_count, 0), policy.goodwill.repeat_max_priors)
    return Adjustment("repeat_failure", priors * policy.goodwill.repeat_bp_per_prior, f"{priors} prior failure(s)")


def _avoidable(facts: CaseFacts, policy: Policy, currency: str) -> Adjustment:
    avoidable = facts.avoidability is Avoidability.AVOIDABLE
    return Adjustment("avoidable", policy.goodwill.avoidable_bp if avoidable else 0, "avoidable")


def _waiting(facts: CaseFacts, policy: Policy, currency: str, now: datetime) -> Adjustment:
    g = policy.goodwill
    hours = max(now - facts.failure_at - g.waiting_grace, timedelta(0)) // timedelta(hours=1)
    return Adjustment("waiting", min(hours * g.waiting_bp_per_hour, g.waiting_max_bp), f"{hours} h waited past grace")


def _sla(facts: CaseFacts, policy: Policy, currency: str) -> Adjustment:
    breaches = min(max(facts.sla_breaches, 0), policy.goodwill.sla_breach_max)
    return Adjustment("sla_breached", breaches * policy.goodwill.sla_breach_bp, f"{breaches} SLA breach(es)")


def _reopened(facts: CaseFacts, policy: Policy, currency: str) -> Adjustment:
    reopens = min(max(facts.reopen_count, 0), policy.goodwill.reopen_max)
    return Adjustment("reopened", reopens * policy.goodwill.reopen_bp, f"{reopens} reopening(s)")


# The adjustments, each a small pure function returning its basis points (a dispatch table, not a ladder).
ADJUSTMENTS: tuple[Callable[[CaseFacts, Policy, str], Adjustment], ...] = (
    _value_tier,
    _repeat,
    _avoidable,
    _sla,
    _reopened,
)


def goodwill_room(facts: CaseFacts, policy: Policy, currency: str) -> tuple[int, str]:
    """Return the most goodwill this case may get and how that cap was reached."""
    case_cap = policy.case_cap[currency]
    if facts.order_value is None or facts.order_value.currency != currency:
        return case_cap, f"cap per case {case_cap}"
    # Never below the floor: a cheap order must still leave room for the floor (rounding rule 4).
    share = max(scale(facts.order_value.amount_minor, policy.order_share_bp), policy.floor[currency])
    return min(case_cap, share), f"cap min(per case {case_cap}, order share {share})"


def size_goodwill(facts: CaseFacts, policy: Policy, currency: str, now: datetime) -> GoodwillSize:
    """Return the goodwill gesture for the case, with its room under the caps."""
    room, cap_detail = goodwill_room(facts, policy, currency)
    real = facts.severity is not None
    floor = policy.floor[currency] if real else 0
    if not real:
        return GoodwillSize(0, room, 0, 0, 0, (), cap_detail, real_failure=False)
    base = policy.goodwill.base[currency][facts.severity]
    adjustments = (*(f(facts, policy, currency) for f in ADJUSTMENTS), _waiting(facts, policy, currency, now))
    raw = scale(base, FULL_BP + sum(a.bp for a in adjustments))
    rounded = round_up(raw, policy.goodwill.round_up_to[currency])
    amount = min(max(rounded, floor), room)
    return GoodwillSize(amount, room, floor, base, raw, adjustments, cap_detail, real_failure=True)


# ------------------------------------------------------------------------------- the customer's request


def allowed_kinds(policy: Policy, category: Category | None) -> tuple[RemedyKind, ...]:
    """Return the goodwill kinds the policy allows for ``category`` (unknown category: as ``other``)."""
    return policy.remedies[category or Category.OTHER]


def preferred_kind(policy: Policy, category: Category | None) -> RemedyKind:
    """Return the kind a gesture takes when the customer asked for nothing in particular."""
    return next(k for k in allowed_kinds(policy, category) if k is not RemedyKind.APOLOGY_NOTE)


def closest_alternative(policy: Policy, category: Category | None, requested: RemedyKind) -> RemedyKind:
    """Return the allowed kind nearest to ``requested`` (the policy's alternatives, else the preferred kind)."""
    allowed = allowed_kinds(policy, category)
    for kind in policy.alternatives.get(requested, ()):
        if kind in allowed and kind is not RemedyKind.APOLOGY_NOTE:
            return kind
    return preferred_kind(policy, category)


def kind_words(kind: RemedyKind | CostKind) -> CustomerText:
    """Return the customer's words for a remedy or cost kind (a template of its own, "remedy_kind.voucher")."""
    prefix = "remedy_kind" if isinstance(kind, RemedyKind) else "cost_kind"
    return text(f"{prefix}.{kind.value}")


def _line(
    kind: RemedyKind, amount: int, currency: str, rule_id: str, internal: str, explanation: CustomerText
) -> LineItem:
    return LineItem(kind, Money(amount, currency), rule_id, internal, explanation)


def _extra(policy: Policy, currency: str, granted: int, room_left: int, at_least: int = 0) -> int:
    extra = max(scale(granted, policy.request_extra_bp), policy.request_extra_min[currency], at_least)
    return max(min(extra, room_left), 0)


def _shape_by_request(
    facts: CaseFacts, policy: Policy, currency: str, goodwill: GoodwillSize
) -> tuple[list[LineItem], RequestOutcome | None]:
    request = facts.customer_request
    preferred = preferred_kind(policy, facts.category)
    gesture_rule = f"goodwill.base.{facts.severity.value}" if facts.severity else "goodwill.base.none"
    gesture_why = goodwill.describe()
    sorry = text("offer.gesture_and_wait" if facts.sla_breaches or facts.reopen_count else "offer.gesture")
    amount_asked = None
    if request is not None and request.amount is not None and request.amount.currency == currency:
        amount_asked = request.amount.amount_minor
    kind_asked = request.remedy_kind if request is not None else None
    if kind_asked is None and amount_asked is None:
        # No structured request (none, or words only): the gesture in the category's preferred kind.
        if goodwill.amount <= 0:
            return [], None
        return [_line(preferred, goodwill.amount, currency, gesture_rule, gesture_why, sorry)], None
    kind = kind_asked or preferred
    room = goodwill.room
    if kind is RemedyKind.APOLOGY_NOTE:
        lines = [_line(preferred, goodwill.amount, currency, gesture_rule, gesture_why, sorry)]
        return [ln for ln in lines if ln.amount.amount_minor > 0], RequestOutcome.GRANTED
    allowed = kind in allowed_kinds(policy, facts.category)
    if not allowed:
        alternative = closest_alternative(policy, facts.category, kind)
        amount = min(max(amount_asked or 0, goodwill.amount), room)
        why = f"{kind.value} is not offered for {(facts.category or Category.OTHER).value}; closest allowed is "
        why += f"{alternative.value}; {gesture_why}"
        explanation = text("offer.request_alternative", asked=kind_words(kind), offered=kind_words(alternative))
        return [_line(alternative, amount, currency, "request.alternative", why, explanation)], (
            RequestOutcome.ALTERNATIVE_OFFERED
        )
    if amount_asked is None:
        # A kind without an amount: the gesture in the kind they asked for, plus the small extra.
        extra = _extra(policy, currency, goodwill.amount, room - goodwill.amount)
        lines = [
            _line(kind, goodwill.amount, currency, "request.granted", f"requested kind; {gesture_why}", sorry),
            _line(preferred, extra, currency, "request.extra", f"extra on a granted request ({policy.request_extra_bp}"
                  " bp, at least the minimum, within the cap)", text("offer.request_extra")),
        ]  # fmt: skip
        return [ln for ln in lines if ln.amount.amount_minor > 0], RequestOutcome.GRANTED
    if amount_asked > room:
        why = f"asked {amount_asked}, above the room {room} ({goodwill.cap_detail})"
        explanation = text("offer.request_capped", offered=kind_words(kind))
        return [_line(kind, room, currency, "request.capped", why, explanation)], RequestOutcome.ALTERNATIVE_OFFERED
    # Within policy: grant it, plus a small extra that also tops it up to at least the gesture.
    extra = _extra(policy, currency, amount_asked, room - amount_asked, at_least=goodwill.amount - amount_asked)
    lines = [
        _line(kind, amount_asked, currency, "request.granted", f"asked {amount_asked}, within the room {room}",
              text("offer.request_granted")),
        _line(preferred, extra, currency, "request.extra", f"extra on a granted request; gesture was {goodwill.amount}",
              text("offer.request_extra")),
    ]  # fmt: skip
    return [ln for ln in lines if ln.amount.amount_minor > 0], RequestOutcome.GRANTED


# ------------------------------------------------------------------------------------------ playbooks


def choose_playbook(
    facts: CaseFacts, policy: Policy, currency: str, normal: Sequence[LineItem]
) -> tuple[Playbook | None, list[Reason]]:
    """Return the case's playbook when it gives at least the ``normal`` reimbursement and goodwill lines (else None),
    with the review reasons it raises (a playbook this policy version does not know)."""
    if not facts.playbook_id:
        return None, []
    playbook = policy.playbooks.get(facts.playbook_id)
    if playbook is None:
        # Escalation declared a playbook this version lacks (renamed, or not deployed yet): a human looks first.
        detail = (
            f"incident {facts.incident_id or '(none)'} names playbook {facts.playbook_id!r}, which compensation "
            f"policy {policy.version} does not have; the normal rules apply"
        )
        return None, [Reason("playbook_unknown", detail)]
    # The case needs more than the playbook (large reported costs, say): the normal offer, never less.
    if playbook.total(currency) < sum(line.amount.amount_minor for line in normal):
        return None, []
    return playbook, []


def playbook_lines(facts: CaseFacts, playbook: Playbook, currency: str, normal: Sequence[LineItem]) -> list[LineItem]:
    """Return the playbook's fixed lines in ``currency`` (the normal lines they replace, for staff)."""
    replaced = sum(line.amount.amount_minor for line in normal)
    why = (
        f"incident {facts.incident_id or '(none)'} playbook {playbook.playbook_id}: a fixed amount; the playbook "
        f"gives {playbook.total(currency)}, the normal reimbursement and goodwill {replaced}"
    )
    return [
        LineItem(
            kind=line.kind,
            amount=Money(line.amounts[currency], currency),
            rule_id=f"playbook.{playbook.playbook_id}.{i}",
            internal_reason=why,
            customer_text=line.customer_text,
            cost_kind=line.cost_kind,
        )
        for i, line in enumerate(playbook.lines, start=1)
    ]


# ------------------------------------------------------------------------------------- apology, abuse


def _apology(currency: str) -> LineItem:
    return _line(
        RemedyKind.APOLOGY_NOTE,
        0,
        currency,
        "apology.always",
        "an apology is always part of the offer",
        text("offer.apology"),
    )


def unverified_claims(facts: CaseFacts) -> int:
    """Return how many distinct costs of this case were reported without a receipt (a cost reported twice is one)."""
    costs = (d.cost for d in distinct_costs(facts.reported_costs))
    return sum(1 for cost in costs if not cost.has_receipt and cost.amount.amount_minor > 0)


def _abuse_reasons(facts: CaseFacts, history: CustomerHistory, policy: Policy) -> list[Reason]:
    claims = history.unverified_claims_in_window + unverified_claims(facts)
    if claims <= policy.abuse_max_unverified:
        return []
    detail = (
        f"{claims} costs without receipt in {policy.abuse_window.days} days "
        f"(limit {policy.abuse_max_unverified}); a human checks before paying"
    )
    return [Reason("unverified_claims", detail)]


def _repeat_reference_reasons(history: CustomerHistory, policy: Policy) -> list[Reason]:
    if not history.repeat_reference_cases:
        return []
    cases = ", ".join(history.repeat_reference_cases)
    detail = (
        f"the same reference was already compensated on case(s) {cases} within {policy.abuse_window.days} days; "
        "a human checks before paying it again"
    )
    return [Reason("repeat_reference", detail)]


# ------------------------------------------------------------------------------- what was granted before

Bucket = tuple[RemedyKind, CostKind | None]


def bucket_of(kind: RemedyKind, cost_kind: CostKind | None) -> Bucket:
    """Return the bucket a line is deducted in: its remedy kind, and its cost kind for a reimbursement."""
    return kind, cost_kind if kind is RemedyKind.REIMBURSEMENT else None


def summarise_granted(granted: Sequence[GrantedLine], currency: str) -> tuple[LineItem, ...]:
    """Return the granted lines in ``currency`` summed per bucket, buckets in order of first grant (zeros left out)."""
    sums: dict[Bucket, int] = {}
    for line in granted:
        if line.amount.currency == currency:
            bucket = bucket_of(line.kind, line.cost_kind)
            sums[bucket] = sums.get(bucket, 0) + line.amount.amount_minor
    return tuple(
        LineItem(
            kind=kind,
            amount=Money(amount, currency),
            rule_id=f"granted_before.{kind.value}" + (f".{cost_kind.value}" if cost_kind else ""),
            internal_reason="granted by earlier authorisations of the case; deducted from this offer",
            customer_text=text("offer.granted_before"),
            cost_kind=cost_kind,
        )
        for (kind, cost_kind), amount in sums.items()
        if amount > 0
    )


def deduct_granted(
    lines: Sequence[LineItem], granted: Sequence[GrantedLine], currency: str
) -> tuple[tuple[LineItem, ...], tuple[LineItem, ...]]:
    """Return (what is new of ``lines``, what was granted before per bucket).

    What a bucket was granted is taken off its lines in order, never below zero per line; a line left at
    zero is dropped (the apology note stays). A bucket granted more than it is now due keeps the excess:
    nothing is clawed back, and no other bucket pays for it. Lines granted in another currency are not
    deducted (``compute_offer`` sends the offer for review instead).
    """
    before = summarise_granted(granted, currency)
    left = {bucket_of(line.kind, line.cost_kind): line.amount.amount_minor for line in before}
    new = []
    for line in lines:
        bucket = bucket_of(line.kind, line.cost_kind)
        taken = min(left.get(bucket, 0), line.amount.amount_minor)
        if taken <= 0:
            new.append(line)
            continue
        left[bucket] -= taken
        remaining = line.amount.amount_minor - taken
        if remaining == 0:
            continue
        internal = f"{line.internal_reason}; {taken} of {line.amount.amount_minor} granted before, {remaining} new"
        new.append(replace(line, amount=Money(remaining, currency), internal_reason=internal))
    return tuple(new), before


def _granted_currency_reasons(granted: Sequence[GrantedLine], currency: str) -> list[Reason]:
    other = sorted({line.amount.currency for line in granted if line.amount.currency != currency})
    if not other:
        return []
    # Never converted: a human decides what an earlier grant in another currency is worth now.
    detail = f"earlier authorisations granted amounts in {', '.join(other)}, not {currency}; not deducted"
    return [Reason("granted_currency_mismatch", detail)]


def granted_of(lines: Sequence[LineItem]) -> tuple[GrantedLine, ...]:
    """Return what authorised ``lines`` granted (kind, cost kind, amount), zero lines such as the apology left out."""
    return tuple(
        GrantedLine(kind=line.kind, amount=line.amount, cost_kind=line.cost_kind)
        for line in lines
        if line.amount.amount_minor > 0
    )


def granted_within(lines: Sequence[LineItem], amount: Money) -> tuple[GrantedLine, ...]:
    """Return ``lines`` taken in order up to ``amount`` (for a grant whose lines were not recorded, only its total).

    An approver may have cut such a grant without saying which line: taking the lines in order keeps the total
    exact, so the ledger never deducts more than was granted.
    """
    left = amount.amount_minor
    taken = []
    for line in granted_of(lines):
        if left <= 0:
            break
        if line.amount.currency != amount.currency:
            continue
        part = min(line.amount.amount_minor, left)
        taken.append(replace(line, amount=Money(part, amount.currency)))
        left -= part
    return tuple(taken)
