"""deploy/prometheus: the config and rules are valid for promtool, the alert unit tests pass, every alert is
complete (severity, summary, runbook) and tested, every metric the rules read is one the code defines, and the
SLO rules follow the multi-window, multi-burn-rate pattern."""

from __future__ import annotations

import re
import subprocess

import pytest

from services.__main__ import DEFAULT_METRICS_PORTS
from tests.support.metrics_catalogue import PROMETHEUS_DIR, check_exprs
from tests.support.prometheus_tools import load_rules, prometheus_tool, promtool_rule_count

CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTS = PROMETHEUS_DIR / "rules" / "alerts.yml"
SLO = PROMETHEUS_DIR / "rules" / "slo.yml"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# The workbook's table: (severity, long window, short window, burn rate).
BURN_RATES = (
    ("critical", "1h", "5m", 14.4),
    ("critical", "6h", "30m", 6),
    ("warning", "1d", "2h", 3),
    ("warning", "3d", "6h", 1),
)
# Each SLO: its error-ratio recording rules' name without the window, its error budget, its alerts' name prefix.
SLOS = {
    "straight-through-availability": ("recovery:straight_through_errors:ratio_rate", 0.005, "RecoverySloAvailability"),
    "straight-through-freshness": ("recovery:straight_through_events_late:ratio_rate", 0.01, "RecoverySloFreshness"),
}

# What an SRE must be told about, at the least (the list).
REQUIRED_ALERTS = {
    "RecoveryServiceDown",
    "RecoveryConsumerLagHigh",
    "RecoveryConsumerStalled",
    "RecoveryRecordsDeadLettered",
    "RecoveryDeadLetterRateHigh",
    "RecoveryOutboxStuck",
    "RecoverySchedulerLate",
    "RecoveryFollowupsOverdue",
    "RecoverySlaBreachRateHigh",
    "RecoveryApprovalsWaitingTooLong",
    "RecoveryGrpcErrorRateHigh",
    "RecoveryPolicyReloadRefused",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    return prometheus_tool("promtool")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=PROMETHEUS_DIR, check=False)


def test_the_config_is_valid_and_loads_both_rule_files(promtool):
    done = run(promtool, "check", "config", str(CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in done.stdout + done.stderr


def test_the_rules_are_valid(promtool):
    done = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alert_and_recording_rule_unit_tests_pass(promtool):
    assert TEST_FILES, "no promtool rule tests in deploy/prometheus/tests"
    done = run(promtool, "test", "rules", *map(str, TEST_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("SUCCESS") == len(TEST_FILES), done.stdout + done.stderr


def test_the_rule_reader_sees_every_rule_promtool_sees(promtool):
    for path in RULE_FILES:
        rules = load_rules(path)
        assert len(rules) == promtool_rule_count(promtool, path), path
        assert all(rule.expr.strip() for rule in rules), path


def test_the_config_scrapes_the_four_services_on_the_make_run_ports():
    text = CONFIG.read_text()
    pairs = re.findall(r'- targets: \["127\.0\.0\.1:(\d+)"\]\s*\n\s*labels:\s*\n\s*service: (\w+)', text)
    assert {service: int(port) for port, service in pairs} == DEFAULT_METRICS_PORTS
    loaded = re.findall(r"^\s*- (rules/\S+\.yml)$", text, re.M)
    assert loaded == ["rules/recording.yml", "rules/alerts.yml", "rules/slo.yml"]


def all_alerts() -> list:
    return [rule for path in RULE_FILES for rule in load_rules(path) if rule.kind == "alert"]


def test_every_alert_has_a_severity_a_summary_and_a_one_line_runbook():
    assert {a.kind for a in load_rules(ALERTS)} == {"alert"}
    for alert in all_alerts():
        assert alert.labels.get("severity") in {"critical", "warning"}, alert.name
        assert alert.annotations.get("summary", "").strip(), alert.name
        runbook = alert.annotations.get("runbook", "").strip()
        assert runbook and "\n" not in runbook, alert.name
        assert set(alert.annotations) == {"summary", "runbook"}, alert.name


def test_the_required_alerts_exist():
    names = [a.name for a in all_alerts()]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert REQUIRED_ALERTS <= set(names), REQUIRED_ALERTS - set(names)


def test_every_alert_has_a_promtool_test_that_makes_it_fire():
    text = "\n".join(path.read_text() for path in TEST_FILES)
    firing = set(re.findall(r"alertname: (\w+)\n\s*exp_alerts:(?! \[\])", text))
    untested = {a.name for a in all_alerts()} - firing
    assert not untested, f"alerts no promtool test shows firing: {sorted(untested)}"


def test_the_runbook_names_the_dead_letter_tool_where_it_applies():
    alerts = {a.name: a for a in load_rules(ALERTS)}
    for name in ("RecoveryRecordsDeadLettered", "RecoveryDeadLetterRateHigh"):
        assert "python -m services.deadletters" in alerts[name].annotations["runbook"]


def test_every_metric_the_rules_read_is_defined_in_the_code():
    recorded = {rule.name for path in RULE_FILES for rule in load_rules(path) if rule.kind == "record"}
    exprs = {f"{path.name}:{rule.name}": rule.expr for path in RULE_FILES for rule in load_rules(path)}
    assert check_exprs(exprs, recorded) == []


def test_recording_rules_follow_the_level_metric_operations_naming():
    for rule in (rule for path in RULE_FILES for rule in load_rules(path) if rule.kind == "record"):
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule.name), rule.name


def test_the_metric_check_catches_a_wrong_name_and_a_wrong_label():
    problems = check_exprs(
        {
            "typo": "sum(rate(recovery_records_consumd_total[5m]))",
            "label": 'recovery_consumer_lag{topc="x"}',
            "grouping": "sum by (tpoic) (recovery_consumer_lag)",
        }
    )
    assert len(problems) == 3, problems


def test_every_slo_records_its_error_ratio_over_every_window():
    records = {rule.name: rule for rule in load_rules(SLO) if rule.kind == "record"}
    expected = {prefix + window for prefix, _budget, _alert in SLOS.values() for window in SLO_WINDOWS}
    assert set(records) == expected
    for prefix, _budget, _alert in SLOS.values():
        for window in SLO_WINDOWS:
            expr = records[prefix + window].expr
            # Every range in the expression is the rule's window, and a quiet path records nothing (no 0/0).
            assert set(re.findall(r"\[(\w+)\]", expr)) == {window}, prefix + window
            assert re.search(r"> 0\s*\)\s*$", expr), prefix + window


def test_every_slo_pages_and_tickets_on_the_workbook_burn_rates():
    alerts = {rule.name: rule for rule in load_rules(SLO) if rule.kind == "alert"}
    assert set(alerts) == {alert + speed for _p, _b, alert in SLOS.values() for speed in ("FastBurn", "SlowBurn")}
    for slo, (prefix, budget, alert_prefix) in SLOS.items():
        for speed, severity in (("FastBurn", "critical"), ("SlowBurn", "warning")):
            alert = alerts[alert_prefix + speed]
            assert alert.labels == {"severity": severity, "slo": slo}, alert.name
            assert "for" not in alert.fields, alert.name  # the short window does what `for` would
            conditions = re.findall(rf"{re.escape(prefix)}(\w+) > ([\d.]+) \* ([\d.]+)", alert.expr)
            wanted = [(w, rate) for sev, long, short, rate in BURN_RATES if sev == severity for w in (long, short)]
            assert [(w, float(rate)) for w, rate, _ in conditions] == [(w, float(r)) for w, r in wanted], alert.name
            assert {float(b) for _, _, b in conditions} == {budget}, alert.name
            assert alert.expr.count(" and") == 2 and alert.expr.count("\nor\n") == 1, alert.name
