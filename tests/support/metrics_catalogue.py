"""What the code exposes to Prometheus, and what PromQL in deploy/ refers to, so tests can compare the two.

``exposed_series()`` builds the kit's and every service's metrics into one fresh ``CollectorRegistry`` and
returns each series name a scrape can show (``_total``/``_created`` for counters, ``_bucket``/``_sum``/
``_count``/``_created`` for histograms, ``_info`` for infos) with its label names. ``promql_selectors()``
pulls the metric names (and the label names they are matched on) out of a PromQL expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.common.metrics import BUILD_LABELS, KitMetrics
from services.compensation.adapters.metrics import CompensationMetrics
from services.escalation.adapters.metrics import EscalationMetrics
from services.followup.adapters.metrics import FollowupMetrics
from services.intake.adapters.metrics import IntakeMetrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"

# Labels a scrape adds (prometheus.yml: job, instance, service) and the ones the exposition format adds.
SCRAPE_LABELS = frozenset({"job", "instance", "service"})
FORMAT_LABELS = {"histogram": {"le"}, "summary": {"quantile"}, "info": set()}
# Series Prometheus makes itself for every target.
SCRAPE_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    }
)

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def build_all(registry: CollectorRegistry) -> list[object]:
    """Instantiate the kit's metrics and each service's metrics class into ``registry``."""
    return [
        KitMetrics(registry),
        IntakeMetrics(registry),
        EscalationMetrics(registry),
        CompensationMetrics(registry),
        FollowupMetrics(registry),
    ]


def exposed_series() -> dict[str, frozenset[str]]:
    """Return {series name: label names} for every series the code can expose."""
    registry = CollectorRegistry()
    build_all(registry)
    series: dict[str, frozenset[str]] = {}
    for collector in list(registry._collector_to_names):  # the registered metric objects
        labelnames = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            for suffix in _SUFFIXES[family.type]:
                extra = FORMAT_LABELS.get(family.type, set()) if suffix in ("_bucket", "") else set()
                if family.type == "info":
                    # The policy Info carries the version in force; the build Info what is running.
                    extra = set(BUILD_LABELS) if family.name == "recovery_build" else {"version"}
                series[family.name + suffix] = frozenset(labelnames | extra)
    return series


@dataclass(frozen=True)
class Selector:
    """One metric name in an expression, with the label names its matchers, grouping and matching use."""

    name: str
    labels: frozenset[str]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
        "Inf",
        "NaN",
        # aggregation operators, which may stand before their `by (...)` clause rather than a parenthesis
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)


def promql_selectors(expr: str) -> list[Selector]:
    """Return the metric names an expression selects, each with the label names used near it.

    A small scanner, not a full parser: strings, ranges and Grafana variables are blanked, label lists of
    ``by``/``without``/``on``/``ignoring``/``group_*`` are collected, and every remaining identifier that is
    not a function call or keyword is a metric name. Matcher label names are bound to the name before them;
    grouping labels (which may come from any operand) are returned under the pseudo-name ``""``.
    """
    text = _GRAFANA_VAR.sub("5m", expr)
    strings: list[str] = []
    text = _STRING.sub(lambda m: strings.append(m[0]) or '""', text)
    text = _RANGE.sub("", text)
    grouping: set[str] = set()

    def take_labels(match: re.Match) -> str:
        grouping.update(label.strip() for label in match[2].split(",") if label.strip())
        return f" {match[1]} "

    text = _LABEL_LIST.sub(take_labels, text)
    found: list[Selector] = []
    matchers = list(_MATCHERS.finditer(text))
    bare = _MATCHERS.sub(lambda m: " " * len(m[0]), text)  # same offsets, matchers hidden
    for match in _IDENT.finditer(bare):
        name, call = match[1], match[2]
        if call or name in _KEYWORDS:
            continue
        labels: set[str] = set()
        end = match.end(1)
        following = next((m for m in matchers if m.start() >= end and not bare[end : m.start()].strip()), None)
        if following is not None:
            labels = {part.split("=")[0].split("!")[0].strip() for part in following[1].split(",") if part.strip()}
            labels = {label.rstrip("~") for label in labels if label}
        found.append(Selector(name, frozenset(labels)))
    for match in matchers:  # a selector with no name: {__name__=~...} is not used in our files
        before = text[: match.start()].rstrip()
        if not before or not re.search(r"[a-zA-Z0-9_:]$", before):
            found.append(Selector("", frozenset({"__name__"})))
    if grouping:
        found.append(Selector("", frozenset(grouping)))
    return found


def check_exprs(exprs: dict[str, str], recorded: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Return problems: names neither exposed by the code, made by a scrape, nor recorded by a rule,
    and matcher labels a code metric does not have. ``exprs`` maps where an expression is to the expression."""
    exposed = exposed_series()
    problems = []
    for where, expr in exprs.items():
        for selector in promql_selectors(expr):
            if selector.name == "":
                if "__name__" in selector.labels:
                    problems.append(f"{where}: a selector without a metric name")
                    continue
                known = set(SCRAPE_LABELS).union(*exposed.values())
                if unknown := selector.labels - known:
                    problems.append(f"{where}: groups or matches on unknown label(s) {sorted(unknown)}")
                continue
            if selector.name in recorded or selector.name in SCRAPE_SERIES:
                continue
            if selector.name not in exposed:
                problems.append(f"{where}: {selector.name} is not a metric the code defines")
                continue
            unknown = selector.labels - exposed[selector.name] - SCRAPE_LABELS
            if unknown:
                problems.append(f"{where}: {selector.name} has no label(s) {sorted(unknown)}")
    return problems
