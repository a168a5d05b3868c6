"""Escalation's gRPC CaseService for the frontline UI and supervisors: decode, run the handler, encode.

Every mutating call runs in one transaction with its idempotency record (``request_id``); the caller is
part of the key, so the same id from another employee is not a retry of this one.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
from recovery.escalation.v1 import escalation_pb2 as pb
from recovery.escalation.v1 import escalation_pb2_grpc

from services.common import idempotency
from services.common.auth import Rule, allow
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidInput, NotFound
from services.common.grpc_server import method_path, principal
from services.common.wire import money_from_proto, time_from_proto
from services.escalation.adapters import repository as repo
from services.escalation.adapters import wire
from services.escalation.domain import access, authority
from services.escalation.domain.access import SUPERVISORS
from services.escalation.domain.model import Actor, Case
from services.escalation.service_layer import approvals, casework, incidents
from services.escalation.service_layer.steps import Deps

SERVICE = pb.DESCRIPTOR.services_by_name["CaseService"].full_name
STAFF = ("agent", "senior_agent", "team_lead", "manager", "director")
RULES: dict[str, Rule] = {
    method_path(SERVICE, m.name): allow(*STAFF) for m in pb.DESCRIPTOR.services_by_name["CaseService"].methods
}
Work = Callable[[asyncpg.Connection, Actor], Awaitable]
DEFAULT_PAGE = 50
MAX_PAGE = 200
WATCH_SNAPSHOT_LIMIT = 500
# How far back each WatchCases poll also reads by time (covers revisions that committed late).
WATCH_LAG = timedelta(seconds=5)


def _actor() -> Actor:
    caller = principal()
    return Actor.employee(caller.employee_id, caller.role, caller.team)


def _page(size: int, token: str) -> tuple[int, int]:
    if size < 0:
        raise InvalidInput.of(FieldViolation("page_size", "must not be negative"))
    try:
        offset = int(token) if token else 0
    except ValueError:
        offset = -1
    if not 0 <= offset < 2**31:
        raise InvalidInput.of(FieldViolation("page_token", "not a token this service issued"))
    return min(size or DEFAULT_PAGE, MAX_PAGE), offset


def _required(**values: str) -> None:
    missing = [FieldViolation(name, "required") for name, value in values.items() if not value]
    if missing:
        raise InvalidInput.of(*missing)


class CaseApi(escalation_pb2_grpc.CaseServiceServicer):
    """The CaseService servicer."""

    def __init__(self, *, db: Database, deps: Deps, watch_poll_seconds: float = 0.5) -> None:
        self._db = db
        self._deps = deps
        self._watch_poll = watch_poll_seconds

    # ------------------------------------------------------------------------------------------ helpers

    async def _view(self, conn: asyncpg.Connection, record: repo.CaseRecord, *, history: bool = True) -> pb.Case:
        case = record.case
        offer = None
        if case.current_offer_id:
            offer = await repo.get_offer(conn, case.current_offer_id, lines_of=wire.offer_lines)
        load = await repo.open_case_count(conn, case.owner_employee_id) if case.owner_employee_id else 0
        view = wire.case_to_proto(
            case,
            facts=record.facts,
            updated_at=record.updated_at,
            offer=offer,
            clocks=await repo.get_clocks(conn, case.case_id),
            history=await repo.audit_of_case(conn, case.case_id) if history else (),
            pending=await repo.get_approval(conn, case.pending_approval_id) if case.pending_approval_id else None,
            calendar=self._deps.policy().calendar_for(case.team),
            now=self._deps.clock(),
        )
        view.reporters.extend(wire.reporter_to_proto(r) for r in await repo.reporters_of(conn, case.case_id))
        view.contacts.extend(wire.contact_to_proto(k) for k in await repo.contacts_of(conn, case))
        view.owner_open_cases = load
        view.owner_overloaded = bool(case.owner_employee_id) and load > self._deps.policy().capacity_for(
            case.owner_employee_id
        )
        return view

    async def _case(self, conn: asyncpg.Connection, case_id: str) -> pb.Case:
        record = await repo.get_case(conn, case_id)
        assert record is not None
        return await self._view(conn, record)

    async def _idempotent(self, name: str, request, response_type, work: Work):
        actor = _actor()
        method = method_path(SERVICE, name)
        request_id = idempotency.require_request_id(request.request_id)
        digest = hashlib.sha256(idempotency.fingerprint(request) + actor.employee_id.encode()).digest()
        async with self._db.transaction() as conn:
            stored = await idempotency.replay(conn, method=method, request_id=request_id, fingerprint=digest)
            if stored is not None:
                return response_type.FromString(stored)
            response = await work(conn, actor)
            await idempotency.remember(
                conn, method=method, request_id=request_id, fingerprint=digest, response=response.SerializeToString()
            )
        return response

    async def _may_view(self, conn: asyncpg.Connection, case: Case, actor: Actor) -> bool:
        if access.may_view(case, actor, routed_to_actor=await self._routed_to(conn, case, actor)):
            return True
        return access.may_view(case, actor, reported_it=await repo.is_reporter(conn, case.case_id, actor.employee_id))

    async def _routed_to(self, conn: asyncpg.Connection, case: Case, actor: Actor) -> bool:
        if not case.pending_approval_id:
            return False
        approval = await repo.get_approval(conn, case.pending_approval_id)
        if approval is None:
            return False
        # The routed tier or a higher one may decide, so may see the case (their own authority or a delegated one).
        routes = {(actor.role, actor.team)} | {
            (d.role, d.team) for d in await repo.delegations_to(conn, actor.employee_id, self._deps.clock())
        }
        policy = self._deps.policy()
        return any(
            authority.may_decide(
                policy, role=role, team=team, approver_role=approval.approver_role, approver_team=approval.approver_team
            )
            for role, team in routes
        )

    # -------------------------------------------------------------------------------------------- reads

    async def GetCase(self, request: pb.GetCaseRequest, context) -> pb.GetCaseResponse:
        _required(case_id=request.case_id)
        actor = _actor()
        async with self._db.transaction() as conn:
            record = await repo.get_case(conn, request.case_id)
            if record is None or not await self._may_view(conn, record.case, actor):
                # Not found and not visible look the same: a case id tells nobody whether the case exists.
                raise NotFound(f"case {request.case_id} not found")
            return pb.GetCaseResponse(case=await self._view(conn, record))

    def _visibility(self, actor: Actor) -> dict:
        if actor.role in SUPERVISORS:
            return {"only_team": actor.team}
        return {"visible_owner": actor.employee_id, "visible_team": actor.team}

    async def ListCases(self, request: pb.ListCasesRequest, context) -> pb.ListCasesResponse:
        actor = _actor()
        size, offset = _page(request.page_size, request.page_token)
        sla_filter = request.sla_filter
        filters = repo.CaseFilter(
            owner_employee_id=request.owner_employee_id,
            team=request.team,
            states=wire.states_from_proto(request.states),
            at_risk=sla_filter in (pb.SLA_FILTER_AT_RISK, pb.SLA_FILTER_AT_RISK_OR_BREACHED),
            breached=sla_filter in (pb.SLA_FILTER_BREACHED, pb.SLA_FILTER_AT_RISK_OR_BREACHED),
            incident_id=request.incident_id,
            **self._visibility(actor),
        )
        async with self._db.transaction() as conn:
            records = await repo.list_cases(conn, filters, limit=size + 1, offset=offset)
            cases = [await self._view(conn, r, history=False) for r in records[:size]]
        token = str(offset + size) if len(records) > size else ""
        return pb.ListCasesResponse(cases=cases, next_page_token=token)

    async def WatchCases(self, request: pb.WatchCasesRequest, context):
        actor = _actor()
        if bool(request.owner_employee_id) == bool(request.team):
            raise InvalidInput.of(FieldViolation("owner_employee_id", "set exactly one of owner_employee_id and team"))
        visibility = self._visibility(actor)
        filters = repo.CaseFilter(owner_employee_id=request.owner_employee_id, team=request.team, **visibility)

        def matches(case: Case) -> bool:
            wanted = (
                case.owner_employee_id == request.owner_employee_id
                if request.owner_employee_id
                else case.team == request.team
            )
            return wanted and access.may_view(case, actor)

        async with self._db.transaction() as conn:
            # The revision first: a change committed during the snapshot is sent again as an update, never lost.
            last = await repo.max_revision(conn)
            records = await repo.list_cases(conn, filters, limit=WATCH_SNAPSHOT_LIMIT, offset=0)
            snapshot = [await self._view(conn, r, history=False) for r in records]
        # The revision each case was last sent at: a case is sent again only when it changed since.
        sent = {c.case_id: c.revision for c in snapshot}
        for case in snapshot:
            yield pb.WatchCasesResponse(change=pb.CASE_CHANGE_SNAPSHOT, case=case)
        while True:
            await asyncio.sleep(self._watch_poll)
            polled_at = self._deps.clock()
            async with self._db.transaction() as conn:
                changed = await repo.cases_changed_since(conn, last, updated_since=polled_at - WATCH_LAG)
                updates = []
                for record in changed:
                    case = record.case
                    last = max(last, case.revision)
                    if sent.get(case.case_id, -1) >= case.revision:
                        continue
                    if matches(case):
                        sent[case.case_id] = case.revision
                        updates.append((pb.CASE_CHANGE_UPDATED, await self._view(conn, record, history=False)))
                    elif case.case_id in sent:
                        del sent[case.case_id]
                        updates.append((pb.CASE_CHANGE_REMOVED, await self._view(conn, record, history=False)))
            for change, case in updates:
                yield pb.WatchCasesResponse(change=change, case=case)

    async def ListPendingApprovals(
        self, request: pb.ListPendingApprovalsRequest, context
    ) -> pb.ListPendingApprovalsResponse:
        actor = _actor()
        size, offset = _page(request.page_size, request.page_token)
        async with self._db.transaction() as conn:
            delegations = await repo.delegations_to(conn, actor.employee_id, self._deps.clock())
            routes = list(dict.fromkeys([(actor.role, actor.team), *((d.role, d.team) for d in delegations)]))
            found = await repo.pending_approvals_for(
                conn, routes, exclude_employee=actor.employee_id, limit=size + 1, offset=offset
            )
        token = str(offset + size) if len(found) > size else ""
        return pb.ListPendingApprovalsResponse(
            approvals=[wire.approval_to_proto(a) for a in found[:size]], next_page_token=token
        )

    async def GetMyAuthority(self, request: pb.GetMyAuthorityRequest, context) -> pb.GetMyAuthorityResponse:
        actor = _actor()
        async with self._db.transaction() as conn:
            case = None
            if request.case_id:
                record = await repo.get_case(conn, request.case_id)
                if record is None or not await self._may_view(conn, record.case, actor):
                    raise NotFound(f"case {request.case_id} not found")
                case = record.case
            room, rate = await approvals.my_authority(
                conn, by=actor, case=case, currency=request.currency, deps=self._deps
            )
        return wire.authority_to_proto(
            room, rate, employee_id=actor.employee_id, policy_version=self._deps.policy().version
        )

    async def GetIncident(self, request: pb.GetIncidentRequest, context) -> pb.GetIncidentResponse:
        # Counts only, no customer's details: every staff role may see how a disruption's recovery stands.
        _required(incident_id=request.incident_id)
        async with self._db.transaction() as conn:
            summary = await repo.incident_summary(conn, request.incident_id)
            declared = (await repo.declarations_of(conn, [request.incident_id])).get(request.incident_id)
        declaration = None
        if declared is not None:
            limits = self._deps.policy().limits_for(employee_id=declared.declared_by, role=declared.declared_by_role)
            if limits is not None:
                declaration = wire.declaration_to_proto(declared, limits=limits)
        return wire.incident_to_proto(request.incident_id, summary, declaration)

    async def DeclareIncident(self, request: pb.DeclareIncidentRequest, context) -> pb.DeclareIncidentResponse:
        async def work(conn, actor):
            declaration, limits = await incidents.declare_incident(
                conn,
                incident_id=request.incident_id,
                playbook_id=request.playbook_id,
                reason=request.reason,
                by=actor,
                deps=self._deps,
            )
            return pb.DeclareIncidentResponse(declaration=wire.declaration_to_proto(declaration, limits=limits))

        return await self._idempotent("DeclareIncident", request, pb.DeclareIncidentResponse, work)

    # ---------------------------------------------------------------------------------------- mutations

    async def ClaimCase(self, request: pb.ClaimCaseRequest, context) -> pb.ClaimCaseResponse:
        _required(case_id=request.case_id)

        async def work(conn, actor):
            await casework.claim_case(conn, case_id=request.case_id, by=actor, deps=self._deps)
            return pb.ClaimCaseResponse(case=await self._case(conn, request.case_id))

        return await self._idempotent("ClaimCase", request, pb.ClaimCaseResponse, work)

    async def AcknowledgeCase(self, request: pb.AcknowledgeCaseRequest, context) -> pb.AcknowledgeCaseResponse:
        _required(case_id=request.case_id)

        async def work(conn, actor):
            channel = wire.channel_from_proto(request.channel)
            await casework.acknowledge_case(
                conn, case_id=request.case_id, by=actor, channel=channel, note=request.note, deps=self._deps
            )
            return pb.AcknowledgeCaseResponse(case=await self._case(conn, request.case_id))

        return await self._idempotent("AcknowledgeCase", request, pb.AcknowledgeCaseResponse, work)

    async def RecordContact(self, request: pb.RecordContactRequest, context) -> pb.RecordContactResponse:
        _required(case_id=request.case_id)

        async def work(conn, actor):
            contact = await casework.record_contact(
                conn,
                case_id=request.case_id,
                by=actor,
                kind=wire.contact_kind_from_proto(request.kind),
                channel=wire.channel_from_proto(request.channel),
                outcome=wire.contact_outcome_from_proto(request.outcome),
                note=request.note,
                deps=self._deps,
            )
            return pb.RecordContactResponse(
                case=await self._case(conn, request.case_id), contact=wire.contact_to_proto(contact)
            )

        return await self._idempotent("RecordContact", request, pb.RecordContactResponse, work)

    async def AdjustOffer(self, request: pb.AdjustOfferRequest, context) -> pb.AdjustOfferResponse:
        _required(case_id=request.case_id, offer_id=request.offer_id)

        async def work(conn, actor):
            adjustment_id = await casework.adjust_offer(
                conn,
                case_id=request.case_id,
                offer_id=request.offer_id,
                adjustment=wire.adjustment_from_request(request),
                reason=request.reason,
                by=actor,
                deps=self._deps,
            )
            return pb.AdjustOfferResponse(case=await self._case(conn, request.case_id), adjustment_id=adjustment_id)

        return await self._idempotent("AdjustOffer", request, pb.AdjustOfferResponse, work)

    async def AuthorizeOffer(self, request: pb.AuthorizeOfferRequest, context) -> pb.AuthorizeOfferResponse:
        _required(case_id=request.case_id, offer_id=request.offer_id)

        async def work(conn, actor):
            await approvals.authorize_offer(
                conn, case_id=request.case_id, offer_id=request.offer_id, by=actor, deps=self._deps
            )
            return pb.AuthorizeOfferResponse(case=await self._case(conn, request.case_id))

        return await self._idempotent("AuthorizeOffer", request, pb.AuthorizeOfferResponse, work)

    async def RequestApproval(self, request: pb.RequestApprovalRequest, context) -> pb.RequestApprovalResponse:
        _required(case_id=request.case_id, offer_id=request.offer_id)

        async def work(conn, actor):
            approval, _ = await approvals.request_approval(
                conn, case_id=request.case_id, offer_id=request.offer_id, note=request.note, by=actor, deps=self._deps
            )
            return pb.RequestApprovalResponse(
                approval=wire.approval_to_proto(approval), case=await self._case(conn, request.case_id)
            )

        return await self._idempotent("RequestApproval", request, pb.RequestApprovalResponse, work)

    async def DecideApproval(self, request: pb.DecideApprovalRequest, context) -> pb.DecideApprovalResponse:
        _required(approval_id=request.approval_id)

        async def work(conn, actor):
            decided = await approvals.decide_approval(
                conn,
                approval_id=request.approval_id,
                decision=wire.decision_from_proto(request.decision),
                approved_amount=money_from_proto(request, "approved_amount"),
                reason=request.reason,
                by=actor,
                deps=self._deps,
            )
            return pb.DecideApprovalResponse(approval=wire.approval_to_proto(decided))

        return await self._idempotent("DecideApproval", request, pb.DecideApprovalResponse, work)

    async def DelegateAuthority(self, request: pb.DelegateAuthorityRequest, context) -> pb.DelegateAuthorityResponse:
        async def work(conn, actor):
            delegation = await approvals.delegate_authority(
                conn,
                delegate_employee_id=request.delegate_employee_id,
                starts_at=time_from_proto(request, "starts_at"),
                ends_at=time_from_proto(request, "ends_at"),
                reason=request.reason,
                by=actor,
                deps=self._deps,
            )
            return pb.DelegateAuthorityResponse(
                delegation=wire.delegation_to_proto(delegation, reason=request.reason, created_at=self._deps.clock())
            )

        return await self._idempotent("DelegateAuthority", request, pb.DelegateAuthorityResponse, work)

    async def PresentOffer(self, request: pb.PresentOfferRequest, context) -> pb.PresentOfferResponse:
        _required(case_id=request.case_id, offer_id=request.offer_id)

        async def work(conn, actor):
            await casework.present_offer(
                conn, case_id=request.case_id, offer_id=request.offer_id, note=request.note, by=actor, deps=self._deps
            )
            return pb.PresentOfferResponse(case=await self._case(conn, request.case_id))

        return await self._idempotent("PresentOffer", request, pb.PresentOfferResponse, work)

    async def TransferCase(self, request: pb.TransferCaseRequest, context) -> pb.TransferCaseResponse:
        _required(case_id=request.case_id, reason=request.reason.strip())

        async def work(conn, actor):
            await casework.transfer_case(
                conn,
                case_id=request.case_id,
                to_employee_id=request.to_employee_id,
                to_team=request.to_team,
                reason=request.reason,
                by=actor,
                deps=self._deps,
            )
            return pb.TransferCaseResponse(case=await self._case(conn, request.case_id))

        return await self._idempotent("TransferCase", request, pb.TransferCaseResponse, work)

    async def RecordCustomerDecision(
        self, request: pb.RecordCustomerDecisionRequest, context
    ) -> pb.RecordCustomerDecisionResponse:
        _required(case_id=request.case_id, offer_id=request.offer_id)

        async def work(conn, actor):
            await casework.record_customer_decision(
                conn,
                case_id=request.case_id,
                offer_id=request.offer_id,
                decision=wire.customer_decision_from_proto(request.decision),
                counter_request=request.counter_request if request.HasField("counter_request") else None,
                note=request.note,
                by=actor,
                deps=self._deps,
            )
            return pb.RecordCustomerDecisionResponse(case=await self._case(conn, request.case_id))

        return await self._idempotent("RecordCustomerDecision", request, pb.RecordCustomerDecisionResponse, work)

    async def ResolveCase(self, request: pb.ResolveCaseRequest, context) -> pb.ResolveCaseResponse:
        _required(case_id=request.case_id)

        async def work(conn, actor):
            await casework.resolve_case(
                conn,
                case_id=request.case_id,
                summary=request.resolution_summary,
                root_cause_area=request.root_cause_area if request.HasField("root_cause_area") else None,
                root_cause=request.root_cause,
                by=actor,
                deps=self._deps,
            )
            return pb.ResolveCaseResponse(case=await self._case(conn, request.case_id))

        return await self._idempotent("ResolveCase", request, pb.ResolveCaseResponse, work)

    async def ReopenCase(self, request: pb.ReopenCaseRequest, context) -> pb.ReopenCaseResponse:
        _required(case_id=request.case_id, reason=request.reason.strip())

        async def work(conn, actor):
            await casework.reopen_case(conn, case_id=request.case_id, reason=request.reason, by=actor, deps=self._deps)
            return pb.ReopenCaseResponse(case=await self._case(conn, request.case_id))

        return await self._idempotent("ReopenCase", request, pb.ReopenCaseResponse, work)
