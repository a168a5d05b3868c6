"""Builders for escalation's unit tests: a policy, cases and offers with sensible defaults."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from services.common.money import Money
from services.escalation.domain.model import Case, CaseState, Offer, OfferLine, Outlook, RemedyKind, Severity
from services.escalation.domain.policy import Policy, load_policy

POLICY_TEXT = (Path(__file__).parents[3] / "services" / "escalation" / "policy.toml").read_text()
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday


def policy(**changes) -> Policy:
    return replace(load_policy(POLICY_TEXT), **changes)


def case(state: CaseState = CaseState.OPEN, **changes) -> Case:
    values = {
        "case_id": "c-1",
        "customer_id": "cu-1",
        "state": state,
        "owner_employee_id": "" if state is CaseState.QUEUED else "e-1",
        "team": "care",
        "severity": Severity.MODERATE,
        "outlook": Outlook.RECOVERABLE,
        "system_detected": False,
    }
    values.update(changes)
    return Case(**values)


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


def offer(*lines: tuple[RemedyKind, int], **changes) -> Offer:
    items = tuple(OfferLine(kind=k, amount=eur(a)) for k, a in (lines or ((RemedyKind.VOUCHER, 1000),)))
    values = {
        "offer_id": "o-1",
        "version": 1,
        "total": eur(sum(i.amount.amount_minor for i in items)),
        "lines": items,
    }
    values.update(changes)
    return Offer(**values)
