"""The compensation service's errors, hanging from the shared tree in ``services.common.errors``.

RecoveryError
├── InvalidInput                  malformed input; ``violations`` names each bad field or key
│   ├── InvalidCaseFacts          an event or what-if request carries facts no offer can be made from
│   │                             -> INVALID_ARGUMENT / dead-letter
│   ├── InvalidEvent              an input event lacks what compensation needs (an incident declaration
│   │                             without its incident or playbook) -> dead-letter
│   └── PolicyError               a compensation policy file is malformed, or reuses a version for
│                                 other content -> refused at start (no start) or at reload (previous kept)
└── NotFound
    ├── UnknownCase               no case facts stored for that case id     -> NOT_FOUND
    ├── UnknownOffer              no offer with that id                     -> NOT_FOUND
    └── UnknownPolicyVersion      that policy version was never loaded here -> NOT_FOUND
"""

from __future__ import annotations

from services.common.errors import FieldViolation, InvalidInput, NotFound

__all__ = [
    "FieldViolation",
    "InvalidCaseFacts",
    "InvalidEvent",
    "PolicyError",
    "UnknownCase",
    "UnknownOffer",
    "UnknownPolicyVersion",
]


class InvalidCaseFacts(InvalidInput):
    """Case facts were refused; ``violations`` lists every field path that is wrong and why."""


class InvalidEvent(InvalidInput):
    """An input event lacks what compensation needs; ``violations`` names each missing field."""


class PolicyError(InvalidInput):
    """A compensation policy file was refused; ``violations`` name the TOML keys that are wrong."""


class UnknownCase(NotFound):
    """No facts are stored for this case (compensation never saw it opened)."""


class UnknownOffer(NotFound):
    """No offer has this id."""


class UnknownPolicyVersion(NotFound):
    """This compensation policy version was never loaded by this service."""
