"""Intake's gRPC API for the frontline UI: report a failure (the caller owns the case), read a history."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from recovery.events.v1 import common_pb2
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

from services.common import idempotency, tracing
from services.common.auth import Rule, allow
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidInput, NotFound
from services.common.group_commit import GroupCommit
from services.common.grpc_server import method_path, principal
from services.common.unit_of_work import unit_of_work
from services.common.wire import enum_from_proto, enum_to_proto, money_to_proto, set_optional, time_to_proto
from services.intake.adapters import repository, wire
from services.intake.domain.commands import ReportFailure
from services.intake.domain.model import Reporter, Source
from services.intake.service_layer import handlers
from services.intake.service_layer.handlers import Deps, HistoryView, ReportOutcome

SERVICE = intake_pb2.DESCRIPTOR.services_by_name["IntakeService"].full_name
STAFF = ("agent", "senior_agent", "team_lead", "manager", "director")
RULES: dict[str, Rule] = {
    method_path(SERVICE, "ReportFailure"): allow(*STAFF),
    method_path(SERVICE, "GetCustomerHistory"): allow(*STAFF),
    method_path(SERVICE, "FindFailure"): allow(*STAFF),
}
DEFAULT_HISTORY_LIMIT = 20
MAX_HISTORY_LIMIT = 100


REPORT_FAILURE = method_path(SERVICE, "ReportFailure")


@dataclass(frozen=True)
class _Report:
    """One ReportFailure call as its group handles it: the command, its caller, its idempotency claim, its trace."""

    request_id: str
    digest: bytes
    command: ReportFailure
    reporter: Reporter
    trace: tracing.Headers


class IntakeApi(intake_pb2_grpc.IntakeServiceServicer):
    """The IntakeService servicer: decode, run the handler in a transaction, encode."""

    def __init__(self, *, db: Database, deps: Deps) -> None:
        self._db = db
        self._deps = deps
        # Reports arriving together are accepted together: one transaction for the group (group_commit.py).
        self._reports: GroupCommit[_Report, intake_pb2.ReportFailureResponse] = GroupCommit(
            self._report_many, self._report_one, key=lambda call: call.request_id
        )

    async def ReportFailure(
        self, request: intake_pb2.ReportFailureRequest, context
    ) -> intake_pb2.ReportFailureResponse:
        caller = principal()
        request_id = idempotency.require_request_id(request.request_id)
        # The caller is part of the request: the same id from another employee is not a retry of this one.
        digest = hashlib.sha256(idempotency.fingerprint(request) + caller.employee_id.encode()).digest()
        command = wire.command_from_request(request, reporter=caller.employee_id)
        reporter = Reporter(team=caller.team, role=caller.role)
        return await self._reports.submit(_Report(request_id, digest, command, reporter, tracing.headers_for()))

    async def _report_many(self, calls: Sequence[_Report]) -> list[intake_pb2.ReportFailureResponse | Exception]:
        """Accept a group of reports in one unit of work: claim their ids, accept the new ones as a set, store
        every answer. A report refused gives back its claim; a retry gets its stored answer."""
        answers: list[intake_pb2.ReportFailureResponse | Exception | None] = [None] * len(calls)
        # Each report's events continue its own call's trace.
        with tracing.staging({call.command.customer_id.encode(): call.trace for call in calls}):
            async with unit_of_work(self._db) as uow:
                claims = [(call.request_id, call.digest) for call in calls]
                stored = await idempotency.replay_many(uow.conn, method=REPORT_FAILURE, claims=claims)
                fresh = [i for i, known in enumerate(stored) if known is None]
                for i, known in enumerate(stored):
                    if isinstance(known, Exception):
                        answers[i] = known
                    elif known is not None:
                        answers[i] = intake_pb2.ReportFailureResponse.FromString(known)
                outcomes = await handlers.report_failures(
                    uow,
                    [calls[i].command for i in fresh],
                    deps=self._deps,
                    channel="grpc",
                    reporters=[calls[i].reporter for i in fresh],
                )
                duplicates = await repository.get_cases(
                    uow.conn, (o.case_id for o in outcomes if isinstance(o, ReportOutcome) and o.duplicate)
                )
                for i, outcome in zip(fresh, outcomes, strict=True):
                    answers[i] = outcome if isinstance(outcome, Exception) else _response(outcome, duplicates)
                await idempotency.release_many(
                    uow.conn,
                    method=REPORT_FAILURE,
                    request_ids=[calls[i].request_id for i in fresh if isinstance(answers[i], Exception)],
                )
                await idempotency.remember_many(
                    uow.conn,
                    method=REPORT_FAILURE,
                    responses=[
                        (calls[i].request_id, calls[i].digest, answer.SerializeToString())
                        for i in fresh
                        if isinstance(answer := answers[i], intake_pb2.ReportFailureResponse)
                    ],
                )
        if any(answer is None for answer in answers):
            raise RuntimeError("a report of the group was left without an answer")
        return [answer for answer in answers if answer is not None]

    async def _report_one(self, call: _Report) -> intake_pb2.ReportFailureResponse:
        """Accept one report in its own unit of work (a group that failed is redone call by call)."""
        [answer] = await self._report_many([call])
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def GetCustomerHistory(
        self, request: intake_pb2.GetCustomerHistoryRequest, context
    ) -> intake_pb2.GetCustomerHistoryResponse:
        limit = _history_limit(request)
        async with self._db.transaction() as conn:
            view = await handlers.customer_history(conn, request.customer_id, limit=limit, deps=self._deps)
        return _history_response(request.customer_id, view)

    async def FindFailure(self, request: intake_pb2.FindFailureRequest, context) -> intake_pb2.FindFailureResponse:
        if not request.source_event_id:
            raise InvalidInput.of(FieldViolation("source_event_id", "is required"))
        source = enum_from_proto(common_pb2.Source, request.source, Source)
        async with self._db.transaction() as conn:
            found = await repository.failure_by_event(
                conn,
                source_event_id=request.source_event_id,
                source=source.value if source else None,
                publisher=request.publisher,
            )
        if found is None:
            raise NotFound(f"no failure accepted for event {request.source_event_id!r}")
        return intake_pb2.FindFailureResponse(failure=_failure_record(found))


def _response(outcome: ReportOutcome, cases: Mapping[str, repository.CaseRow]) -> intake_pb2.ReportFailureResponse:
    """The answer to a report: what it decided is what the case now says (no read back); a duplicate's case as it
    stands."""
    response = intake_pb2.ReportFailureResponse(
        failure_id=outcome.failure_id, case_id=outcome.case_id, merged=outcome.merged
    )
    if outcome.classification is not None and outcome.history is not None:
        response.classification.CopyFrom(wire.classification_to_proto(outcome.classification))
        response.history.CopyFrom(wire.history_to_proto(outcome.history))
        return response
    case = cases.get(outcome.case_id)
    if case is None:
        raise NotFound(f"case {outcome.case_id} of a duplicate report is unknown")
    response.classification.CopyFrom(case.classification)
    response.history.CopyFrom(case.history)
    return response


def _failure_record(failure) -> intake_pb2.FailureRecord:
    report = wire.report_to_proto(failure.report)
    return intake_pb2.FailureRecord(
        failure_id=failure.failure_id,
        case_id=failure.case_id,
        source=report.source,
        source_event_id=report.source_event_id,
        reference=report.reference,
        category=report.category,
        description=report.description,
        area=report.area,
        reported_by_employee_id=report.reported_by_employee_id,
        occurred_at=report.occurred_at,
        received_at=time_to_proto(failure.received_at),
    )


def _history_limit(request: intake_pb2.GetCustomerHistoryRequest) -> int:
    violations = []
    if not request.customer_id:
        violations.append(FieldViolation("customer_id", "is required"))
    elif len(request.customer_id) > 128:
        violations.append(FieldViolation("customer_id", "must be at most 128 characters"))
    if request.limit < 0:
        violations.append(FieldViolation("limit", "must not be negative"))
    if violations:
        raise InvalidInput.of(*violations)
    return min(request.limit or DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT)


def _history_response(customer_id: str, view: HistoryView) -> intake_pb2.GetCustomerHistoryResponse:
    response = intake_pb2.GetCustomerHistoryResponse(
        customer_id=customer_id, summary=wire.history_to_proto(view.summary)
    )
    response.failures.extend(_failure_record(failure) for failure in view.failures)
    for item in view.cases:
        case = item.case
        record = intake_pb2.CaseRecord(
            case_id=case.case_id,
            status=wire.case_status_to_proto(case.status),
            category=enum_to_proto(common_pb2.Category, case.category),
            severity=case.classification.severity.severity,
            outlook=case.classification.outlook.outlook,
            owner_employee_id=case.owner_employee_id,
            failure_ids=list(item.failure_ids),
            opened_at=time_to_proto(case.opened_at),
        )
        record.compensation_received.extend(money_to_proto(m) for m in item.compensation)
        set_optional(record, "satisfaction", wire.satisfaction_to_proto(item.satisfaction))
        set_optional(record, "resolved_at", time_to_proto(case.resolved_at))
        response.cases.append(record)
    response.contacts.extend(wire.contacts_to_proto(view.contacts))
    if response.contacts:
        response.summary.last_contact.CopyFrom(response.contacts[0])
    return response
