"""The frontline's own remedy: what an owner may change in an offer before compensation re-quotes it (pure).

A swap, a personal gesture, a late-reported cost and a receipt received are checked here, each bad field named
at once; the amounts then follow compensation's policy (caps, explanations) and escalation's limits as any
re-quote does. A swap is for an offer nobody authorised yet: once a kind was granted, swapping it would pay both.
"""

from __future__ import annotations

from collections.abc import Collection

from services.escalation.domain.errors import FieldViolation, IllegalTransition, InvalidCommand, LimitExceeded
from services.escalation.domain.model import Case, CaseState, CostKind, Money, OfferAdjustment, RemedyKind

DESCRIPTION_MAX = 200
REASON_MAX = 2_000
# Kinds a swap may name: the goodwill kinds (the law's amount, a repayment and the apology have their own rules).
SWAPPABLE = frozenset(RemedyKind) - {
    RemedyKind.STATUTORY_COMPENSATION,
    RemedyKind.REIMBURSEMENT,
    RemedyKind.APOLOGY_NOTE,
}
# While an approval is in flight the approver decides on the offer as it is; after resolution it is closed.
ADJUSTABLE = frozenset({CaseState.OFFER_PENDING, CaseState.OFFER_READY, CaseState.WAITING_ON_CUSTOMER})


def check(
    case: Case,
    adjustment: OfferAdjustment,
    *,
    reason: str,
    currency: str,
    authorized: bool,
    receipts_due: Collection[CostKind],
    most_per_case: Money | None,
) -> None:
    """Return when the owner may make ``adjustment`` to the case's current offer (in ``currency``); raises
    IllegalTransition for the wrong moment, LimitExceeded for a gesture above any authority (``most_per_case``,
    the top tier's per-case limit in the offer's currency) and InvalidCommand naming every bad field otherwise.

    ``authorized`` says whether any part of the offer was authorised; ``receipts_due`` are the cost kinds whose
    repayment waits for a receipt.
    """
    if case.state not in ADJUSTABLE:
        why = "an approval is in flight" if case.state is CaseState.AWAITING_APPROVAL else f"it is {case.state.value}"
        raise IllegalTransition.of(case.case_id, f"the offer cannot be adjusted now: {why}")
    if adjustment.swaps and authorized:
        raise IllegalTransition.of(
            case.case_id, "the offer is authorised already: a swap would pay both kinds (add a gesture instead)"
        )
    problems = _field_problems(adjustment, reason=reason, currency=currency, receipts_due=receipts_due)
    if problems:
        raise InvalidCommand.of(*problems)
    if most_per_case is not None:
        above = [
            f"gestures[{i}].amount {g.amount.amount_minor} {currency} is above what any authority may grant per case "
            f"({most_per_case.amount_minor} {currency})"
            for i, g in enumerate(adjustment.gestures)
            if g.amount.amount_minor > most_per_case.amount_minor
        ]
        if above:
            raise LimitExceeded.of(f"case/{case.case_id}", *above)


def _field_problems(
    adjustment: OfferAdjustment, *, reason: str, currency: str, receipts_due: Collection[CostKind]
) -> list[FieldViolation]:
    problems = []
    if not reason.strip():
        problems.append(FieldViolation("reason", "required: why the offer is adjusted (the audit trail says it)"))
    elif len(reason) > REASON_MAX:
        problems.append(FieldViolation("reason", f"{len(reason):,} characters; at most {REASON_MAX:,}"))
    if adjustment.empty:
        problems.append(FieldViolation("adjustment", "required: a swap, a gesture, a late cost or a receipt"))
    for i, swap in enumerate(adjustment.swaps):
        for name, kind in (("from_kind", swap.from_kind), ("to_kind", swap.to_kind)):
            if kind is None or kind not in SWAPPABLE:
                got = kind.value if kind else "unspecified"
                problems.append(FieldViolation(f"adjustment.swaps[{i}].{name}", f"{got}: not a goodwill kind"))
        if swap.from_kind is not None and swap.from_kind is swap.to_kind:
            problems.append(FieldViolation(f"adjustment.swaps[{i}].to_kind", "the same kind: nothing to swap"))
    for i, gesture in enumerate(adjustment.gestures):
        path = f"adjustment.gestures[{i}]"
        if not gesture.description.strip():
            problems.append(FieldViolation(f"{path}.description", "required: what the customer gets"))
        elif len(gesture.description) > DESCRIPTION_MAX:
            problems.append(FieldViolation(f"{path}.description", f"at most {DESCRIPTION_MAX} characters"))
        if not gesture.reason.strip():
            problems.append(FieldViolation(f"{path}.reason", "required: a gesture needs a reason"))
        problems += _money_problems(gesture.amount, f"{path}.amount", currency)
    for i, cost in enumerate(adjustment.late_costs):
        path = f"adjustment.late_costs[{i}]"
        if cost.kind is None:
            problems.append(FieldViolation(f"{path}.kind", "required: which cost"))
        problems += _money_problems(cost.amount, f"{path}.amount", currency)
    for i, receipt in enumerate(adjustment.receipts):
        path = f"adjustment.receipts[{i}].cost_kind"
        if receipt.cost_kind is None:
            problems.append(FieldViolation(path, "required: whose receipt"))
        elif receipt.cost_kind not in receipts_due:
            problems.append(FieldViolation(path, f"{receipt.cost_kind.value}: no repayment of it waits for a receipt"))
    return problems


def _money_problems(amount: Money, path: str, currency: str) -> list[FieldViolation]:
    if amount.currency != currency:
        return [FieldViolation(f"{path}.currency", f"{amount.currency or 'none'}: the offer is in {currency}")]
    if amount.amount_minor <= 0:
        return [FieldViolation(f"{path}.amount_minor", f"{amount.amount_minor}: must be more than zero")]
    return []


def describe(adjustment: OfferAdjustment) -> str:
    """Return the adjustment in words, for the audit trail."""
    parts = [f"swap {s.from_kind.value} -> {s.to_kind.value}" for s in adjustment.swaps if s.from_kind and s.to_kind]
    parts += [
        f"gesture {g.description!r} {g.amount.amount_minor} {g.amount.currency}: {g.reason}"
        for g in adjustment.gestures
    ]
    parts += [
        f"late cost {(c.kind.value if c.kind else 'other')} {c.amount.amount_minor} {c.amount.currency}"
        for c in adjustment.late_costs
    ]
    parts += [f"receipt for {r.cost_kind.value if r.cost_kind else '?'} received" for r in adjustment.receipts]
    return "; ".join(parts)
