"""The intake service's errors, hanging from the shared tree in ``services.common.errors``.

    RecoveryError
    └── InvalidInput                  malformed input; ``violations`` names each bad field or key
        ├── InvalidFailureReport      a failure report breaks a validation rule -> INVALID_ARGUMENT / dead-letter
        └── PolicyError               a classification policy file is malformed -> refused, previous policy kept

Build them with ``InvalidFailureReport.of(FieldViolation(path, why), ...)`` so every violation is reported at once.
"""

from __future__ import annotations

from services.common.errors import FieldViolation, InvalidInput

__all__ = ["FieldViolation", "InvalidFailureReport", "PolicyError"]


class InvalidFailureReport(InvalidInput):
    """A failure report was refused; ``violations`` lists every field path that is wrong and why."""


class PolicyError(InvalidInput):
    """A classification policy file was refused; ``violations`` name the TOML keys that are wrong."""
