"""`make lint` inside the suite, so CI enforces it: buf lint, buf breaking against main, ruff."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_protos_pass_buf_lint():
    result = run(sys.executable, "scripts/buf.py", "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protos_have_no_breaking_change_against_main():
    result = run(sys.executable, "scripts/buf.py", "breaking")
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_passes_ruff():
    result = run(sys.executable, "-m", "ruff", "check", "services", "tests", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_floating_point_type_in_any_contract():
    for proto in (ROOT / "proto").rglob("*.proto"):
        code = "\n".join(line.split("//")[0] for line in proto.read_text().splitlines())
        assert not re.search(r"\b(float|double)\b", code), f"{proto}: money and scores are integers"
