"""The empowerment policy: loaded from TOML, validated whole, refused with every bad key named.

Layout (see ``services/escalation/policy.toml``)::

    version = "..."                          required, non-empty
    currency = "EUR"                         the base currency every limit is in (required, ISO-4217)
    [rates]                                  version = "...", and <ISO-4217> = "<decimal>": one unit of that
                                             currency in base units; offers are accepted in the base
                                             currency and in these only
    tiers = ["agent", ..., "director"]       roles from lowest to highest authority (required)
    max_transfers = int                      transfers before a case is flagged (default 2)
    default_capacity = int                   open cases per employee before they are overloaded (default 25)
    approval_decision = "4h"                 business time an approver has to decide (default 4h)
    sla_warn_share_bp = int                  warning point as basis points of the budget (default 7500)
    [roles.<tier>]                           every tier: per_case, per_day, per_month (minor units)
    [roles.<tier>.remedies]                  <remedy kind> = per-case cap; a kind not listed is not allowed
    [employees."<id>"]                       overrides: per_case, per_day, per_month, capacity, [remedies]
    [automation]                             enabled (bool), limit (minor units), remedies = ["kind", ...]
    [sla.<acknowledge|resolve>.<recoverable|at_risk>]   <severity> = "8h" for every severity
    [calendar]                               timezone, holidays = ["YYYY-MM-DD"], [calendar.hours] mon..sun
    [team_calendars.<team>]                  the same shape as [calendar], for one team
    [incidents]                              declarer_roles = ["team_lead", ...]: tiers that may declare an
                                             incident; playbooks = ["cancelled_flight", ...]: compensation's
                                             playbooks a declaration may name (none: nobody declares)

Durations are "<n>s", "<n>m" or "<n>h" of business time. Opening periods are "HH:MM-HH:MM" ("24:00" ends
the day), ordered and not overlapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.common.money import KNOWN_CURRENCIES
from services.common.policy_reader import PolicyReader, load_toml
from services.escalation.domain.calendar import BusinessCalendar
from services.escalation.domain.errors import PolicyError
from services.escalation.domain.model import Limits, Outlook, RemedyKind, Severity, SlaClock
from services.escalation.domain.rates import Rate, parse_rate

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"^(\d+)([smh])$")
_PERIOD = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600}
_LIMIT_KEYS = ("per_case", "per_day", "per_month")


@dataclass(frozen=True)
class Automation:
    """Automatic proactive recovery: the system authorises system-detected failures' offers up to ``limit``."""

    enabled: bool = False
    limit: int = 0
    remedies: frozenset[RemedyKind] = frozenset()


@dataclass(frozen=True)
class Policy:
    """A validated empowerment policy; build it with ``load_policy``."""

    version: str
    currency: str
    tiers: tuple[str, ...]
    roles: Mapping[str, Limits]
    sla: Mapping[tuple[SlaClock, Outlook, Severity], timedelta]
    calendar: BusinessCalendar
    employees: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    automation: Automation = Automation()
    team_calendars: Mapping[str, BusinessCalendar] = field(default_factory=dict)
    max_transfers: int = 2
    default_capacity: int = 25
    approval_decision: timedelta = timedelta(hours=4)
    warn_share_bp: int = 7500
    # One unit of each currency in base (``currency``) units, and the version of that table.
    rates: Mapping[str, Fraction] = field(default_factory=dict)
    rates_version: str = ""
    # Who may declare an incident with a playbook (Plan B), and which playbooks exist to declare.
    declarer_roles: frozenset[str] = frozenset()
    playbooks: frozenset[str] = frozenset()

    @property
    def currencies(self) -> frozenset[str]:
        """The currencies offers may be authorised in: the base and every currency with a rate."""
        return frozenset({self.currency, *self.rates})

    def rate_for(self, currency: str) -> Rate | None:
        """Return the rate of ``currency`` to the base currency; None for a currency nobody configured."""
        if currency == self.currency:
            return Rate.identity(self.currency, self.rates_version)
        value = self.rates.get(currency)
        if value is None:
            return None
        return Rate(currency, self.currency, value, _decimal_text(value), self.rates_version)

    def rank(self, role: str) -> int:
        """Return the role's position in the tiers (-1 for a role that is not a tier, e.g. system)."""
        return self.tiers.index(role) if role in self.tiers else -1

    def tier_above(self, role: str) -> str | None:
        """Return the next tier up from ``role`` (the lowest tier for an unknown role); None at the top."""
        position = self.rank(role) + 1
        return self.tiers[position] if position < len(self.tiers) else None

    def limits_for(self, *, employee_id: str, role: str) -> Limits | None:
        """Return the limits of ``employee_id`` acting as ``role`` (overrides applied); None for a non-tier role."""
        base = self.roles.get(role)
        if base is None:
            return None
        override = self.employees.get(employee_id)
        if not override:
            return base
        changes: dict[str, Any] = {k: override[k] for k in _LIMIT_KEYS if k in override}
        if "remedies" in override:
            changes["remedy_caps"] = dict(override["remedies"])
        return replace(base, employee_override=True, **changes) if changes else base

    def capacity_for(self, employee_id: str) -> int:
        """Return how many open cases ``employee_id`` may own before counting as overloaded."""
        return int(self.employees.get(employee_id, {}).get("capacity", self.default_capacity))

    def calendar_for(self, team: str) -> BusinessCalendar:
        """Return the business calendar of ``team`` (the default calendar unless the team has its own)."""
        return self.team_calendars.get(team, self.calendar)

    def sla_budget(self, clock: SlaClock, severity: Severity | None, outlook: Outlook | None) -> timedelta:
        """Return the business-time budget of ``clock`` for a case of this severity and outlook."""
        # Unknown classification: treat as moderate and recoverable (the middle of the table), never as minor.
        return self.sla[(clock, outlook or Outlook.RECOVERABLE, severity or Severity.MODERATE)]


def parse_duration(value: Any) -> timedelta | None:
    """Return the duration "<n>s|m|h" as a timedelta; None when it is not one."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        return None
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def load_policy(text: str) -> Policy:
    """Return the policy in ``text``; raises PolicyError naming every bad key."""
    data = load_toml(text, PolicyError)
    r = PolicyReader()
    r.only(
        data,
        frozenset(
            {
                "version",
                "currency",
                "tiers",
                "max_transfers",
                "default_capacity",
                "approval_decision",
                "sla_warn_share_bp",
                "roles",
                "employees",
                "automation",
                "sla",
                "calendar",
                "team_calendars",
                "rates",
                "incidents",
            }
        ),
        "",
    )
    version = r.text(data, "version", "version")
    currency = r.text(data, "currency", "currency")
    if currency and currency not in KNOWN_CURRENCIES:
        r.bad("currency", f"unknown ISO-4217 currency {currency!r}")
    rates, rates_version = _rates(r, r.table(data, "rates", "rates", required=False), currency)
    tiers = _tiers(r, data.get("tiers"))
    roles = {}
    roles_table = r.table(data, "roles", "roles", required=True)
    r.only(roles_table, frozenset(tiers), "roles")
    for tier in tiers:
        path = f"roles.{tier}"
        table = r.table(roles_table, tier, path, required=True)
        r.only(table, frozenset({*_LIMIT_KEYS, "remedies"}), path)
        amounts = {k: r.integer(table, k, f"{path}.{k}", None, minimum=0) for k in _LIMIT_KEYS}
        caps = _remedies(r, r.table(table, "remedies", f"{path}.remedies", required=True), f"{path}.remedies")
        roles[tier] = Limits(role=tier, currency=currency, remedy_caps=caps, **amounts)
    employees = {}
    for employee_id, table in r.table(data, "employees", "employees", required=False).items():
        path = f"employees.{employee_id}"
        if not isinstance(table, dict):
            r.bad(path, "must be a table")
            continue
        r.only(table, frozenset({*_LIMIT_KEYS, "capacity", "remedies"}), path)
        override: dict[str, Any] = {
            k: r.integer(table, k, f"{path}.{k}", None, minimum=0) for k in (*_LIMIT_KEYS, "capacity") if k in table
        }
        if "remedies" in table:
            override["remedies"] = _remedies(
                r, r.table(table, "remedies", f"{path}.remedies", required=True), f"{path}.remedies"
            )
        employees[employee_id] = override
    automation_table = r.table(data, "automation", "automation", required=False)
    r.only(automation_table, frozenset({"enabled", "limit", "remedies"}), "automation")
    automation = Automation(
        enabled=r.boolean(automation_table, "enabled", "automation.enabled", False),
        limit=r.integer(automation_table, "limit", "automation.limit", 0, minimum=0),
        remedies=frozenset(_kind_list(r, automation_table.get("remedies", []), "automation.remedies")),
    )
    declarer_roles, playbooks = _incidents(r, r.table(data, "incidents", "incidents", required=False), tiers)
    sla = _sla(r, r.table(data, "sla", "sla", required=True))
    calendar = _calendar(r, r.table(data, "calendar", "calendar", required=True), "calendar")
    team_calendars = {}
    for team, table in r.table(data, "team_calendars", "team_calendars", required=False).items():
        if not isinstance(table, dict):
            r.bad(f"team_calendars.{team}", "must be a table")
            continue
        team_calendars[team] = _calendar(r, table, f"team_calendars.{team}")
    approval_decision = parse_duration(data.get("approval_decision", "4h"))
    if approval_decision is None:
        r.bad("approval_decision", 'must be a positive duration like "4h", "30m" or "90s"')
    warn_share = r.integer(data, "sla_warn_share_bp", "sla_warn_share_bp", 7500, minimum=1)
    if warn_share > 10_000:
        r.bad("sla_warn_share_bp", f"must be at most 10000 (the whole budget), got {warn_share}")
    policy_values = {
        "max_transfers": r.integer(data, "max_transfers", "max_transfers", 2, minimum=0),
        "default_capacity": r.integer(data, "default_capacity", "default_capacity", 25, minimum=1),
    }
    r.raise_if_bad(PolicyError)
    return Policy(
        version=version,
        currency=currency,
        tiers=tiers,
        roles=roles,
        sla=sla,
        calendar=calendar,
        employees=employees,
        automation=automation,
        team_calendars=team_calendars,
        approval_decision=approval_decision or timedelta(hours=4),
        warn_share_bp=warn_share,
        rates=rates,
        rates_version=rates_version,
        declarer_roles=declarer_roles,
        playbooks=playbooks,
        **policy_values,
    )


def _rates(r: PolicyReader, table: Mapping[str, Any], base: str) -> tuple[dict[str, Fraction], str]:
    """The rates table: a version, and each currency's value in base units as a decimal string."""
    if not table:
        return {}, ""
    version = r.text(table, "version", "rates.version")
    rates = {}
    for code, text in table.items():
        if code == "version":
            continue
        path = f"rates.{code}"
        if code not in KNOWN_CURRENCIES:
            r.bad(path, f"unknown ISO-4217 currency {code!r}")
        elif code == base:
            r.bad(path, f"is the base currency {base}: its rate is 1 by definition")
        elif (value := parse_rate(text)) is None:
            r.bad(path, f'must be a positive decimal string like "1.17", got {text!r}')
        else:
            rates[code] = value
    return rates, version


def _incidents(
    r: PolicyReader, table: Mapping[str, Any], tiers: tuple[str, ...]
) -> tuple[frozenset[str], frozenset[str]]:
    """The incidents table: the tiers that may declare, and the playbooks a declaration may name."""
    r.only(table, frozenset({"declarer_roles", "playbooks"}), "incidents")
    names = {}
    for key in ("declarer_roles", "playbooks"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            r.bad(f"incidents.{key}", f"must be a list of non-empty names, got {value!r}")
            value = []
        names[key] = frozenset(value)
    for role in sorted(names["declarer_roles"] - set(tiers)):
        r.bad("incidents.declarer_roles", f"{role!r} is not a tier; one of {', '.join(tiers)}")
    return names["declarer_roles"], names["playbooks"]


def _decimal_text(value: Fraction) -> str:
    """The shortest decimal string of a rate parsed from one (rates are finite decimals by construction)."""
    digits = 0
    while (value * 10**digits).denominator != 1:
        digits += 1
    whole = value * 10**digits
    text = str(whole.numerator).rjust(digits + 1, "0")
    return f"{text[:-digits]}.{text[-digits:]}" if digits else text


def _tiers(r: PolicyReader, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        r.bad("tiers", "is required: a non-empty list of role names, lowest authority first")
        return ()
    if len(set(value)) != len(value):
        r.bad("tiers", "must not repeat a role")
    return tuple(value)


def _kind(r: PolicyReader, name: Any, path: str) -> RemedyKind | None:
    for kind in RemedyKind:
        if kind.value == name:
            return kind
    r.bad(path, f"unknown remedy kind {name!r}; one of {', '.join(k.value for k in RemedyKind)}")
    return None


def _remedies(r: PolicyReader, table: Mapping[str, Any], path: str) -> dict[RemedyKind, int]:
    caps = {}
    for name in table:
        kind = _kind(r, name, f"{path}.{name}")
        cap = r.integer(table, name, f"{path}.{name}", None, minimum=0)
        if kind is not None:
            caps[kind] = cap
    return caps


def _kind_list(r: PolicyReader, value: Any, path: str) -> list[RemedyKind]:
    if not isinstance(value, list):
        r.bad(path, "must be a list of remedy kinds")
        return []
    return [k for i, name in enumerate(value) if (k := _kind(r, name, f"{path}[{i}]")) is not None]


def _sla(r: PolicyReader, table: Mapping[str, Any]) -> dict[tuple[SlaClock, Outlook, Severity], timedelta]:
    clocks = (SlaClock.ACKNOWLEDGE, SlaClock.RESOLVE)
    r.only(table, frozenset(c.value for c in clocks), "sla")
    out = {}
    for clock in clocks:
        clock_table = r.table(table, clock.value, f"sla.{clock.value}", required=True)
        r.only(clock_table, frozenset(o.value for o in Outlook), f"sla.{clock.value}")
        for outlook in Outlook:
            path = f"sla.{clock.value}.{outlook.value}"
            budgets = r.table(clock_table, outlook.value, path, required=True)
            r.only(budgets, frozenset(s.value for s in Severity), path)
            for severity in Severity:
                if not budgets:
                    continue  # the missing table is already reported once
                span = parse_duration(budgets.get(severity.value))
                if span is None:
                    r.bad(f"{path}.{severity.value}", 'is required: a positive duration like "4h", "30m" or "90s"')
                    continue
                out[(clock, outlook, severity)] = span
    return out


def _calendar(r: PolicyReader, table: Mapping[str, Any], path: str) -> BusinessCalendar:
    r.only(table, frozenset({"timezone", "holidays", "hours"}), path)
    timezone = r.text(table, "timezone", f"{path}.timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        r.bad(f"{path}.timezone", f"unknown IANA time zone {timezone!r}")
        timezone = "UTC"
    holidays = set()
    raw_holidays = table.get("holidays", [])
    if not isinstance(raw_holidays, list):
        r.bad(f"{path}.holidays", 'must be a list of "YYYY-MM-DD" dates')
        raw_holidays = []
    for i, value in enumerate(raw_holidays):
        try:
            holidays.add(value if isinstance(value, date) else date.fromisoformat(str(value)))
        except ValueError:
            r.bad(f"{path}.holidays[{i}]", f'must be a date "YYYY-MM-DD", got {value!r}')
    hours_table = r.table(table, "hours", f"{path}.hours", required=True)
    r.only(hours_table, frozenset(WEEKDAYS), f"{path}.hours")
    hours: dict[int, tuple[tuple[int, int], ...]] = {}
    for index, day in enumerate(WEEKDAYS):
        periods = _periods(r, hours_table.get(day, []), f"{path}.hours.{day}")
        if periods:
            hours[index] = periods
    if hours_table and not hours:
        r.bad(f"{path}.hours", "must open on at least one weekday")
    return BusinessCalendar(timezone=timezone, hours=hours, holidays=frozenset(holidays))


def _periods(r: PolicyReader, value: Any, path: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        r.bad(path, 'must be a list of "HH:MM-HH:MM" periods')
        return ()
    periods = []
    for i, text in enumerate(value):
        match = _PERIOD.match(text) if isinstance(text, str) else None
        start = int(match.group(1)) * 60 + int(match.group(2)) if match else -1
        end = int(match.group(3)) * 60 + int(match.group(4)) if match else -1
        valid = match and int(match.group(2)) < 60 and int(match.group(4)) < 60 and 0 <= start < end <= 24 * 60
        if not valid:
            r.bad(f"{path}[{i}]", f'must be "HH:MM-HH:MM" with start before end within the day, got {text!r}')
            continue
        if periods and start < periods[-1][1]:
            r.bad(f"{path}[{i}]", "periods must be in order and must not overlap")
            continue
        periods.append((start, end))
    return tuple(periods)
