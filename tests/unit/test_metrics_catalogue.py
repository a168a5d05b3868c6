"""The metric catalogue the deploy/ checks compare against is what a scrape really shows, and the Grafana
dashboard reads only metrics the code defines (or the recording rules make)."""

from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.metrics_catalogue import (
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    ROOT,
    build_all,
    check_exprs,
    exposed_series,
    promql_selectors,
)
from tests.support.prometheus_tools import load_rules

DASHBOARD = GRAFANA_DIR / "dashboards" / "recovery.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "recovery.yml"


def scraped_series() -> dict[str, set[str]]:
    """Build every metric into a fresh registry, give each labelled one a child, and read the exposition."""
    registry = CollectorRegistry()
    build_all(registry)
    for collector in list(registry._collector_to_names):
        labelnames = getattr(collector, "_labelnames", ())
        if labelnames:
            collector.labels(*["x"] * len(labelnames))
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_the_catalogue_is_what_a_scrape_shows():
    catalogue = exposed_series()
    scraped = scraped_series()
    assert set(catalogue) == set(scraped)
    for name, labels in scraped.items():
        assert labels <= catalogue[name], name


def test_the_readme_metric_lists_name_real_metrics():
    readme = (ROOT / "README.md").read_text()
    families = {re.sub(r"_(total|created|bucket|sum|count|info)$", "", name) for name in exposed_series()}
    named = set(re.findall(r"`(recovery_[a-z_]+)[{`]", readme))
    assert named, "the README lists no metrics"
    unknown = {name for name in named if name not in exposed_series() and name not in families}
    assert not unknown, unknown


def test_the_selector_scanner_finds_names_labels_and_grouping():
    selectors = promql_selectors(
        'sum by (service, topic) (rate(recovery_records_consumed_total{outcome="processed", topic=~"a|b"}'
        "[$__rate_interval])) / on (service) group_left service:recovery_outbox_backlog:sum offset 1h > 1e3"
        ' and histogram_quantile(0.99, sum(rate(x_bucket{service=~"$service"}[5m])) by (le))'
    )
    by_name = {s.name: s.labels for s in selectors}
    assert by_name["recovery_records_consumed_total"] == {"outcome", "topic"}
    assert by_name["service:recovery_outbox_backlog:sum"] == frozenset()
    assert by_name["x_bucket"] == {"service"}
    assert by_name[""] == {"service", "topic", "le"}
    assert not {"sum", "rate", "by", "on", "group_left", "offset", "histogram_quantile", "e3"} & set(by_name)


def dashboard_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return panels


def test_the_dashboard_parses_and_reads_only_defined_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    recorded = {rule.name for path in (PROMETHEUS_DIR / "rules").glob("*.yml") for rule in load_rules(path)}
    exprs = {
        f"{panel['title']}#{target['refId']}": target["expr"]
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    }
    assert len(exprs) > 30
    assert check_exprs(exprs, recorded) == []
    used = " ".join(exprs.values())
    for metric in (
        "recovery_intake_failures_received_total",
        "recovery_intake_cases_opened_total",
        "recovery_compensation_offers_proposed_total",
        "recovery_compensation_value_proposed_minor_total",
        "recovery_compensation_value_authorized_minor_total",
        "recovery_escalation_authorizations_total",
        "recovery_escalation_approvals_pending",
        "recovery_escalation_approvals_pending_oldest_age_seconds",
        "clock_severity:recovery_escalation_sla_breaches:increase1h",
        "recovery_followup_due_total",
        "recovery_followup_pending",
        "kind:recovery_followup_lateness_seconds:p99_5m",
        "recovery:followup_satisfaction:ratio_1d",
        "recovery:followup_recovery_success:ratio_1d",
        "service_topic:recovery_consumer_lag:sum",
        "recovery_records_deadlettered_total",
        "service:recovery_outbox_backlog:sum",
        "service_method:recovery_grpc_server_errors:ratio_rate5m",
        "recovery:straight_through_errors:ratio_rate1h",
        "recovery:straight_through_events_late:ratio_rate1h",
    ):
        assert metric in used, f"the dashboard shows no {metric}"


def test_the_dashboard_is_well_formed_for_grafana():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource_uid = re.search(r"^\s*uid:\s*(\S+)", DATASOURCES.read_text(), re.M)[1]
    for panel in dashboard_panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
            assert panel["targets"], panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for target in (t for p in dashboard_panels(dashboard) for t in p.get("targets", [])):
        for variable in re.findall(r"\$(\w+)", target["expr"]):
            assert variable in variables or variable.startswith("__"), variable
    providers = DASHBOARD_PROVIDERS.read_text()
    assert "type: file" in providers and "path:" in providers
