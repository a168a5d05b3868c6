"""The error tree every service's own errors hang from.

Domain code raises these (or subclasses declared in its service's ``domain/errors.py``); only the edges
translate them: the gRPC kit to status codes, the consumer harness to "dead-letter" versus "retry".

    RecoveryError                     anything the system raises on purpose
    ├── InvalidInput                  the request or record is malformed        -> INVALID_ARGUMENT / dead-letter
    │   └── UndecodableRecord         a Kafka record we cannot even decode      -> dead-letter
    ├── NotFound                      the thing named does not exist            -> NOT_FOUND
    ├── AlreadyExists                 a create that collides with an existing   -> ALREADY_EXISTS
    ├── FailedPrecondition            valid request, wrong state for it         -> FAILED_PRECONDITION
    ├── Forbidden                     authenticated, not allowed to do this     -> PERMISSION_DENIED
    ├── Unauthenticated               no or bad credentials                     -> UNAUTHENTICATED
    ├── IdempotencyConflict           request id reused with other parameters   -> ALREADY_EXISTS
    └── Conflict                      lost a race (limit, version); retry       -> ABORTED

Transient infrastructure failures (database or broker unreachable) are not in this tree: they are the
libraries' own exceptions, recognised by ``services.common.db.is_transient``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its path in the request (``costs[0].amount.currency``) and why it is bad."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One unmet precondition: its type (``STATE``), subject (``case/123``) and why."""

    type: str
    subject: str
    description: str


class RecoveryError(Exception):
    """Base of every error the system raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RecoveryError):
    """The input is malformed; ``violations`` says which fields and why."""

    def __init__(self, message: str, violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)

    @classmethod
    def of(cls, *violations: FieldViolation) -> InvalidInput:
        """Build the error from violations, its message listing them all."""
        text = "; ".join(f"{v.field}: {v.description}" for v in violations)
        return cls(text or "invalid input", violations)


class UndecodableRecord(InvalidInput):
    """A Kafka record whose headers or body cannot be decoded into a known event."""


class NotFound(RecoveryError):
    """The named entity does not exist (or the caller may not know it does)."""


class AlreadyExists(RecoveryError):
    """A create collided with an existing entity."""


class FailedPrecondition(RecoveryError):
    """The request is valid but the current state does not allow it."""

    def __init__(self, message: str, violations: tuple[PreconditionViolation, ...] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)


class Forbidden(RecoveryError):
    """The caller is authenticated but not allowed to do this."""


class Unauthenticated(RecoveryError):
    """The caller presented no credentials or bad ones."""


class IdempotencyConflict(RecoveryError):
    """A request id was reused with different parameters; nothing was done."""


class Conflict(RecoveryError):
    """A concurrent change won (a limit was used up, a version moved); the caller may retry."""
