"""Reading a TOML policy file whole: every missing, unknown or ill-typed key named, not just the first.

Pure (no I/O): each service's ``domain/policy.py`` parses its text with these and raises its own
``InvalidInput`` subclass listing every violation, so one edit-and-reload shows the whole list.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from typing import Any, TypeVar

from services.common.errors import FieldViolation, InvalidInput

E = TypeVar("E", bound=enum.Enum)


def load_toml(text: str, error: type[InvalidInput]) -> dict[str, Any]:
    """Return the parsed TOML document; raises ``error`` when it is not valid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error.of(FieldViolation("<file>", f"not valid TOML: {exc}")) from exc


class PolicyReader:
    """Reads typed values out of parsed TOML, collecting a violation per bad key instead of stopping."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def bad(self, key: str, why: str) -> None:
        """Record that ``key`` is wrong and why."""
        self.violations.append(FieldViolation(key, why))

    def raise_if_bad(self, error: type[InvalidInput]) -> None:
        """Raise ``error`` listing every violation recorded, if any."""
        if self.violations:
            raise error.of(*self.violations)

    def table(self, data: Mapping[str, Any], key: str, path: str, *, required: bool) -> Mapping[str, Any]:
        """Return the sub-table ``key`` ({} when absent or not a table, recording why)."""
        value = data.get(key)
        if value is None:
            if required:
                self.bad(path, "is required")
            return {}
        if not isinstance(value, dict):
            self.bad(path, "must be a table")
            return {}
        return value

    def only(self, data: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
        """Record every key of ``data`` not in ``allowed``."""
        # Unknown keys are refused: a typo ("window_hour") would otherwise silently fall back to a default.
        for key in sorted(set(data) - allowed):
            self.bad(f"{path}.{key}" if path else key, "unknown key")

    def integer(self, data: Mapping[str, Any], key: str, path: str, default: int | None, *, minimum: int) -> int:
        """Return the integer ``key`` (``default`` when absent; required when the default is None)."""
        value = data.get(key, default)
        if value is None:
            self.bad(path, "is required")
            return 0
        # bool is an int subclass in Python and TOML floats would bring binary fractions into money: refuse both.
        if not isinstance(value, int) or isinstance(value, bool):
            self.bad(path, f"must be an integer, got {type(value).__name__}")
            return 0
        if value < minimum:
            self.bad(path, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        """Return the boolean ``key`` (``default`` when absent)."""
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.bad(path, "must be true or false")
            return default
        return value

    def text(self, data: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
        """Return the non-empty string ``key`` (``default`` when absent; required when the default is None)."""
        value = data.get(key, default)
        if not isinstance(value, str) or not value.strip():
            self.bad(path, "is required and must be a non-empty string")
            return ""
        return value

    def member(self, value: Any, kind: type[E], path: str, fallback: E) -> E:
        """Return the member of enum ``kind`` whose value is ``value`` (``fallback`` after recording why not)."""
        for member in kind:
            if member.value == value:
                return member
        self.bad(path, f"must be one of {', '.join(str(m.value) for m in kind)}, got {value!r}")
        return fallback
