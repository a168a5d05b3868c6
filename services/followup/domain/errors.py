"""The followup service's errors, hanging from the shared tree in ``services.common.errors``.

    RecoveryError
    ├── InvalidInput                  malformed input; ``violations`` names each bad field or key
    │   ├── InvalidFeedback           a feedback answer breaks a rule          -> INVALID_ARGUMENT / dead-letter
    │   ├── InvalidEvent              an input event lacks what followup needs -> dead-letter
    │   └── PolicyError               the follow-up policy file is malformed   -> refused, previous policy kept
    ├── NotFound
    │   ├── CaseNotFound              feedback for a case followup never saw resolved -> NOT_FOUND
    │   └── FollowupNotFound          no such follow-up                        -> NOT_FOUND
    ├── Forbidden
    │   └── NotYourFollowup           an agent cancelling another owner's follow-up -> PERMISSION_DENIED
    └── FailedPrecondition
        └── FollowupClosed            cancelling a follow-up already sent or answered -> FAILED_PRECONDITION

Build the InvalidInput ones with ``InvalidFeedback.of(FieldViolation(path, why), ...)`` so every violation is
reported at once.
"""

from __future__ import annotations

from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionViolation,
)

__all__ = [
    "CaseNotFound",
    "FieldViolation",
    "FollowupClosed",
    "FollowupNotFound",
    "InvalidEvent",
    "InvalidFeedback",
    "NotYourFollowup",
    "PolicyError",
    "PreconditionViolation",
]


class InvalidFeedback(InvalidInput):
    """A satisfaction answer was refused; ``violations`` lists every bad field and why."""


class InvalidEvent(InvalidInput):
    """An input event lacks a field followup cannot do without (dead-lettered with the reason)."""


class PolicyError(InvalidInput):
    """The follow-up policy file was refused; ``violations`` name the TOML keys that are wrong."""


class CaseNotFound(NotFound):
    """Followup has not seen this case resolved, so it knows no customer to attach feedback to."""


class FollowupNotFound(NotFound):
    """No follow-up has this id."""


class NotYourFollowup(Forbidden):
    """The caller's role may act only on follow-ups of cases they own."""


class FollowupClosed(FailedPrecondition):
    """The follow-up was already sent or answered; it can no longer be cancelled."""
