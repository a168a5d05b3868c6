"""The escalation service's errors, hanging from the shared tree in ``services.common.errors``.

RecoveryError
├── InvalidInput                  malformed input; ``violations`` names each bad field or key
│   ├── InvalidCommand            a command breaks a validation rule        -> INVALID_ARGUMENT / dead-letter
│   └── PolicyError               an empowerment policy file is malformed   -> refused, previous policy kept
├── NotFound                      no such case, approval or offer           -> NOT_FOUND
├── FailedPrecondition            valid, but not now or not by this authority -> FAILED_PRECONDITION
│   ├── IllegalTransition         the case's state does not allow the command (type STATE)
│   └── LimitExceeded             the authority's limits do not cover it (type LIMIT)
├── Forbidden                     not the caller's case or approval         -> PERMISSION_DENIED
└── Conflict                      lost a race; retry                        -> ABORTED
"""

from __future__ import annotations

from services.common.errors import (
    Conflict,
    FailedPrecondition,
    FieldViolation,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionViolation,
)

__all__ = [
    "Conflict",
    "FieldViolation",
    "Forbidden",
    "IllegalTransition",
    "InvalidCommand",
    "LimitExceeded",
    "NotFound",
    "PolicyError",
    "PreconditionViolation",
]


class InvalidCommand(InvalidInput):
    """A command was refused as malformed; ``violations`` lists every bad field."""


class PolicyError(InvalidInput):
    """An empowerment policy file was refused; ``violations`` name the TOML keys that are wrong."""


class IllegalTransition(FailedPrecondition):
    """The case's state does not allow the command; carries a STATE precondition violation."""

    @classmethod
    def of(cls, case_id: str, why: str) -> IllegalTransition:
        """Return the error for case ``case_id`` with the reason ``why``."""
        return cls(why, (PreconditionViolation(type="STATE", subject=f"case/{case_id}", description=why),))


class LimitExceeded(FailedPrecondition):
    """An authority's limits do not cover an amount; carries LIMIT precondition violations."""

    @classmethod
    def of(cls, subject: str, *reasons: str) -> LimitExceeded:
        """Return the error for ``subject`` (e.g. ``employee/e-17``) listing every limit broken."""
        text = "; ".join(reasons)
        return cls(text, tuple(PreconditionViolation(type="LIMIT", subject=subject, description=r) for r in reasons))
