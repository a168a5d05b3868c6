"""Validation of a reported failure: every rule is checked and every violation reported at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.common.errors import FieldViolation
from services.common.texts import parse_locale
from services.intake.domain.commands import ReportFailure
from services.intake.domain.errors import InvalidFailureReport
from services.intake.domain.model import KNOWN_CURRENCIES, Area, FailureReport, Money, Source


@dataclass(frozen=True)
class Limits:
    """Bounds a report must stay within; the defaults are the contract published to reporting systems."""

    id_length: int = 128
    reference_length: int = 128
    description_length: int = 4000
    impact_details_length: int = 2000
    request_text_length: int = 2000
    cost_description_length: int = 500
    # Compensation pays two costs of a case with the same receipt reference once: it is a key, not prose.
    receipt_reference_length: int = 100
    incident_id_length: int = 100
    area_field_length: int = 128
    timezone_length: int = 64
    max_cost_items: int = 50
    # 10^12 minor units is ten billion euros: far above any real cost, low enough that sums cannot overflow int64.
    max_amount_minor: int = 10**12
    # Clocks of publishing systems drift; a few minutes ahead is skew, more is a wrong timestamp.
    max_clock_skew: timedelta = timedelta(minutes=10)
    # Older than this is a wrong timestamp or a replayed archive, not a failure to recover from.
    max_age: timedelta = timedelta(days=5 * 365 + 1)
    max_survey_score: int = 10


DEFAULT_LIMITS = Limits()

# Sources whose reports must carry the publisher's own event id: it is half of the dedupe key. Frontline reports
# are deduplicated by the gRPC request id instead, which the entrypoint copies into source_event_id when present.
_SOURCES_NEEDING_EVENT_ID = frozenset(Source) - {Source.FRONTLINE}

Violations = Iterator[FieldViolation]


def validate_report(raw: ReportFailure, *, now: datetime, limits: Limits = DEFAULT_LIMITS) -> FailureReport:
    """Return the validated ``FailureReport``; raise ``InvalidFailureReport`` listing every violation."""
    violations = [v for check in _CHECKS for v in check(raw, now, limits)]
    if violations:
        raise InvalidFailureReport.of(*violations)
    return accepted(raw)


def accepted(raw: ReportFailure) -> FailureReport:
    """Return ``raw`` as a ``FailureReport`` without checking it: only for reports validated before (the store)."""
    assert raw.source is not None and raw.category is not None and raw.occurred_at is not None
    return FailureReport(
        customer_id=raw.customer_id,
        source=raw.source,
        source_event_id=raw.source_event_id,
        category=raw.category,
        occurred_at=raw.occurred_at,
        reference=raw.reference,
        description=raw.description,
        reported_costs=tuple(raw.reported_costs),
        stated_impacts=frozenset(raw.stated_impacts),
        impact_details=raw.impact_details,
        customer_request=raw.customer_request,
        avoidability=raw.avoidability,
        area=raw.area,
        risk_tags=frozenset(raw.risk_tags),
        order_value=raw.order_value,
        customer_value=raw.customer_value,
        reported_by_employee_id=raw.reported_by_employee_id,
        survey_score=raw.survey_score,
        related_case_id=raw.related_case_id,
        customer_timezone=raw.customer_timezone,
        preferred_channel=raw.preferred_channel,
        publisher=raw.publisher,
        source_system=raw.source_system,
        incident_id=raw.incident_id,
        locale=_parsed_locale(raw.locale),
    )


def _parsed_locale(value: str) -> str:
    try:
        return parse_locale(value)
    except ValueError:
        return ""  # refused by _locale before a report is accepted; the store holds parsed ones only


def _locale(raw: ReportFailure, now: datetime, limits: Limits) -> Violations:
    try:
        parse_locale(raw.locale)
    except ValueError as exc:
        yield FieldViolation("locale", str(exc))


def money_violations(money: Money, path: str, limits: Limits = DEFAULT_LIMITS) -> list[FieldViolation]:
    """Return the violations of one amount: integer minor units, 0..max, known upper-case currency."""
    found = []
    amount = money.amount_minor
    # bool is an int subclass and float is a silent precision loss: both are refused, not coerced.
    if not isinstance(amount, int) or isinstance(amount, bool):
        found.append(FieldViolation(f"{path}.amount_minor", "must be an integer number of minor units"))
    elif amount < 0:
        found.append(FieldViolation(f"{path}.amount_minor", "must not be negative"))
    elif amount > limits.max_amount_minor:
        found.append(FieldViolation(f"{path}.amount_minor", f"must be at most {limits.max_amount_minor}"))
    if money.currency not in KNOWN_CURRENCIES:
        found.append(FieldViolation(f"{path}.currency", f"unknown ISO-4217 currency {money.currency!r}"))
    return found


def receipt_reference_violations(reference: str, path: str, limits: Limits = DEFAULT_LIMITS) -> list[FieldViolation]:
    """Return the violations of a cost's receipt reference: empty (none given), or printable and short."""
    return key_violations(reference, path, limits.receipt_reference_length)


def key_violations(text: str, path: str, max_length: int) -> list[FieldViolation]:
    """Return the violations of a free-text key (a receipt reference, an incident id): printable and short."""
    found = []
    if len(text) > max_length:
        found.append(
            FieldViolation(path, f"must be at most {max_length} characters, got {len(text)}: {_clipped(text)}")
        )
    # Control characters and line breaks would make two keys that look the same different keys.
    if not text.isprintable():
        found.append(FieldViolation(path, f"must be printable text, got {_clipped(text)}"))
    return found


def _clipped(text: str, keep: int = 40) -> str:
    """Return ``text`` quoted with escapes (so control characters show), cut short when long."""
    return repr(text) if len(text) <= keep else f"{text[:keep]!r}..."


def _required(raw: ReportFailure, now: datetime, limits: Limits) -> Violations:
    if not raw.customer_id:
        yield FieldViolation("customer_id", "is required")
    if raw.source is None and raw.publisher:
        yield FieldViolation(
            "source",
            f"not given, and publisher {raw.publisher!r} (its ce_source) is not in intake's policy "
            "[publishers.systems], which refuses unknown publishers: send a source or have the publisher added",
        )
    elif raw.source is None:
        yield FieldViolation("source", "is required")
    elif raw.source in _SOURCES_NEEDING_EVENT_ID and not raw.source_event_id:
        yield FieldViolation("source_event_id", f"is required for source {raw.source.value}")
    if raw.category is None:
        yield FieldViolation("category", "is required")
    if raw.source is Source.FRONTLINE and not raw.reported_by_employee_id:
        yield FieldViolation("reported_by_employee_id", "is required for source frontline: the reporter owns the case")
    if raw.source is Source.FOLLOWUP and not raw.related_case_id:
        yield FieldViolation("related_case_id", "is required for source followup: the case whose recovery failed")


def _lengths(raw: ReportFailure, now: datetime, limits: Limits) -> Violations:
    area: Area = raw.area
    request_text = raw.customer_request.text if raw.customer_request else ""
    bounded = (
        ("customer_id", raw.customer_id, limits.id_length),
        ("source_event_id", raw.source_event_id, limits.id_length),
        ("reference", raw.reference, limits.reference_length),
        ("description", raw.description, limits.description_length),
        ("impact_details", raw.impact_details, limits.impact_details_length),
        ("customer_request.text", request_text, limits.request_text_length),
        ("area.component", area.component, limits.area_field_length),
        ("area.release", area.release, limits.area_field_length),
        ("area.team", area.team, limits.area_field_length),
        ("area.employee_id", area.employee_id, limits.id_length),
        ("area.location", area.location, limits.area_field_length),
        ("reported_by_employee_id", raw.reported_by_employee_id, limits.id_length),
        ("related_case_id", raw.related_case_id, limits.id_length),
        ("customer_timezone", raw.customer_timezone, limits.timezone_length),
    )
    for path, text, limit in bounded:
        if len(text) > limit:
            yield FieldViolation(path, f"must be at most {limit} characters, got {len(text)}")


def _occurred_at(raw: ReportFailure, now: datetime, limits: Limits) -> Violations:
    at = raw.occurred_at
    if at is None:
        yield FieldViolation("occurred_at", "is required")
    elif at.tzinfo is None or at.utcoffset() is None:
        yield FieldViolation("occurred_at", "must carry a time zone")
    elif at > now + limits.max_clock_skew:
        yield FieldViolation("occurred_at", f"is in the future ({at.isoformat()} is after {now.isoformat()})")
    elif at < now - limits.max_age:
        yield FieldViolation("occurred_at", f"is more than {limits.max_age.days} days old")


def _money(raw: ReportFailure, now: datetime, limits: Limits) -> Violations:
    if len(raw.reported_costs) > limits.max_cost_items:
        yield FieldViolation("reported_costs", f"at most {limits.max_cost_items} cost items")
    for i, item in enumerate(raw.reported_costs):
        path = f"reported_costs[{i}]"
        yield from money_violations(item.amount, f"{path}.amount", limits)
        if len(item.description) > limits.cost_description_length:
            yield FieldViolation(f"{path}.description", f"must be at most {limits.cost_description_length} characters")
        yield from receipt_reference_violations(item.receipt_reference, f"{path}.receipt_reference", limits)
    optional = (
        ("order_value", raw.order_value),
        ("customer_value", raw.customer_value),
        ("customer_request.amount", raw.customer_request.amount if raw.customer_request else None),
    )
    for path, money in optional:
        if money is not None:
            yield from money_violations(money, path, limits)


def _survey_score(raw: ReportFailure, now: datetime, limits: Limits) -> Violations:
    score = raw.survey_score
    if score is not None and (
        not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= limits.max_survey_score
    ):
        yield FieldViolation("survey_score", f"must be an integer from 0 to {limits.max_survey_score}")


def _incident(raw: ReportFailure, now: datetime, limits: Limits) -> Violations:
    yield from key_violations(raw.incident_id, "incident_id", limits.incident_id_length)


_CHECKS: tuple[Callable[[ReportFailure, datetime, Limits], Violations], ...] = (
    _incident,
    _locale,
    _required,
    _lengths,
    _occurred_at,
    _money,
    _survey_score,
)
