"""Intake's small decisions besides classification: the dedupe key, merging into an open case, routing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from services.common.texts import choose_locale
from services.intake.domain.commands import ReportFailure
from services.intake.domain.model import Avoidability, FailureReport, OpenCaseSummary, Source
from services.intake.domain.policy import Policy


def dedupe_key(report: FailureReport) -> tuple[Source, str] | None:
    """Return (source, event id), the key under which a report is one failure; None when it has no id.

    A report that named its source is keyed by the publisher's own event id; one known only by its publisher
    (its CloudEvents source: mapped by the policy, or an other system) by "<publisher>/<event id>", so two
    publishers' equal ids are two failures.
    """
    # Only frontline reports may lack an event id (validation requires it elsewhere); those are deduplicated by the
    # gRPC request id, so an empty id must not make every id-less frontline report collide with each other.
    if not report.source_event_id:
        return None
    if report.publisher:
        return report.source, f"{report.publisher}/{report.source_event_id}"
    return report.source, report.source_event_id


def attribute_publisher(command: ReportFailure, publisher: str, policy: Policy) -> ReportFailure:
    """Return the report as coming from ``publisher`` (its CloudEvents source) when it names no source of its own.

    The policy says what a listed publisher stands for; an unlisted one is an other system when the policy
    accepts unknown publishers, and is left without a source (refused by validation, saying why) otherwise.
    A report that names a source keeps it, as before open publishers.
    """
    if command.source is not None and command.source is not Source.OTHER_SYSTEM:
        return command
    mapped = policy.publishers.get(publisher)
    if mapped is not None and command.source is None:
        return replace(command, source=mapped, publisher=publisher)
    if command.source is Source.OTHER_SYSTEM or policy.accept_unknown_publishers:
        return replace(command, source=Source.OTHER_SYSTEM, publisher=publisher)
    return replace(command, publisher=publisher)


def should_merge(report: FailureReport, open_case: OpenCaseSummary, policy: Policy) -> bool:
    """Return True when the report joins ``open_case``: same customer, same non-empty reference, within the window."""
    if not report.reference or report.reference != open_case.reference:
        return False
    if report.customer_id != open_case.customer_id:
        return False
    # Reports arrive out of order, so a failure that happened shortly *before* the case's first one also joins.
    return abs(report.occurred_at - open_case.first_failure_at) <= policy.merge_window


def case_locale(report: FailureReport, policy: Policy) -> str:
    """Return the language a case speaks: the one its failures last asked for, else the market's, else the default.

    The market is known by the customer's time zone, else by the currency of the order (or customer value).
    """
    money = report.order_value or report.customer_value
    return choose_locale(
        report.locale,
        timezone=report.customer_timezone,
        currency=money.currency if money else "",
        policy=policy.locale,
    )


def owning_team(report: FailureReport, *, reporter_team: str, policy: Policy) -> str:
    """Return the team that owns a new case: the reporter's (frontline first), else the category's queue."""
    return reporter_team or policy.team_by_category.get(report.category, policy.default_team)


def _avoidability(reports: Sequence[FailureReport]) -> Avoidability | None:
    # One avoidable failure makes the case avoidable in the customer's eyes; unknown only when nobody knows.
    known = {r.avoidability for r in reports} - {None}
    if Avoidability.AVOIDABLE in known:
        return Avoidability.AVOIDABLE
    return Avoidability.UNAVOIDABLE if known else None


def _latest(values: Sequence, empty=None):
    found = [v for v in values if v not in (None, "", empty)]
    return found[-1] if found else empty


def combine(reports: Sequence[FailureReport]) -> FailureReport:
    """Return one report standing for all of a case's failures, oldest first, to classify the case as a whole.

    The first failure gives the case its identity (category, reference, time, area, reporter); costs add up;
    impacts, risk tags and avoidability accumulate; the customer's latest request and contact details win.
    """
    if not reports:
        raise ValueError("a case has at least one failure")
    first = reports[0]
    return replace(
        first,
        reported_costs=tuple(item for r in reports for item in r.reported_costs),
        stated_impacts=frozenset().union(*(r.stated_impacts for r in reports)),
        impact_details="\n".join(r.impact_details for r in reports if r.impact_details),
        risk_tags=frozenset().union(*(r.risk_tags for r in reports)),
        avoidability=_avoidability(reports),
        customer_request=_latest([r.customer_request for r in reports]),
        order_value=_latest([r.order_value for r in reports]),
        customer_value=_latest([r.customer_value for r in reports]),
        customer_timezone=_latest([r.customer_timezone for r in reports], ""),
        preferred_channel=_latest([r.preferred_channel for r in reports]),
        locale=_latest([r.locale for r in reports], ""),
        reported_by_employee_id=next((r.reported_by_employee_id for r in reports if r.reported_by_employee_id), ""),
    )
