"""Accepting failure reports a set at a time: each is a duplicate, joins an open case, or opens one.

The service layer loads what the batch's customers already have (``CustomerState``), then calls
``accept`` for each report in record order; ``CustomerState.record`` folds each decision back in, so a
later report of the same customer in the same batch sees the earlier one exactly as if it had been
committed before. Pure: no I/O, decisions of (policy, state, now).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.common.errors import FieldViolation
from services.common.money import Money
from services.intake.domain.classify import classify
from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.events import CaseAmended, CaseOpened
from services.intake.domain.model import (
    CustomerHistory,
    FailureReport,
    OpenCaseSummary,
    Reporter,
    SatisfactionAnswer,
    Source,
)
from services.intake.domain.policy import Policy
from services.intake.domain.rules import case_locale, combine, dedupe_key, owning_team, should_merge


@dataclass(frozen=True)
class KnownCase:
    """What the merge and history rules need of one of the customer's cases."""

    case_id: str
    customer_id: str
    reference: str
    resolved: bool
    first_failure_at: datetime
    opened_at: datetime
    revision: int


@dataclass(frozen=True)
class KnownFailure:
    """An accepted failure; ``report`` is loaded only for cases a report of the batch may join."""

    failure_id: str
    case_id: str
    customer_id: str
    occurred_at: datetime
    received_at: datetime
    report: FailureReport | None = None


@dataclass(frozen=True)
class Granted:
    """Compensation authorised on one of the customer's cases: the sum of its authorisations in one currency."""

    case_id: str
    amount: Money
    authorized_at: datetime


@dataclass
class CustomerState:
    """What intake knows of one customer while a batch is decided; grows with each decision."""

    customer_id: str
    cases: dict[str, KnownCase] = field(default_factory=dict)
    failures: dict[str, KnownFailure] = field(default_factory=dict)  # by failure id
    granted: list[Granted] = field(default_factory=list)
    last_satisfaction: SatisfactionAnswer | None = None

    def history(self, *, now: datetime, policy: Policy, exclude_case_id: str | None = None) -> CustomerHistory:
        """Return the customer's history before now, leaving out ``exclude_case_id``'s own records."""
        failures_since, cases_since = now - policy.repeat_window, now - policy.case_lookback
        received: dict[str, int] = {}
        for grant in self.granted:
            if grant.case_id != exclude_case_id and grant.authorized_at >= cases_since:
                received[grant.amount.currency] = received.get(grant.amount.currency, 0) + grant.amount.amount_minor
        return CustomerHistory(
            prior_failure_times=tuple(
                sorted(
                    f.occurred_at
                    for f in self.failures.values()
                    if f.case_id != exclude_case_id and f.occurred_at >= failures_since
                )
            ),
            prior_case_count=sum(
                1 for c in self.cases.values() if c.case_id != exclude_case_id and c.opened_at >= cases_since
            ),
            compensation_received=tuple(Money(received[c], c) for c in sorted(received)),
            last_satisfaction=self.last_satisfaction,
            failure_lookback=policy.repeat_window,
            case_lookback=policy.case_lookback,
        )

    def case_failures(self, case_id: str) -> list[KnownFailure]:
        """The case's failures with their reports, oldest first (the first one opened the case)."""
        return sorted(
            (f for f in self.failures.values() if f.case_id == case_id and f.report is not None),
            key=lambda f: (f.occurred_at, f.received_at, f.failure_id),
        )

    def record(self, decision: Decision) -> None:
        """Fold ``decision`` into the state, as if it had been committed."""
        match decision:
            case Opened(event=event):
                self.cases[event.case_id] = KnownCase(
                    case_id=event.case_id,
                    customer_id=self.customer_id,
                    reference=event.report.reference,
                    resolved=False,
                    first_failure_at=event.report.occurred_at,
                    opened_at=event.opened_at,
                    revision=1,
                )
                self._add_failure(event.failure_id, event.case_id, event.report, event.opened_at)
            case Amended(event=event):
                case = self.cases[event.case_id]
                self.cases[event.case_id] = replace(
                    case, revision=event.revision, first_failure_at=event.case_report.occurred_at
                )
                self._add_failure(event.failure_id, event.case_id, event.merged_report, event.amended_at)

    def _add_failure(self, failure_id: str, case_id: str, report: FailureReport, received_at: datetime) -> None:
        self.failures[failure_id] = KnownFailure(
            failure_id, case_id, self.customer_id, report.occurred_at, received_at, report
        )


@dataclass(frozen=True)
class Duplicate:
    """The report's (source, source event id) was accepted before: nothing changes."""

    failure_id: str
    case_id: str


@dataclass(frozen=True)
class Opened:
    """The report found no open case to join and opens one."""

    event: CaseOpened


@dataclass(frozen=True)
class Amended:
    """The report joins an open case of the customer's."""

    event: CaseAmended


Decision = Duplicate | Opened | Amended


def accept(
    report: FailureReport,
    *,
    state: CustomerState,
    seen: dict[tuple[Source, str], KnownFailure],
    policy: Policy,
    now: datetime,
    reporter: Reporter,
    new_id: Callable[[], str],
) -> Decision:
    """Decide what ``report`` is; ``seen`` maps dedupe keys to the failures accepted under them (updated here).

    Raises InvalidFailureReport when another customer's failure was accepted under the report's key.
    """
    key = dedupe_key(report)
    if key is not None and (earlier := seen.get(key)) is not None:
        if earlier.customer_id != report.customer_id:
            # The same event id for another customer is a publisher bug; dropping it as a duplicate would lose it.
            raise InvalidFailureReport.of(
                FieldViolation("source_event_id", f"already used by {key[0].value} for another customer's failure")
            )
        return Duplicate(failure_id=earlier.failure_id, case_id=earlier.case_id)
    failure_id = new_id()
    case = _case_to_join(report, state, policy)
    if case is None:
        decision: Decision = Opened(
            _open(report, failure_id, state, policy=policy, now=now, reporter=reporter, new_id=new_id)
        )
    else:
        decision = Amended(_amend(report, failure_id, case, state, policy=policy, now=now))
    if key is not None:
        seen[key] = KnownFailure(failure_id, _case_id(decision), report.customer_id, report.occurred_at, now)
    return decision


def _case_id(decision: Decision) -> str:
    return decision.case_id if isinstance(decision, Duplicate) else decision.event.case_id


def _case_to_join(report: FailureReport, state: CustomerState, policy: Policy) -> KnownCase | None:
    if report.source is Source.FOLLOWUP and report.related_case_id:
        # The recovery of that case failed: the failure belongs to it, whatever its age or status.
        related = state.cases.get(report.related_case_id)
        if related is not None:
            return related
    if not report.reference:
        return None
    open_cases = sorted(
        (c for c in state.cases.values() if not c.resolved and c.reference == report.reference),
        key=lambda c: c.opened_at,
        reverse=True,
    )
    for case in open_cases:
        if should_merge(
            report, OpenCaseSummary(case.case_id, case.customer_id, case.reference, case.first_failure_at), policy
        ):
            return case
    return None


def _open(
    report: FailureReport,
    failure_id: str,
    state: CustomerState,
    *,
    policy: Policy,
    now: datetime,
    reporter: Reporter,
    new_id: Callable[[], str],
) -> CaseOpened:
    history = state.history(now=now, policy=policy)
    return CaseOpened(
        case_id=new_id(),
        failure_id=failure_id,
        report=report,
        classification=classify(report, history, policy, now=now),
        history=history,
        owner_employee_id=report.reported_by_employee_id,
        # The role comes only with the reporter's own token; an owner named by another system has none here.
        owner_role=reporter.role if report.reported_by_employee_id else "",
        owning_team=owning_team(report, reporter_team=reporter.team, policy=policy),
        opened_at=now,
        locale=case_locale(report, policy),
    )


def _amend(
    report: FailureReport, failure_id: str, case: KnownCase, state: CustomerState, *, policy: Policy, now: datetime
) -> CaseAmended:
    earlier = [(f.occurred_at, f.received_at, f.failure_id, f.report) for f in state.case_failures(case.case_id)]
    failures = sorted([*earlier, (report.occurred_at, now, failure_id, report)], key=lambda f: (f[0], f[1], f[2]))
    case_report = combine([f[3] for f in failures])  # type: ignore[misc]
    # A failed recovery is a second failure of the customer, so the case's own failures count as history then;
    # otherwise they are one incident seen twice (a system and the customer reporting the same late parcel).
    excluded = None if report.source is Source.FOLLOWUP else case.case_id
    history = state.history(now=now, policy=policy, exclude_case_id=excluded)
    return CaseAmended(
        case_id=case.case_id,
        revision=case.revision + 1,
        failure_id=failure_id,
        merged_report=report,
        failure_ids=tuple(f[2] for f in failures),
        reports=tuple((f[2], f[3]) for f in failures),
        case_report=case_report,
        classification=classify(case_report, history, policy, now=now),
        history=history,
        amended_at=now,
        locale=case_locale(case_report, policy),
    )
