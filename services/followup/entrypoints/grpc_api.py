"""Followup's gRPC API for the frontline: record a customer's answer, list and cancel follow-ups."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from recovery.followup.v1 import followup_pb2, followup_pb2_grpc

from services.common import idempotency
from services.common.auth import Rule, allow
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidInput
from services.common.grpc_server import method_path, principal
from services.followup.adapters import wire
from services.followup.domain.access import STAFF
from services.followup.domain.commands import CancelFollowup, ListFollowups, RecordFeedback
from services.followup.service_layer import handlers
from services.followup.service_layer.handlers import Deps

SERVICE = followup_pb2.DESCRIPTOR.services_by_name["FollowupService"].full_name
RULES: dict[str, Rule] = {
    # Every staff role talks to customers; cancelling someone else's follow-up is checked per row (owner rule).
    method_path(SERVICE, "RecordFeedback"): allow(*STAFF),
    method_path(SERVICE, "ListFollowups"): allow(*STAFF),
    method_path(SERVICE, "CancelFollowup"): allow(*STAFF),
}
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ID = 128


def _digest(request, employee_id: str) -> bytes:
    # The caller is part of the request: the same id from another employee is not a retry of this one.
    return hashlib.sha256(idempotency.fingerprint(request) + employee_id.encode()).digest()


class FollowupApi(followup_pb2_grpc.FollowupServiceServicer):
    """The FollowupService servicer: decode, run the handler in a transaction, encode."""

    def __init__(self, *, db: Database, deps: Deps) -> None:
        self._db = db
        self._deps = deps

    async def RecordFeedback(
        self, request: followup_pb2.RecordFeedbackRequest, context
    ) -> followup_pb2.RecordFeedbackResponse:
        caller = principal()
        method = method_path(SERVICE, "RecordFeedback")
        request_id = idempotency.require_request_id(request.request_id)
        digest = _digest(request, caller.employee_id)
        async with self._db.transaction() as conn:
            stored = await idempotency.replay(conn, method=method, request_id=request_id, fingerprint=digest)
            if stored is not None:
                return followup_pb2.RecordFeedbackResponse.FromString(stored)
            feedback = wire.feedback_from_request(
                request,
                feedback_id=self._deps.new_id(),
                customer_id="",  # the case's customer, filled in by the handler
                employee_id=caller.employee_id,
                at=self._deps.clock(),
            )
            outcome = await handlers.record_feedback(conn, RecordFeedback(feedback, publish=True), deps=self._deps)
            response = followup_pb2.RecordFeedbackResponse(
                feedback_id=outcome.feedback_id, reopen_requested=outcome.reopen_requested
            )
            await idempotency.remember(
                conn, method=method, request_id=request_id, fingerprint=digest, response=response.SerializeToString()
            )
        return response

    async def ListFollowups(
        self, request: followup_pb2.ListFollowupsRequest, context
    ) -> followup_pb2.ListFollowupsResponse:
        query = _list_query(request)
        async with self._db.transaction() as conn:
            page, last = await handlers.list_followups(conn, query)
        return followup_pb2.ListFollowupsResponse(
            followups=[wire.followup_to_proto(f) for f in page],
            next_page_token=_token(last.due_at, last.followup_id) if last else "",
        )

    async def CancelFollowup(
        self, request: followup_pb2.CancelFollowupRequest, context
    ) -> followup_pb2.CancelFollowupResponse:
        caller = principal()
        method = method_path(SERVICE, "CancelFollowup")
        request_id = idempotency.require_request_id(request.request_id)
        violations = []
        if not request.followup_id:
            violations.append(FieldViolation("followup_id", "is required"))
        if not request.reason.strip():
            violations.append(FieldViolation("reason", "is required: why the customer should not be contacted"))
        if violations:
            raise InvalidInput.of(*violations)
        digest = _digest(request, caller.employee_id)
        async with self._db.transaction() as conn:
            stored = await idempotency.replay(conn, method=method, request_id=request_id, fingerprint=digest)
            if stored is not None:
                return followup_pb2.CancelFollowupResponse.FromString(stored)
            command = CancelFollowup(
                followup_id=request.followup_id,
                reason=request.reason,
                employee_id=caller.employee_id,
                role=caller.role,
                team=caller.team,
            )
            followup = await handlers.cancel_followup(conn, command, deps=self._deps)
            response = followup_pb2.CancelFollowupResponse(followup=wire.followup_to_proto(followup))
            await idempotency.remember(
                conn, method=method, request_id=request_id, fingerprint=digest, response=response.SerializeToString()
            )
        return response


def _list_query(request: followup_pb2.ListFollowupsRequest) -> ListFollowups:
    violations = []
    subject = request.WhichOneof("subject")
    value = getattr(request, subject) if subject else ""
    if not value:
        violations.append(FieldViolation("subject", "one of case_id or customer_id is required"))
    elif len(value) > MAX_ID:
        violations.append(FieldViolation(subject, f"must be at most {MAX_ID} characters"))
    if request.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    after = None
    if request.page_token:
        after = _untoken(request.page_token)
        if after is None:
            violations.append(FieldViolation("page_token", "is not a token this service returned"))
    if violations:
        raise InvalidInput.of(*violations)
    return ListFollowups(
        case_id=value if subject == "case_id" else None,
        customer_id=value if subject == "customer_id" else None,
        statuses=wire.statuses_from_proto(request.statuses),
        page_size=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        after=after,
    )


def _token(due_at: datetime, followup_id: str) -> str:
    """Return an opaque keyset cursor: the last row's (due time, id)."""
    return base64.urlsafe_b64encode(f"{due_at.isoformat()}|{followup_id}".encode()).decode()


def _untoken(token: str) -> tuple[datetime, str] | None:
    try:
        due, _, followup_id = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        at = datetime.fromisoformat(due)
    except ValueError:
        return None
    if at.tzinfo is None or not followup_id:
        return None
    return at, followup_id
