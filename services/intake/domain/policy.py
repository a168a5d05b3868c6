"""The classification policy: loaded from TOML, validated whole, refused with every bad key named.

Layout (see ``services/intake/policy.toml``)::

    version = "..."                                  required, non-empty
    [severity.base]        <category> = "<severity>" every category, required
    [severity.impact]      <impact> = "<severity>"   optional per impact
    [severity.money]       include_order_value = bool (default true)
    [severity.money.thresholds.<CUR>]  moderate, major, critical = minor units, non-decreasing
    [outlook]              repeat_window_days = int  (default 365; also the history's failure lookback)
    [history]              case_lookback_days = int  (default 90: prior cases and compensation received)
    [merge]                window_hours = int        (default 48)
    [routing]              default_team = "..."      (required: the queue of system-detected failures)
    [routing.category]     <category> = "<team>"     optional per category
    [hotspot]              factor_bps = int (default 30000), min_count = int (default 5),
                           window_minutes = int (default 60), baseline_windows = int (default 24)
    [hotspot.dimension.<dimension>]  window_minutes, baseline_windows: per-dimension overrides
    [publishers]           unknown = "accept" | "refuse" (default "accept": counted, as source other_system)
    [publishers.systems."<ce_source>"]  source = "<source>": what a publisher that names no source stands for
    [locale]               default = "en" (a supported locale: en, it, lt, pl): what a case speaks when
                           neither the report nor the market says
    [locale.by_timezone]   "<IANA zone>" = "<locale>": the market's language by the customer's time zone
    [locale.by_currency]   <CUR> = "<locale>": else by the order's (or customer value's) currency
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from services.common.policy_reader import PolicyReader, load_toml
from services.common.texts import FALLBACK_LOCALE, SUPPORTED_LOCALES, LocalePolicy, parse_locale
from services.intake.domain.errors import PolicyError
from services.intake.domain.model import KNOWN_CURRENCIES, Category, HotspotDimension, Impact, Severity, Source

# The severities a money threshold can raise to, lowest first; "minor" needs no threshold.
THRESHOLD_LEVELS: tuple[Severity, ...] = (Severity.MODERATE, Severity.MAJOR, Severity.CRITICAL)


@dataclass(frozen=True)
class MoneyThresholds:
    """Minor-unit amounts at stake (in one currency) from which severity is at least that level."""

    moderate: int
    major: int
    critical: int

    def level(self, amount_minor: int) -> tuple[Severity, int] | None:
        """Return the highest level reached by ``amount_minor`` and its threshold, or None below all of them."""
        reached = None
        for severity, threshold in zip(THRESHOLD_LEVELS, (self.moderate, self.major, self.critical), strict=True):
            if amount_minor >= threshold:
                reached = (severity, threshold)
        return reached


@dataclass(frozen=True)
class HotspotWindow:
    """How one dimension is counted: windows of ``size``, compared with the ``baseline_windows`` before."""

    size: timedelta = timedelta(hours=1)
    baseline_windows: int = 24


# Hour of day compares a day's hour with the same hour on the days before, not with the previous hours.
_DEFAULT_WINDOWS = {HotspotDimension.HOUR_OF_DAY: HotspotWindow(size=timedelta(days=1), baseline_windows=7)}


@dataclass(frozen=True)
class Policy:
    """A validated classification policy; build it with ``load_policy``."""

    version: str
    base_severity: Mapping[Category, Severity]
    impact_severity: Mapping[Impact, Severity]
    money_thresholds: Mapping[str, MoneyThresholds]
    include_order_value: bool = True
    repeat_window: timedelta = timedelta(days=365)
    merge_window: timedelta = timedelta(hours=48)
    hotspot_factor_bps: int = 30_000
    hotspot_min_count: int = 5
    hotspot_windows: Mapping[HotspotDimension, HotspotWindow] = field(default_factory=dict)
    case_lookback: timedelta = timedelta(days=90)
    default_team: str = "customer-care"
    team_by_category: Mapping[Category, str] = field(default_factory=dict)
    # Publishers that name no source in their reports, by CloudEvents source; and whether one not listed is
    # accepted (as an other system) or refused.
    publishers: Mapping[str, Source] = field(default_factory=dict)
    accept_unknown_publishers: bool = True
    locale: LocalePolicy = field(default_factory=LocalePolicy)

    def hotspot_window(self, dimension: HotspotDimension) -> HotspotWindow:
        """Return how ``dimension`` is counted."""
        return self.hotspot_windows.get(dimension) or _DEFAULT_WINDOWS.get(dimension) or HotspotWindow()


_TOP_KEYS = frozenset(
    {"version", "severity", "outlook", "history", "merge", "routing", "hotspot", "publishers", "locale"}
)
_WINDOW_KEYS = frozenset({"window_minutes", "baseline_windows"})
_DIMENSION_BY_NAME = {d.value: d for d in HotspotDimension}
_SEVERITY_KEYS = frozenset({"base", "impact", "money"})
_MONEY_KEYS = frozenset({"include_order_value", "thresholds"})
_CATEGORY_BY_NAME = {c.value: c for c in Category}
_IMPACT_BY_NAME = {i.value: i for i in Impact}


class _Reader(PolicyReader):
    """The kit's policy reader plus intake's own value: a severity level."""

    def severity(self, value: Any, path: str) -> Severity:
        return self.member(value, Severity, path, Severity.MINOR)


def load_policy(text: str) -> Policy:
    """Return the policy in TOML ``text``; raise ``PolicyError`` naming every missing, unknown or bad key."""
    data = load_toml(text, PolicyError)
    r = _Reader()
    r.only(data, _TOP_KEYS, "")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        r.bad("version", "is required and must be a non-empty string")
    severity = r.table(data, "severity", "severity", required=True)
    r.only(severity, _SEVERITY_KEYS, "severity")
    base = _base(r, r.table(severity, "base", "severity.base", required=True))
    impacts = _impacts(r, r.table(severity, "impact", "severity.impact", required=False))
    money = r.table(severity, "money", "severity.money", required=False)
    r.only(money, _MONEY_KEYS, "severity.money")
    include_order_value = r.boolean(money, "include_order_value", "severity.money.include_order_value", True)
    thresholds = _thresholds(r, r.table(money, "thresholds", "severity.money.thresholds", required=False))
    outlook = r.table(data, "outlook", "outlook", required=False)
    r.only(outlook, frozenset({"repeat_window_days"}), "outlook")
    repeat_days = r.integer(outlook, "repeat_window_days", "outlook.repeat_window_days", 365, minimum=1)
    merge = r.table(data, "merge", "merge", required=False)
    r.only(merge, frozenset({"window_hours"}), "merge")
    merge_hours = r.integer(merge, "window_hours", "merge.window_hours", 48, minimum=0)
    history = r.table(data, "history", "history", required=False)
    r.only(history, frozenset({"case_lookback_days"}), "history")
    case_days = r.integer(history, "case_lookback_days", "history.case_lookback_days", 90, minimum=1)
    routing = r.table(data, "routing", "routing", required=True)
    r.only(routing, frozenset({"default_team", "category"}), "routing")
    default_team = r.text(routing, "default_team", "routing.default_team")
    team_by_category = _routes(r, r.table(routing, "category", "routing.category", required=False))
    hotspot = r.table(data, "hotspot", "hotspot", required=False)
    r.only(hotspot, frozenset({"factor_bps", "min_count", "dimension"}) | _WINDOW_KEYS, "hotspot")
    # A factor below 1x (10000 bps) would flag ordinary traffic as a hot spot.
    factor_bps = r.integer(hotspot, "factor_bps", "hotspot.factor_bps", 30_000, minimum=10_000)
    min_count = r.integer(hotspot, "min_count", "hotspot.min_count", 5, minimum=1)
    windows = _windows(r, hotspot, r.table(hotspot, "dimension", "hotspot.dimension", required=False))
    publishers_table = r.table(data, "publishers", "publishers", required=False)
    r.only(publishers_table, frozenset({"unknown", "systems"}), "publishers")
    unknown = publishers_table.get("unknown", "accept")
    if unknown not in ("accept", "refuse"):
        r.bad("publishers.unknown", f'must be "accept" or "refuse", got {unknown!r}')
    publishers = _publishers(r, r.table(publishers_table, "systems", "publishers.systems", required=False))
    locale = _locale(r, r.table(data, "locale", "locale", required=False))
    r.raise_if_bad(PolicyError)
    return Policy(
        version=str(version),
        base_severity=MappingProxyType(base),
        impact_severity=MappingProxyType(impacts),
        money_thresholds=MappingProxyType(thresholds),
        include_order_value=include_order_value,
        repeat_window=timedelta(days=repeat_days),
        merge_window=timedelta(hours=merge_hours),
        hotspot_factor_bps=factor_bps,
        hotspot_min_count=min_count,
        hotspot_windows=MappingProxyType(windows),
        case_lookback=timedelta(days=case_days),
        default_team=default_team,
        team_by_category=MappingProxyType(team_by_category),
        publishers=MappingProxyType(publishers),
        accept_unknown_publishers=unknown != "refuse",
        locale=locale,
    )


def _locale(r: _Reader, table: Mapping[str, Any]) -> LocalePolicy:
    r.only(table, frozenset({"default", "by_timezone", "by_currency"}), "locale")

    def one(value: Any, path: str) -> str:
        try:
            parsed = parse_locale(value) if isinstance(value, str) else ""
        except ValueError as exc:
            r.bad(path, str(exc))
            return FALLBACK_LOCALE
        if not parsed:
            r.bad(path, f"must be a supported locale ({', '.join(SUPPORTED_LOCALES)}), got {value!r}")
        return parsed or FALLBACK_LOCALE

    by_timezone = r.table(table, "by_timezone", "locale.by_timezone", required=False)
    by_currency = r.table(table, "by_currency", "locale.by_currency", required=False)
    for code in by_currency:
        if code not in KNOWN_CURRENCIES:
            r.bad(f"locale.by_currency.{code}", f"unknown ISO-4217 currency {code!r}")
    return LocalePolicy(
        default=one(table.get("default", "en"), "locale.default"),
        by_timezone=MappingProxyType({z: one(v, f'locale.by_timezone."{z}"') for z, v in by_timezone.items()}),
        by_currency=MappingProxyType({c: one(v, f"locale.by_currency.{c}") for c, v in by_currency.items()}),
    )


def _publishers(r: _Reader, table: Mapping[str, Any]) -> dict[str, Source]:
    # Frontline and followup are this system's own channels: no outside publisher may stand for them.
    allowed = {s.value: s for s in Source if s not in (Source.FRONTLINE, Source.FOLLOWUP)}
    out = {}
    for ce_source, entry in table.items():
        path = f'publishers.systems."{ce_source}"'
        if not isinstance(entry, dict):
            r.bad(path, "must be a table")
            continue
        r.only(entry, frozenset({"source"}), path)
        name = entry.get("source")
        if name not in allowed:
            r.bad(f"{path}.source", f"must be one of {', '.join(sorted(allowed))}, got {name!r}")
            continue
        out[ce_source] = allowed[name]
    return out


def _window(r: _Reader, table: Mapping[str, Any], path: str, default: HotspotWindow) -> HotspotWindow:
    minutes = r.integer(
        table, "window_minutes", f"{path}.window_minutes", int(default.size.total_seconds() // 60), minimum=1
    )
    baseline = r.integer(table, "baseline_windows", f"{path}.baseline_windows", default.baseline_windows, minimum=1)
    return HotspotWindow(size=timedelta(minutes=minutes), baseline_windows=baseline)


def _windows(r: _Reader, hotspot: Mapping[str, Any], table: Mapping[str, Any]) -> dict[HotspotDimension, HotspotWindow]:
    # The [hotspot] keys set every dimension's window; [hotspot.dimension.<name>] overrides one.
    general = _window(r, hotspot, "hotspot", HotspotWindow())
    windows = {}
    for dimension in HotspotDimension:
        default = general if _WINDOW_KEYS & hotspot.keys() else _DEFAULT_WINDOWS.get(dimension, general)
        windows[dimension] = default
    for name, value in table.items():
        path = f"hotspot.dimension.{name}"
        dimension = _DIMENSION_BY_NAME.get(name)
        if dimension is None:
            r.bad(path, f"unknown dimension; one of {', '.join(_DIMENSION_BY_NAME)}")
            continue
        if not isinstance(value, dict):
            r.bad(path, "must be a table")
            continue
        r.only(value, _WINDOW_KEYS, path)
        windows[dimension] = _window(r, value, path, windows[dimension])
    return windows


def _routes(r: _Reader, table: Mapping[str, Any]) -> dict[Category, str]:
    routes = {}
    for name, team in table.items():
        category = _CATEGORY_BY_NAME.get(name)
        if category is None:
            r.bad(f"routing.category.{name}", "unknown category")
        elif not isinstance(team, str) or not team.strip():
            r.bad(f"routing.category.{name}", "must be a non-empty team name")
        else:
            routes[category] = team
    return routes


def _base(r: _Reader, table: Mapping[str, Any]) -> dict[Category, Severity]:
    base = {}
    for name, value in table.items():
        category = _CATEGORY_BY_NAME.get(name)
        if category is None:
            r.bad(f"severity.base.{name}", "unknown category")
            continue
        base[category] = r.severity(value, f"severity.base.{name}")
    if table:
        # Every category needs a base: a new category must be classified on purpose, not by accident.
        for category in Category:
            if category.value not in table:
                r.bad(f"severity.base.{category.value}", "is required")
    return base


def _impacts(r: _Reader, table: Mapping[str, Any]) -> dict[Impact, Severity]:
    impacts = {}
    for name, value in table.items():
        impact = _IMPACT_BY_NAME.get(name)
        if impact is None:
            r.bad(f"severity.impact.{name}", "unknown impact")
            continue
        impacts[impact] = r.severity(value, f"severity.impact.{name}")
    return impacts


def _thresholds(r: _Reader, table: Mapping[str, Any]) -> dict[str, MoneyThresholds]:
    thresholds = {}
    for currency, levels in table.items():
        path = f"severity.money.thresholds.{currency}"
        if currency not in KNOWN_CURRENCIES:
            r.bad(path, "unknown ISO-4217 currency")
            continue
        if not isinstance(levels, dict):
            r.bad(path, "must be a table")
            continue
        r.only(levels, frozenset(s.value for s in THRESHOLD_LEVELS), path)
        amounts = [r.integer(levels, s.value, f"{path}.{s.value}", None, minimum=0) for s in THRESHOLD_LEVELS]
        if amounts != sorted(amounts):
            r.bad(path, "thresholds must not decrease from moderate to major to critical")
        thresholds[currency] = MoneyThresholds(*amounts)
    return thresholds
