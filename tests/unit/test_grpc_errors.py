"""What a caller is told (pure): the one table of codes and ErrorInfo reasons, UNAVAILABLE with RetryInfo for a
dependency's outage, a generic INTERNAL with a reference for anything else."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.common.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    FieldViolation,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    PreconditionViolation,
    RecoveryError,
    Unauthenticated,
    UndecodableRecord,
)
from services.common.grpc_server import ERRORS, error_domain, to_grpc_status

METHOD = "/recovery.escalation.v1.CaseService/AdjustOffer"


def told(exc: Exception) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    status = to_grpc_status(exc, method=METHOD)
    rich = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    return status.code, status.details, rich


def detail(rich: status_pb2.Status, kind):
    found = [kind() for d in rich.details if d.Is(kind.DESCRIPTOR)]
    for message, packed in zip(found, [d for d in rich.details if d.Is(kind.DESCRIPTOR)], strict=True):
        packed.Unpack(message)
    return found


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (InvalidInput.of(FieldViolation("reason", "required")), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT"),
        (UndecodableRecord("garbage"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT"),  # a subclass: its row
        (NotFound("case c-1 not found"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (AlreadyExists("exists"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
        (FailedPrecondition("closed"), grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
        (
            FailedPrecondition("over", (PreconditionViolation("LIMIT", "employee/e-1", "above per case"),)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "PRECONDITION_LIMIT",
        ),
        (Forbidden("not yours"), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
        (Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
        (IdempotencyConflict("reused"), grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED"),
        (Conflict("lost a race"), grpc.StatusCode.ABORTED, "CONFLICT"),
    ],
)
def test_each_error_has_its_code_and_a_reason_a_ui_can_translate(error, code, reason):
    got, message, rich = told(error)
    assert (got, message) == (code, error.message)
    [info] = detail(rich, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (reason, "recovery.escalation.v1")


def test_the_table_covers_every_error_of_the_tree():
    leaves = {cls for cls in RecoveryError.__subclasses__()}
    assert leaves == {kind for kind, _, _ in ERRORS}
    assert len({reason for _, _, reason in ERRORS}) == len(ERRORS)  # one reason, one meaning


@pytest.mark.parametrize(
    "outage",
    [
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_dependencys_outage_is_unavailable_with_a_retry_delay(outage):
    code, message, rich = told(outage)
    assert code == grpc.StatusCode.UNAVAILABLE and "retry" in message
    [info] = detail(rich, error_details_pb2.ErrorInfo)
    [retry] = detail(rich, error_details_pb2.RetryInfo)
    assert info.reason == "DEPENDENCY_UNAVAILABLE" and retry.retry_delay.seconds == 1
    assert "refused" not in message and "administrator" not in message  # nothing internal is said


def test_anything_else_is_internal_with_a_reference_and_nothing_more():
    code, message, rich = told(ValueError("password=hunter2"))
    [info] = detail(rich, error_details_pb2.ErrorInfo)
    assert code == grpc.StatusCode.INTERNAL and "hunter2" not in message
    assert info.reason == "INTERNAL" and message == f"internal error (ref {info.metadata['reference']})"


def test_the_domain_is_the_api_the_method_belongs_to():
    assert error_domain("/recovery.intake.v1.IntakeService/ReportFailure") == "recovery.intake.v1"
    assert error_domain("/grpc.health.v1.Health/Check") == "grpc.health.v1"
