"""Prometheus' own tools for the tests (installed by scripts/ensure_prometheus.sh) and a reader for our rule files.

The rule files are YAML and the project carries no YAML library, so ``load_rules`` reads the plain subset
they are written in (groups, rules, ``key: value``, nested ``labels``/``annotations``, ``|`` block scalars).
Its result is checked against promtool's own rule count, so a rule it missed would fail the tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "scripts" / "ensure_prometheus.sh"


def prometheus_tool(name: str) -> str:
    """Return the path of ``promtool`` or ``prometheus``, installing Debian's package first when missing."""
    found = shutil.which(name)
    if found is None:
        done = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{ENSURE} failed:\n{done.stdout}\n{done.stderr}"
        found = shutil.which(name)
    assert found, f"{name} is still not on PATH after {ENSURE}"
    return found


@dataclass
class Rule:
    """One recording or alerting rule as written."""

    kind: str  # "record" or "alert"
    name: str
    group: str
    expr: str = ""
    fields: dict[str, str] = field(default_factory=dict)  # for, keep_firing_for, ...
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


_RULE = re.compile(r"^(\s*)- (record|alert):\s*(.+?)\s*$")
_GROUP = re.compile(r"^\s*- name:\s*(.+?)\s*$")
_KEY = re.compile(r"^(\s*)([A-Za-z_][\w-]*):\s*(.*?)\s*$")


def _scalar(text: str) -> str:
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return text


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def load_rules(path: Path) -> list[Rule]:
    """Return the rules of a Prometheus rule file written in the plain YAML subset described above."""
    lines = path.read_text().splitlines()
    rules: list[Rule] = []
    group = ""
    rule: Rule | None = None
    rule_indent = -1
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if match := _RULE.match(line):
            rule = Rule(kind=match[2], name=_scalar(match[3]), group=group)
            rules.append(rule)
            rule_indent = len(match[1]) + 2
            continue
        if match := _GROUP.match(line):
            group, rule = _scalar(match[1]), None
            continue
        if rule is None or _indent(line) < rule_indent:
            rule = None
            continue
        match = _KEY.match(line)
        assert match and len(match[1]) == rule_indent, f"{path}:{i}: not in the rule-file subset: {line!r}"
        key, value = match[2], match[3]
        if value in ("|", "|-", ">", ">-"):
            block = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > rule_indent):
                block.append(lines[i])
                i += 1
            depth = min(_indent(b) for b in block if b.strip())
            text = [b[depth:] for b in block]
            joined = "\n".join(text) if value.startswith("|") else " ".join(t.strip() for t in text)
            value = joined.strip("\n") if value.endswith("-") else joined.rstrip("\n") + "\n"
        elif value == "" and key in ("labels", "annotations"):
            mapping: dict[str, str] = {}
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > rule_indent):
                if lines[i].strip():
                    inner = _KEY.match(lines[i])
                    assert inner, f"{path}:{i + 1}: not in the rule-file subset: {lines[i]!r}"
                    mapping[inner[2]] = _scalar(inner[3])
                i += 1
            setattr(rule, key, mapping)
            continue
        else:
            value = _scalar(value)
        if key == "expr":
            rule.expr = value
        else:
            rule.fields[key] = value
    return rules


def promtool_rule_count(promtool: str, path: Path) -> int:
    """Return how many rules ``promtool check rules`` finds in ``path``."""
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=True)
    match = re.search(r"SUCCESS: (\d+) rules found", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    return int(match[1])
