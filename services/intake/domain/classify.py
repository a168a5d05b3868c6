"""Classification of a validated failure: severity, avoidability and recovery outlook, each with its reasons.

Pure functions of (report, history, policy, now). The outlook encodes the three conditions under which the
service-recovery paradox holds: first failure, not big, not avoidable.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.intake.domain.model import (
    Avoidability,
    Classification,
    CustomerHistory,
    FailureReport,
    Outlook,
    Reason,
    Severity,
)
from services.intake.domain.policy import Policy

Finding = tuple[Severity, Reason]


def money_at_stake(report: FailureReport, policy: Policy) -> dict[str, int]:
    """Return minor units at stake per currency: the reported costs, plus the order value when the policy says so."""
    amounts = [item.amount for item in report.reported_costs]
    if policy.include_order_value and report.order_value is not None:
        amounts.append(report.order_value)
    totals: dict[str, int] = {}
    for money in amounts:
        totals[money.currency] = totals.get(money.currency, 0) + money.amount_minor
    return totals


def _base_rule(report: FailureReport, policy: Policy) -> list[Finding]:
    level = policy.base_severity[report.category]
    return [(level, Reason("category_base", f"{report.category.value} is {level.value} by default"))]


def _money_rule(report: FailureReport, policy: Policy) -> list[Finding]:
    # Each currency is judged against its own thresholds; amounts are never converted (no rates, no floats).
    # A currency the policy has no thresholds for raises nothing: the other rules still apply.
    findings = []
    for currency, amount in sorted(money_at_stake(report, policy).items()):
        thresholds = policy.money_thresholds.get(currency)
        reached = thresholds.level(amount) if thresholds else None
        if reached is not None:
            level, threshold = reached
            detail = f"{amount} {currency} minor units at stake, threshold for {level.value} is {threshold}"
            findings.append((level, Reason("money_at_stake", detail)))
    return findings


def _impact_rule(report: FailureReport, policy: Policy) -> list[Finding]:
    findings = []
    for impact in sorted(report.stated_impacts, key=lambda i: i.value):
        level = policy.impact_severity.get(impact)
        if level is not None:
            findings.append((level, Reason(f"{impact.value}_impact", f"stated impact {impact.value} is {level.value}")))
    return findings


# Every rule proposes severities with reasons; the failure is as severe as the most severe proposal.
SEVERITY_RULES: tuple[Callable[[FailureReport, Policy], list[Finding]], ...] = (_base_rule, _money_rule, _impact_rule)


def severity(report: FailureReport, policy: Policy) -> tuple[Severity, tuple[Reason, ...]]:
    """Return the failure's severity (the highest any rule reaches) and the reasons of every rule that fired."""
    findings = [finding for rule in SEVERITY_RULES for finding in rule(report, policy)]
    return max(level for level, _ in findings), tuple(reason for _, reason in findings)


# Unknown avoidability counts as NOT avoidable. The paradox fails when the customer *believes* the failure was
# avoidable (domain.md); a report that says nothing gives no such belief, and the other two conditions (repeat,
# big) still flag the case. Treating unknown as avoidable would put nearly every system-detected failure at risk
# and make the outlook meaningless.
_AVOIDABILITY: dict[Avoidability | None, tuple[bool, Reason]] = {
    Avoidability.AVOIDABLE: (True, Reason("within_company_control", "the cause was within the company's control")),
    Avoidability.UNAVOIDABLE: (False, Reason("outside_company_control", "the cause was outside the company's control")),
    None: (False, Reason("avoidability_unknown", "not known whether the cause was within the company's control")),
}


def avoidability(report: FailureReport) -> tuple[bool, Reason]:
    """Return whether the failure was avoidable and why (unknown counts as not avoidable)."""
    return _AVOIDABILITY[report.avoidability]


def _repeat_condition(severity: Severity, avoidable: bool, prior: int, policy: Policy) -> Reason | None:
    if prior == 0:
        return None
    return Reason("repeat_failure", f"{prior} prior failures in {policy.repeat_window.days} days")


def _big_condition(severity: Severity, avoidable: bool, prior: int, policy: Policy) -> Reason | None:
    if severity < Severity.MAJOR:
        return None
    return Reason("big_failure", f"severity is {severity.value}")


def _avoidable_condition(severity: Severity, avoidable: bool, prior: int, policy: Policy) -> Reason | None:
    if not avoidable:
        return None
    return Reason("avoidable_failure", "the customer will not easily forgive an avoidable failure")


# The three paradox conditions; each returns the reason it fails, or None when it holds.
OUTLOOK_CONDITIONS = (_repeat_condition, _big_condition, _avoidable_condition)


def outlook(
    severity: Severity, avoidable: bool, history: CustomerHistory, policy: Policy, now: datetime
) -> tuple[Outlook, tuple[Reason, ...]]:
    """Return ``recoverable`` (no reasons) when every paradox condition holds, else ``at_risk`` with each failed one."""
    prior = history.prior_failures_since(now - policy.repeat_window)
    reasons = tuple(
        reason for condition in OUTLOOK_CONDITIONS if (reason := condition(severity, avoidable, prior, policy))
    )
    return (Outlook.AT_RISK if reasons else Outlook.RECOVERABLE), reasons


def classify(report: FailureReport, history: CustomerHistory, policy: Policy, *, now: datetime) -> Classification:
    """Return the full classification of a validated failure under ``policy``."""
    level, severity_reasons = severity(report, policy)
    avoidable, avoidability_reason = avoidability(report)
    result, outlook_reasons = outlook(level, avoidable, history, policy, now)
    return Classification(
        severity=level,
        severity_reasons=severity_reasons,
        avoidable=avoidable,
        avoidability_reason=avoidability_reason,
        outlook=result,
        outlook_reasons=outlook_reasons,
        policy_version=policy.version,
        avoidability=report.avoidability,
    )
