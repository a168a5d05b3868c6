"""Builders for compensation's unit tests: the shipped policy, case facts with overrides, a fixed clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from services.compensation.adapters import texts
from services.compensation.config import DEFAULT_POLICY
from services.compensation.domain.model import (
    Avoidability,
    CaseFacts,
    Category,
    CostItem,
    CostKind,
    CustomerHistory,
    CustomerRequest,
    GrantedLine,
    LineItem,
    Money,
    Offer,
    RemedyKind,
    Severity,
)
from services.compensation.domain.offer import compute_offer
from services.compensation.domain.policy import Policy, load_policy

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
POLICY_TEXT = DEFAULT_POLICY.read_text()
POLICY = load_policy(POLICY_TEXT)


def words(line: LineItem, locale: str = "en") -> str:
    """Return what the customer reads for ``line`` in ``locale`` (the domain leaves texts unrendered)."""
    return texts.catalogue().render(line.customer_text, locale).text


def eur(amount: int) -> Money:
    return Money(amount, "EUR")


def facts(**changes) -> CaseFacts:
    """A moderate late delivery of a 100 EUR order, reported now, no costs, no request."""
    base = CaseFacts(
        customer_id="cust-1",
        case_id="case-1",
        category=Category.LATE_DELIVERY,
        severity=Severity.MODERATE,
        failure_at=NOW,
        avoidability=Avoidability.UNAVOIDABLE,
        order_value=eur(10_000),
        customer_value=eur(0),
        owning_team="front-desk",
    )
    return replace(base, **changes)


def cost(kind: CostKind | None, amount: int, *, receipt: bool = False, ref: str = "") -> CostItem:
    return CostItem(kind=kind, amount=eur(amount), description="", has_receipt=receipt, receipt_reference=ref)


def granted(kind: RemedyKind, amount: int, cost_kind: CostKind | None = None, currency: str = "EUR") -> GrantedLine:
    return GrantedLine(kind=kind, amount=Money(amount, currency), cost_kind=cost_kind)


def request(kind: RemedyKind | None = None, amount: int | None = None, text: str = "") -> CustomerRequest:
    return CustomerRequest(remedy_kind=kind, amount=None if amount is None else eur(amount), text=text)


def offer(
    f: CaseFacts | None = None,
    *,
    policy: Policy = POLICY,
    history: CustomerHistory | None = None,
    now: datetime = NOW,
    spent: int = 0,
    given: tuple[GrantedLine, ...] = (),
) -> Offer:
    return compute_offer(
        facts=f or facts(),
        history=history or CustomerHistory(),
        policy=policy,
        now=now,
        team_spent_minor=spent,
        granted=given,
    )


def goodwill(o: Offer) -> int:
    """The goodwill part: every line that is not a reimbursement, statutory or the apology."""
    return sum(
        line.amount.amount_minor
        for line in o.line_items
        if line.kind not in (RemedyKind.REIMBURSEMENT, RemedyKind.STATUTORY_COMPENSATION, RemedyKind.APOLOGY_NOTE)
    )


def with_policy(old: str, new: str) -> Policy:
    assert old in POLICY_TEXT, old
    return load_policy(POLICY_TEXT.replace(old, new))


def hours(n: int) -> timedelta:
    return timedelta(hours=n)
