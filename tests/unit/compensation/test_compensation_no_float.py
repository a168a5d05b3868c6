"""No float anywhere in compensation: no `float` name, no float literal, no true division, no float in the policy."""

from __future__ import annotations

import io
import tokenize
import tomllib
from pathlib import Path

import services.compensation

PACKAGE = Path(services.compensation.__file__).parent


def _float_tokens(source: str) -> list[str]:
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string == "float":
            found.append(f"line {tok.start[0]}: the float type")
        elif tok.type == tokenize.NUMBER and any(c in tok.string.lower() for c in ".ej") and "x" not in tok.string:
            found.append(f"line {tok.start[0]}: float literal {tok.string}")
        elif tok.type == tokenize.OP and tok.string in {"/", "/="}:
            found.append(f"line {tok.start[0]}: true division (gives a float)")
    return found


def test_no_python_file_in_the_service_uses_floats():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    problems = {str(f.relative_to(PACKAGE)): p for f in files if (p := _float_tokens(f.read_text()))}
    assert problems == {}


def test_the_scanner_finds_what_it_looks_for():
    assert len(_float_tokens("x: float = 1.5\ny = a / b\nz = 1e3\n")) == 4
    assert _float_tokens("x = a // b  # 0.5 in a comment\ns = '1.5 / 2'\n") == []


def _floats_in(value) -> list:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats_in(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats_in(v)]
    return []


def test_the_shipped_policy_holds_no_float():
    assert _floats_in(tomllib.loads(PACKAGE.joinpath("policy.toml").read_text())) == []
