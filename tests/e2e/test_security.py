"""Security of the running system, seen from outside: who may call what on whose case, which tokens are
refused, that nobody approves their own request, that a request id cannot be reused for something else,
and that no secret, token or card/account number reaches the logs.

Every RPC of every service (enumerated from the generated descriptors) is called as every role and with no
token, on the caller's own case, a colleague's case in the same team and a case of another team. The
expected outcome of each call is written down in ``MATRIX`` below; a method without a row fails the test.
Each probe is built to stop at a known business answer right after the access check (an invalid report, a
transition the case's state does not allow, a decision without a reason), so an allowed call shows it got
past authorisation without changing the cases the matrix runs on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from recovery.compensation.v1 import compensation_pb2 as comp
from recovery.escalation.v1 import escalation_pb2 as cases
from recovery.events.v1 import common_pb2 as common
from recovery.events.v1 import events_pb2 as events
from recovery.followup.v1 import followup_pb2 as fu
from recovery.intake.v1 import intake_pb2

from services.common import cloudevents
from services.common.auth import issue_token
from services.common.wire import time_to_proto
from tests.support.frontline import accept_and_resolve, ago, authorized, eur, offered, report, scheduled
from tests.support.outside import DEAD_LETTERS, Employee, Outside, for_customer, new_id, of_case

pytestmark = pytest.mark.e2e

S = grpc.StatusCode
RUN = uuid.uuid4().hex[:6]  # a fresh system per session, but other e2e modules share it: own teams and people
STAFF = ("agent", "senior_agent", "team_lead", "manager", "director")
SUPERVISORS = ("team_lead", "manager", "director")
ROLES = (*STAFF, "customer", "none")  # "customer": a valid token of a non-staff role; "none": no token at all
TARGETS = ("own", "colleague", "other")
TEAM_A, TEAM_B = f"sec-a-{RUN}", f"sec-b-{RUN}"
CALLERS = {role: Employee(f"sec-{role}-{RUN}", role, TEAM_A) for role in (*STAFF, "customer")}
PEER_A = Employee(f"sec-peer-a-{RUN}", "agent", TEAM_A)  # the colleague: same team, not the caller
PEER_B = Employee(f"sec-peer-b-{RUN}", "agent", TEAM_B)  # another team
REPORTER_A = Employee(f"sec-reporter-a-{RUN}", "agent", TEAM_A)  # takes the calls, hands cases to their owners

# ------------------------------------------------------------------------------------ the expected matrix
# One row per RPC, one column per role. Three letters per cell: the caller's own case, a colleague's case in
# the same team, a case of another team (a customer owns no case: "own" is then team A's agent's case).
# One letter: the method names no case. A: allowed (not refused; the probe's business answer, below);
# D: PERMISSION_DENIED; U: UNAUTHENTICATED; H: hidden (NOT_FOUND: the case is not visible to the caller, and
# a case id does not tell whether it exists).
MATRIX = """
                                      agent  senior  lead  manager  director  customer  none
IntakeService/ReportFailure             A      A      A      A        A         D        U
IntakeService/GetCustomerHistory       AAA    AAA    AAA    AAA      AAA       DDD      UUU
IntakeService/FindFailure               A      A      A      A        A         D        U
CaseService/GetCase                    AHH    AHH    AAH    AAH      AAH       DDD      UUU
CaseService/ListCases                  AAA    AAA    AAA    AAA      AAA       DDD      UUU
CaseService/WatchCases                 AAA    AAA    AAA    AAA      AAA       DDD      UUU
CaseService/ClaimCase                  AAD    AAD    AAD    AAD      AAD       DDD      UUU
CaseService/AcknowledgeCase            ADD    ADD    AAD    AAD      AAD       DDD      UUU
CaseService/RecordContact              ADD    ADD    AAD    AAD      AAD       DDD      UUU
CaseService/AdjustOffer                ADD    ADD    AAD    AAD      AAD       DDD      UUU
CaseService/AuthorizeOffer             ADD    ADD    ADD    ADD      ADD       DDD      UUU
CaseService/RequestApproval            ADD    ADD    AAD    AAD      AAD       DDD      UUU
CaseService/DecideApproval             DDD    DDD    DAD    DAD      DAD       DDD      UUU
CaseService/ListPendingApprovals        A      A      A      A        A         D        U
CaseService/GetMyAuthority             AHH    AHH    AAH    AAH      AAH       DDD      UUU
CaseService/GetIncident                 A      A      A      A        A         D        U
CaseService/DeclareIncident             D      D      A      A        A         D        U
CaseService/DelegateAuthority           A      A      A      A        A         D        U
CaseService/PresentOffer               ADD    ADD    AAD    AAD      AAD       DDD      UUU
CaseService/TransferCase               ADD    ADD    AAD    AAD      AAD       DDD      UUU
CaseService/RecordCustomerDecision     ADD    ADD    AAD    AAD      AAD       DDD      UUU
CaseService/ResolveCase                ADD    ADD    AAD    AAD      AAD       DDD      UUU
CaseService/ReopenCase                 ADD    ADD    AAD    AAD      AAD       DDD      UUU
CompensationService/QuoteOffer         AAA    AAA    AAA    AAA      AAA       DDD      UUU
CompensationService/GetOffer           AAA    AAA    AAA    AAA      AAA       DDD      UUU
CompensationService/ListOffers         AAA    AAA    AAA    AAA      AAA       DDD      UUU
CompensationService/GetPolicy           A      A      A      A        A         D        U
FollowupService/RecordFeedback         AAA    AAA    AAA    AAA      AAA       DDD      UUU
FollowupService/ListFollowups          AAA    AAA    AAA    AAA      AAA       DDD      UUU
FollowupService/CancelFollowup         ADD    ADD    AAD    AAD      AAD       DDD      UUU
"""
# Notes on the rows. RecordContact and AdjustOffer follow the case rule too (a merged report's colleague may also
# log contacts; not exercised here). ClaimCase: any member of the case's team may claim (only queued cases:
# FAILED_PRECONDITION here). AuthorizeOffer: the owner's authority is the owner's alone, supervisors included.
# DecideApproval: the tier the request is routed to (team_lead of the case's team here) or a higher one of that
# team, never the owner or requester. GetMyAuthority names a case the caller may see, as GetCase. DeclareIncident:
# the policy's declarer roles (a lead and above), whose own limits pre-approve the incident's playbook offers.
# Compensation's and followup's reads and RecordFeedback are open to every staff role by design (README);
# CancelFollowup follows the case rule: the owner, or a lead and above of the case's team.

SERVICES = {
    "IntakeService": (intake_pb2, Outside.intake),
    "CaseService": (cases, Outside.cases),
    "CompensationService": (comp, Outside.compensation),
    "FollowupService": (fu, Outside.followup),
}
LETTER_CODES = {"D": S.PERMISSION_DENIED, "U": S.UNAUTHENTICATED, "H": S.NOT_FOUND}


def parse_matrix(text: str) -> dict[str, dict[str, str]]:
    """Return {"Service/Method": {role: cells}} from the table above."""
    lines = [line.split() for line in text.strip().splitlines()]
    rows = {}
    for method, *cells in lines[1:]:
        assert len(cells) == len(ROLES), f"{method}: {len(cells)} columns, not {len(ROLES)}"
        assert len({len(c) for c in cells}) == 1 and len(cells[0]) in (1, 3), f"{method}: ragged cells {cells}"
        assert set("".join(cells)) <= {"A", *LETTER_CODES}, f"{method}: unknown letter in {cells}"
        assert method not in rows, f"{method}: two rows"
        rows[method] = dict(zip(ROLES, cells, strict=True))
    return rows


EXPECTED = parse_matrix(MATRIX)


def methods_of(service: str) -> list[str]:
    module, _ = SERVICES[service]
    return [f"{service}/{m.name}" for m in module.DESCRIPTOR.services_by_name[service].methods]


def unruled_methods() -> tuple[list[str], list[str]]:
    """Return (methods without a row or a probe, rows or probes naming no method)."""
    served = [method for service in SERVICES for method in methods_of(service)]
    missing = [m for m in served if m not in EXPECTED or m not in PROBES]
    stale = sorted((set(EXPECTED) | set(PROBES)) - set(served))
    return missing, stale


# ----------------------------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Target:
    """A case to act on: awaiting a team lead's approval, acknowledged; plus a resolved case of the same owner
    with follow-ups pending (its customer lives where it is night, so nothing is sent while the tests run)."""

    owner: Employee
    case_id: str
    customer_id: str
    offer_id: str
    approval_id: str
    resolved_case_id: str
    followup_id: str


# test_3's cancelled wedding trip: statutory compensation is beyond agents and senior agents, so a team lead.
ABOVE_AN_AGENT = {
    "category": common.CATEGORY_CANCELLATION,
    "description": "our overbooking cancelled the trip to the customer's sister's wedding",
    "avoidability": common.AVOIDABILITY_AVOIDABLE,
    "stated_impacts": [common.IMPACT_MISSED_IMPORTANT_EVENT],
    "order_value": eur(20_000),
    "reported_costs": [common.CostItem(kind=common.COST_KIND_HOTEL, amount=eur(9_000), has_receipt=True)],
}
SMALL = {"category": common.CATEGORY_SERVICE_QUALITY, "description": "rude reply at the counter"}


def night_zone(now: datetime | None = None) -> str:
    """Return an IANA zone where it is about 2 a.m. now: inside quiet hours (21:00-09:00) for hours to come."""
    offset = (2 - (now or datetime.now(UTC)).hour) % 24
    if offset > 14:
        offset -= 24  # Etc zones span UTC-12 .. UTC+14
    if offset == 0:
        return "Etc/UTC"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # POSIX sign: Etc/GMT-3 is UTC+3


def req() -> str:
    return new_id("req")


async def awaiting_approval(outside: Outside, owner: Employee, customer: str) -> tuple[cases.Case, cases.Approval]:
    """A case of ``owner`` whose offer waits for a team lead: an agent reports and sends it up, hands it over."""
    reporter = owner if owner.role == "agent" else Employee(REPORTER_A.sub, "agent", owner.team)
    stub = outside.cases()
    reply = await report(outside, reporter, customer, **ABOVE_AN_AGENT)
    case = await offered(outside, reply.case_id, reporter)
    assert case.state == cases.CASE_STATE_OFFER_PENDING, case
    requested = await stub.RequestApproval(
        cases.RequestApprovalRequest(
            request_id=req(), case_id=case.case_id, offer_id=case.current_offer.offer_id, note="above my limit"
        ),
        metadata=outside.as_(reporter),
        timeout=30,
    )
    assert (requested.approval.approver_role, requested.approval.approver_team) == ("team_lead", owner.team)
    if owner != reporter:
        await stub.TransferCase(
            cases.TransferCaseRequest(
                request_id=req(), case_id=case.case_id, to_employee_id=owner.sub, reason="theirs"
            ),
            metadata=outside.as_(reporter),
            timeout=30,
        )
    acknowledged = await stub.AcknowledgeCase(
        cases.AcknowledgeCaseRequest(request_id=req(), case_id=case.case_id, note="sorry, on it"),
        metadata=outside.as_(owner),
        timeout=30,
    )
    assert acknowledged.case.state == cases.CASE_STATE_AWAITING_APPROVAL
    assert acknowledged.case.owner_employee_id == owner.sub
    return acknowledged.case, requested.approval


async def resolved_with_followups(outside: Outside, owner: Employee) -> tuple[str, list[fu.Followup]]:
    """A small case ``owner`` reported, authorised at once, accepted and resolved; returns it and its follow-ups."""
    customer = new_id("cust")
    reply = await report(outside, owner, customer, customer_timezone=night_zone(), **SMALL)
    await accept_and_resolve(outside, await authorized(outside, reply.case_id, owner), owner)
    return reply.case_id, await scheduled(outside, customer)


async def target_of(outside: Outside, owner: Employee) -> Target:
    customer = new_id("cust")
    (case, approval), (resolved_id, followups) = await asyncio.gather(
        awaiting_approval(outside, owner, customer), resolved_with_followups(outside, owner)
    )
    pending = [f for f in followups if f.status == fu.FOLLOWUP_STATUS_PENDING]
    assert pending, followups
    return Target(
        owner=owner,
        case_id=case.case_id,
        customer_id=customer,
        offer_id=case.current_offer.offer_id,
        approval_id=approval.approval_id,
        resolved_case_id=resolved_id,
        followup_id=pending[0].followup_id,
    )


@pytest.fixture(scope="module")
async def world(outside) -> dict[str, Target]:
    """Targets by owner: one per staff role of team A, the colleague (team A) and the other team's agent."""
    owners = {role: CALLERS[role] for role in STAFF} | {"colleague": PEER_A, "other": PEER_B}
    built = await asyncio.gather(*(target_of(outside, owner) for owner in owners.values()))
    return dict(zip(owners, built, strict=True))


def target_for(world: dict[str, Target], role: str, kind: str) -> Target:
    if kind == "own":
        return world[role] if role in STAFF else world["agent"]
    return world[kind]


# ---------------------------------------------------------------------------------------------- the probes
# Each probe: the request, and the codes an admitted caller gets (the business answer right after the check).
Probe = tuple[Callable[[Target, Employee | None], Message], frozenset[grpc.StatusCode]]
OK = frozenset({S.OK})
REFUSED_BY_STATE = frozenset({S.FAILED_PRECONDITION})  # awaiting approval, acknowledged: the call changes nothing
INVALID = frozenset({S.INVALID_ARGUMENT})
WATCH_SECONDS = 3.0


def _delegate_probe(_t: Target, me: Employee | None) -> Message:
    # To oneself: refused as invalid after the role check, so no delegation is ever made by the matrix.
    return cases.DelegateAuthorityRequest(
        request_id=req(),
        delegate_employee_id=me.sub if me else "nobody",
        ends_at=time_to_proto(datetime.now(UTC) + timedelta(hours=1)),
        reason="probe",
    )


PROBES: dict[str, Probe] = {
    # An empty report: INVALID_ARGUMENT once admitted, so the matrix opens no cases.
    "IntakeService/ReportFailure": (lambda t, me: intake_pb2.ReportFailureRequest(request_id=req()), INVALID),
    # No event id: INVALID_ARGUMENT once admitted (a missing one would be NOT_FOUND, which reads as hidden).
    "IntakeService/FindFailure": (lambda t, me: intake_pb2.FindFailureRequest(), INVALID),
    "IntakeService/GetCustomerHistory": (
        lambda t, me: intake_pb2.GetCustomerHistoryRequest(customer_id=t.customer_id),
        OK,
    ),
    "CaseService/GetCase": (lambda t, me: cases.GetCaseRequest(case_id=t.case_id), OK),
    "CaseService/ListCases": (lambda t, me: cases.ListCasesRequest(owner_employee_id=t.owner.sub), OK),
    # A stream: a snapshot when something is visible, otherwise nothing until the deadline.
    "CaseService/WatchCases": (
        lambda t, me: cases.WatchCasesRequest(owner_employee_id=t.owner.sub),
        frozenset({S.OK, S.DEADLINE_EXCEEDED}),
    ),
    "CaseService/ClaimCase": (
        lambda t, me: cases.ClaimCaseRequest(request_id=req(), case_id=t.case_id),
        REFUSED_BY_STATE,
    ),
    # Apologising again is allowed (and logged): a note over the contact log's 2,000 characters is refused
    # once admitted, so the matrix logs nothing.
    "CaseService/AcknowledgeCase": (
        lambda t, me: cases.AcknowledgeCaseRequest(request_id=req(), case_id=t.case_id, note="p" * 2_001),
        INVALID,
    ),
    # No kind: INVALID_ARGUMENT once admitted (the owner, the team's supervisors and the case's reporters log).
    "CaseService/RecordContact": (
        lambda t, me: cases.RecordContactRequest(request_id=req(), case_id=t.case_id),
        INVALID,
    ),
    # The case awaits an approval: no adjustment while the approver decides.
    "CaseService/AdjustOffer": (
        lambda t, me: cases.AdjustOfferRequest(
            request_id=req(),
            case_id=t.case_id,
            offer_id=t.offer_id,
            reason="probe",
            adjustment=common.OfferAdjustment(receipts=[common.ReceiptReceived(cost_kind=common.COST_KIND_TAXI)]),
        ),
        REFUSED_BY_STATE,
    ),
    "CaseService/AuthorizeOffer": (
        lambda t, me: cases.AuthorizeOfferRequest(request_id=req(), case_id=t.case_id, offer_id=t.offer_id),
        REFUSED_BY_STATE,
    ),
    "CaseService/RequestApproval": (
        lambda t, me: cases.RequestApprovalRequest(request_id=req(), case_id=t.case_id, offer_id=t.offer_id),
        REFUSED_BY_STATE,
    ),
    # No reason: INVALID_ARGUMENT once the caller is found to be the approver, and the request stays pending.
    "CaseService/DecideApproval": (
        lambda t, me: cases.DecideApprovalRequest(
            request_id=req(), approval_id=t.approval_id, decision=common.APPROVAL_DECISION_APPROVE
        ),
        INVALID,
    ),
    "CaseService/ListPendingApprovals": (lambda t, me: cases.ListPendingApprovalsRequest(), OK),
    "CaseService/GetMyAuthority": (lambda t, me: cases.GetMyAuthorityRequest(case_id=t.case_id), OK),
    "CaseService/GetIncident": (lambda t, me: cases.GetIncidentRequest(incident_id="probe"), OK),
    # No reason: INVALID_ARGUMENT once the caller is found to be a declarer, and nothing is declared.
    "CaseService/DeclareIncident": (
        lambda t, me: cases.DeclareIncidentRequest(
            request_id=req(), incident_id=f"probe-{req()}", playbook_id="cancelled_flight"
        ),
        INVALID,
    ),
    "CaseService/DelegateAuthority": (_delegate_probe, INVALID),
    "CaseService/PresentOffer": (
        lambda t, me: cases.PresentOfferRequest(request_id=req(), case_id=t.case_id, offer_id=t.offer_id),
        REFUSED_BY_STATE,
    ),
    # To the owner it already has: refused after the access check.
    "CaseService/TransferCase": (
        lambda t, me: cases.TransferCaseRequest(
            request_id=req(), case_id=t.case_id, to_employee_id=t.owner.sub, reason="probe"
        ),
        REFUSED_BY_STATE,
    ),
    "CaseService/RecordCustomerDecision": (
        lambda t, me: cases.RecordCustomerDecisionRequest(
            request_id=req(), case_id=t.case_id, offer_id=t.offer_id, decision=common.CUSTOMER_DECISION_ACCEPTED
        ),
        REFUSED_BY_STATE,
    ),
    "CaseService/ResolveCase": (
        lambda t, me: cases.ResolveCaseRequest(request_id=req(), case_id=t.case_id, resolution_summary="probe"),
        REFUSED_BY_STATE,
    ),
    "CaseService/ReopenCase": (
        lambda t, me: cases.ReopenCaseRequest(request_id=req(), case_id=t.case_id, reason="probe"),
        REFUSED_BY_STATE,
    ),
    "CompensationService/QuoteOffer": (lambda t, me: comp.QuoteOfferRequest(case_id=t.case_id), OK),
    "CompensationService/GetOffer": (lambda t, me: comp.GetOfferRequest(offer_id=t.offer_id), OK),
    "CompensationService/ListOffers": (lambda t, me: comp.ListOffersRequest(case_id=t.case_id), OK),
    "CompensationService/GetPolicy": (lambda t, me: comp.GetPolicyRequest(), OK),
    # The case awaiting approval was never resolved: followup knows no such case yet.
    "FollowupService/RecordFeedback": (
        lambda t, me: fu.RecordFeedbackRequest(request_id=req(), case_id=t.case_id, score=9, satisfied=True),
        frozenset({S.NOT_FOUND}),
    ),
    "FollowupService/ListFollowups": (lambda t, me: fu.ListFollowupsRequest(case_id=t.resolved_case_id), OK),
    # Admitted: cancelled (or already cancelled by an earlier probe: returned unchanged).
    "FollowupService/CancelFollowup": (
        lambda t, me: fu.CancelFollowupRequest(request_id=req(), followup_id=t.followup_id, reason="probe"),
        OK,
    ),
}


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    reply: Message | None = None
    streamed: tuple = ()


async def invoke(outside: Outside, method: str, request: Message, metadata) -> Outcome:
    """Call ``Service/Method``; a server stream is read up to its first message (or its short deadline)."""
    service, name = method.split("/")
    stub = SERVICES[service][1](outside)
    module = SERVICES[service][0]
    streaming = module.DESCRIPTOR.services_by_name[service].methods_by_name[name].server_streaming
    try:
        if streaming:
            call = getattr(stub, name)(request, metadata=metadata, timeout=WATCH_SECONDS)
            try:
                first = await call.read()
            finally:
                call.cancel()
            return Outcome(S.OK, "", streamed=() if first is grpc.aio.EOF else (first,))
        reply = await getattr(stub, name)(request, metadata=metadata, timeout=30)
        return Outcome(S.OK, "", reply=reply)
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), error.details() or "")


def visible_to(case: cases.Case, who: Employee) -> bool:
    """The escalation visibility rule, stated from outside: own, a supervisor's team, or queued in the team."""
    if case.owner_employee_id == who.sub:
        return True
    if case.team == who.team and (who.role in SUPERVISORS or case.state == cases.CASE_STATE_QUEUED):
        return True
    return False


FIGURES: Counter = Counter()


@pytest.mark.parametrize("service", list(SERVICES))
async def test_every_rpc_answers_every_role_on_every_case_as_the_matrix_says(outside, world, service):
    missing, stale = unruled_methods()
    assert not missing, f"no method without an explicit rule: add a MATRIX row and a probe for {missing}"
    assert not stale, f"MATRIX rows or probes for methods no service has: {stale}"

    limit = asyncio.Semaphore(12)
    cells = []
    for method in methods_of(service):
        for role in ROLES:
            letters = EXPECTED[method][role]
            kinds = TARGETS if len(letters) == 3 else ("-",)
            cells += [(method, role, kind, letter) for kind, letter in zip(kinds, letters, strict=True)]

    async def run(method: str, role: str, kind: str, letter: str) -> tuple[str, list[str]]:
        me = CALLERS.get(role)
        target = target_for(world, role, "colleague" if kind == "-" else kind)
        build, admitted = PROBES[method]
        async with limit:
            outcome = await invoke(outside, method, build(target, me), outside.as_(me) if me else None)
        seen = "A" if outcome.code in admitted else next((k for k, c in LETTER_CODES.items() if c == outcome.code), "?")
        problems = []
        if seen != letter:
            problems.append(f"expected {letter}, got {outcome.code.name}: {outcome.details[:200]}")
        # What an admitted reader sees must be visible to them, and everything visible must be there.
        listed = [
            *(outcome.reply.cases if method == "CaseService/ListCases" and outcome.reply else ()),
            *outcome.streamed,
        ]
        for case in (c.case if isinstance(c, cases.WatchCasesResponse) else c for c in listed):
            if not visible_to(case, me):
                problems.append(f"returned case {case.case_id} of {case.owner_employee_id} ({case.team})")
        if method == "CaseService/ListCases" and outcome.reply is not None:
            should = EXPECTED["CaseService/GetCase"][role][TARGETS.index(kind)] == "A"
            if (target.case_id in {c.case_id for c in outcome.reply.cases}) != should:
                problems.append(f"target case {'missing from' if should else 'leaked into'} the list")
        on = {"own": "own case", "colleague": "colleague's case", "other": "other team's case"}.get(kind, "no case")
        return seen, [f"{method} as {role} on {on}: {p}" for p in problems]

    results = await asyncio.gather(*(run(*cell) for cell in cells))
    seen = Counter(letter for letter, _ in results)
    mismatches = [p for _, problems in results for p in problems]
    FIGURES.update({"calls": len(cells), **seen})
    print(
        f"\n{service}: {len(cells)} calls, {seen['A']} allowed, {seen['D'] + seen['U'] + seen['H']} denied "
        f"({seen['D']} PERMISSION_DENIED, {seen['U']} UNAUTHENTICATED, {seen['H']} hidden), {seen['?']} other; "
        f"all services so far: {FIGURES['calls']} calls, {FIGURES['A']} allowed, "
        f"{FIGURES['D'] + FIGURES['U'] + FIGURES['H']} denied"
    )
    assert not mismatches, f"{len(mismatches)} of {len(cells)} calls differ from MATRIX:\n" + "\n".join(mismatches)


def test_no_method_of_any_service_is_without_an_explicit_rule():
    missing, stale = unruled_methods()
    assert not missing and not stale, (missing, stale)
    assert sum(len(methods_of(s)) for s in SERVICES) == len(EXPECTED)


# ----------------------------------------------------------------------------------------------- tokens


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_SECRET: list[str] = []  # the running system's token secret (the runner made it): set for every test below
ISSUED: set[str] = set()  # every token this module sent: none of them may show up in the logs


@pytest.fixture(autouse=True)
def _system_secret(system) -> None:
    _SECRET[:] = [system.jwt_secret]


def secret() -> str:
    """Return what the running system verifies tokens with."""
    return _SECRET[0]


def valid_token(who: Employee, **kwargs) -> str:
    token = issue_token(
        secret_or_private_key=secret(), algorithm="HS256", sub=who.sub, role=who.role, team=who.team, **kwargs
    )
    ISSUED.add(token)
    return token


def signed(claims: dict, *, key: str, algorithm: str = "HS256") -> str:
    """Return a JWT signed by hand with HMAC (``algorithm`` HS256 or HS512) over base64url JSON."""
    header = b64url(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[algorithm]
    return f"{signing_input}.{b64url(hmac.new(key.encode(), signing_input.encode(), digest).digest())}"


def bad_token(kind: str, who: Employee) -> str:
    """Return a token the services must refuse: how it is wrong is ``kind``."""
    now = datetime.now(UTC)
    claims = {"sub": who.sub, "role": who.role, "team": who.team, "iat": int(now.timestamp())}
    claims["exp"] = int((now + timedelta(hours=1)).timestamp())
    unsigned = f"{b64url(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64url(json.dumps(claims).encode())}"
    if kind == "expired":
        token = valid_token(who, now=now - timedelta(hours=2), ttl_seconds=600)
    elif kind == "wrong_secret":
        token = signed(claims, key="another-secret-of-at-least-thirty-two-bytes!")
    elif kind == "alg_none":
        token = f"{unsigned}."
    elif kind == "alg_none_with_signature":  # a real signature kept, the header switched to none
        token = f"{unsigned}.{valid_token(who).split('.')[2]}"
    elif kind == "tampered_role":  # signed as an agent, the payload then says director
        header, payload, signature = valid_token(who).split(".")
        changed = json.loads(unb64url(payload)) | {"role": "director"}
        token = f"{header}.{b64url(json.dumps(changed).encode())}.{signature}"
    elif kind == "tampered_team":
        header, payload, signature = valid_token(who).split(".")
        changed = json.loads(unb64url(payload)) | {"team": TEAM_B}
        token = f"{header}.{b64url(json.dumps(changed).encode())}.{signature}"
    elif kind == "other_algorithm":  # the right secret, an algorithm the services do not pin
        token = signed(claims, key=secret(), algorithm="HS512")
    elif kind == "no_expiry":  # correctly signed, but it would never end
        token = signed({k: v for k, v in claims.items() if k != "exp"}, key=secret())
    else:
        raise AssertionError(kind)
    ISSUED.add(token)
    return token


BAD_TOKENS = (
    "expired",
    "wrong_secret",
    "alg_none",
    "alg_none_with_signature",
    "tampered_role",
    "tampered_team",
    "other_algorithm",
    "no_expiry",
)
# One method of each service.
TOKEN_PROBES = {
    "IntakeService/GetCustomerHistory": intake_pb2.GetCustomerHistoryRequest(customer_id="cust-token-probe"),
    "CaseService/ListPendingApprovals": cases.ListPendingApprovalsRequest(),
    "CompensationService/GetPolicy": comp.GetPolicyRequest(),
    "FollowupService/ListFollowups": fu.ListFollowupsRequest(customer_id="cust-token-probe"),
}


async def test_a_well_formed_token_is_accepted_by_the_token_probes(outside):
    agent = CALLERS["agent"]
    for method, request in TOKEN_PROBES.items():
        outcome = await invoke(outside, method, request, [("authorization", f"Bearer {valid_token(agent)}")])
        assert outcome.code == S.OK, (method, outcome)


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_a_bad_token_is_unauthenticated_on_every_service(outside, kind):
    token = bad_token(kind, CALLERS["agent"])
    for method, request in TOKEN_PROBES.items():
        outcome = await invoke(outside, method, request, [("authorization", f"Bearer {token}")])
        assert outcome.code == S.UNAUTHENTICATED, (kind, method, outcome)
        assert token not in outcome.details and secret() not in outcome.details


# ------------------------------------------------------------------------------------------ self-approval


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    found = {}
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found |= {v.field: v.description for v in bad.field_violations}
    return found


async def test_nobody_approves_their_own_request_by_any_path(outside):
    team = f"sec-c-{RUN}"
    owner = Employee(f"sec-c-agent-{RUN}", "agent", team)
    lead = Employee(f"sec-c-lead-{RUN}", "team_lead", team)
    uninvolved_lead = Employee(f"sec-c-lead2-{RUN}", "team_lead", team)
    deputy = Employee(f"sec-c-senior-{RUN}", "senior_agent", team)
    stub = outside.cases()

    async def pending(requester: Employee) -> tuple[cases.Case, cases.Approval]:
        reply = await report(outside, owner, new_id("cust"), **ABOVE_AN_AGENT)
        case = await offered(outside, reply.case_id, owner)
        requested = await stub.RequestApproval(
            cases.RequestApprovalRequest(
                request_id=req(), case_id=case.case_id, offer_id=case.current_offer.offer_id, note="please"
            ),
            metadata=outside.as_(requester),
            timeout=30,
        )
        return case, requested.approval

    # The owner sends one up; the team lead (who may act on the team's cases) sends up the other.
    (owners_case, owners_request), (leads_case, leads_request) = await asyncio.gather(pending(owner), pending(lead))
    assert owners_request.approver_role == leads_request.approver_role == "team_lead"
    assert (owners_request.requested_by.employee_id, leads_request.requested_by.employee_id) == (owner.sub, lead.sub)
    # Modified down a little (statutory lines and reimbursements are never cut, so not much lower).
    lower = eur(owners_request.amount.amount_minor - 100)

    async def decide(who: Employee, approval: cases.Approval, modify: bool = False) -> cases.DecideApprovalResponse:
        decision = common.APPROVAL_DECISION_MODIFY_AND_APPROVE if modify else common.APPROVAL_DECISION_APPROVE
        return await stub.DecideApproval(
            cases.DecideApprovalRequest(
                request_id=req(),
                approval_id=approval.approval_id,
                decision=decision,
                approved_amount=lower if modify else None,
                reason="fair, given what happened",
            ),
            metadata=outside.as_(who),
            timeout=30,
        )

    async def delegate(to: str) -> cases.DelegateAuthorityResponse:
        return await stub.DelegateAuthority(
            cases.DelegateAuthorityRequest(
                request_id=req(),
                delegate_employee_id=to,
                ends_at=time_to_proto(datetime.now(UTC) + timedelta(hours=1)),
                reason="on holiday",
            ),
            metadata=outside.as_(lead),
            timeout=30,
        )

    async def refused(who: Employee, approval: cases.Approval, *, modify: bool = False) -> str:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await decide(who, approval, modify)
        assert caught.value.code() == S.PERMISSION_DENIED, (who, caught.value)
        return caught.value.details()

    # 1. The requester approves their own request, as it is and modified down to what they could grant alone.
    assert "own request" in await refused(owner, owners_request)
    assert "own request" in await refused(owner, owners_request, modify=True)
    # 2. Delegating to oneself is refused.
    with pytest.raises(grpc.aio.AioRpcError) as to_self:
        await delegate(lead.sub)
    assert to_self.value.code() == S.INVALID_ARGUMENT
    assert "delegate_employee_id" in violations(to_self.value)
    # 3. The approver's authority lent to the requester does not let them decide their own request.
    await delegate(owner.sub)
    assert "own request" in await refused(owner, owners_request)
    assert "own request" in await refused(owner, owners_request, modify=True)
    # 4. A lead who sent a request up decides it neither themselves nor through their delegate.
    assert "own request" in await refused(lead, leads_request)
    assert "own request" in await refused(lead, leads_request, modify=True)
    await delegate(deputy.sub)
    assert "delegate" in await refused(deputy, leads_request)
    assert "delegate" in await refused(deputy, leads_request, modify=True)
    # 5. The owner of a request someone else sent up does not decide it either.
    assert "own request" in await refused(owner, leads_request)

    # Nothing changed: both offers still wait for the same requests.
    for case, approval in ((owners_case, owners_request), (leads_case, leads_request)):
        now = await outside.case(case.case_id, owner)
        assert (now.state, now.pending_approval_id) == (cases.CASE_STATE_AWAITING_APPROVAL, approval.approval_id)
        assert now.current_offer.status == cases.OFFER_STATUS_AWAITING_APPROVAL
    listed = await stub.ListPendingApprovals(
        cases.ListPendingApprovalsRequest(), metadata=outside.as_(uninvolved_lead), timeout=30
    )
    assert {owners_request.approval_id, leads_request.approval_id} <= {a.approval_id for a in listed.approvals}

    # The refusals are about who decides, not a blanket no: the deputy decides a request their delegator did not
    # make (modified, with the delegator's authority), and an uninvolved lead decides the lead's.
    by_deputy = await decide(deputy, owners_request, modify=True)
    assert (by_deputy.approval.decided_by.employee_id, by_deputy.approval.approved_amount) == (deputy.sub, lower)
    by_peer = await decide(uninvolved_lead, leads_request)
    assert by_peer.approval.decided_by.employee_id == uninvolved_lead.sub
    # Each case has the owner's share, granted when the request went up, and the approved remainder.
    (share, seen) = await outside.wait("recovery.offer-authorized.v1", of_case(owners_case.case_id), count=2)
    assert share.message.part == common.AUTHORIZATION_PART_OWNER_SHARE
    assert (seen.message.tier, seen.message.amount) == (common.AUTHORIZATION_TIER_APPROVER, lower)
    assert seen.message.limits.delegated_by_employee_id == lead.sub
    (_, seen) = await outside.wait("recovery.offer-authorized.v1", of_case(leads_case.case_id), count=2)
    assert seen.message.authorized_by.employee_id == uninvolved_lead.sub


async def test_the_owner_of_a_case_does_not_decide_its_approval_when_the_case_came_to_them_by_transfer(outside):
    """The request was the agent's; the case, and so the request, is now the team lead's: not theirs to decide."""
    team = f"sec-g-{RUN}"
    agent = Employee(f"sec-g-agent-{RUN}", "agent", team)
    lead = Employee(f"sec-g-lead-{RUN}", "team_lead", team)
    stub = outside.cases()
    reply = await report(outside, agent, new_id("cust"), **ABOVE_AN_AGENT)
    case = await offered(outside, reply.case_id, agent)
    requested = await stub.RequestApproval(
        cases.RequestApprovalRequest(
            request_id=req(), case_id=case.case_id, offer_id=case.current_offer.offer_id, note="please"
        ),
        metadata=outside.as_(agent),
        timeout=30,
    )
    assert requested.approval.approver_role == "team_lead"
    moved = await stub.TransferCase(
        cases.TransferCaseRequest(request_id=req(), case_id=case.case_id, to_employee_id=lead.sub, reason="escalated"),
        metadata=outside.as_(agent),
        timeout=30,
    )
    assert (moved.case.owner_employee_id, moved.case.state) == (lead.sub, cases.CASE_STATE_AWAITING_APPROVAL)
    decision = cases.DecideApprovalRequest(
        request_id=req(),
        approval_id=requested.approval.approval_id,
        decision=common.APPROVAL_DECISION_APPROVE,
        reason="my own case now",
    )
    outcome = await invoke(outside, "CaseService/DecideApproval", decision, outside.as_(lead))
    now = await outside.case(case.case_id, lead)
    assert outcome.code == S.PERMISSION_DENIED, (
        f"the owner of case {case.case_id} decided its approval: {outcome.code.name}, "
        f"case now {cases.CaseState.Name(now.state)}"
    )
    assert now.state == cases.CASE_STATE_AWAITING_APPROVAL


# ------------------------------------------------------------------------------------------- idempotency


async def test_a_request_id_reused_with_other_parameters_is_refused_and_changes_nothing(outside):
    team = f"sec-d-{RUN}"
    agent = Employee(f"sec-d-agent-{RUN}", "agent", team)
    colleague = Employee(f"sec-d-colleague-{RUN}", "agent", team)
    third = Employee(f"sec-d-third-{RUN}", "agent", team)
    customer = new_id("cust")

    # Intake: ReportFailure.
    first = intake_pb2.ReportFailureRequest(
        request_id=req(),
        customer_id=customer,
        reference=new_id("order"),
        occurred_at=ago(hours=1),
        customer_timezone=night_zone(),
        preferred_channel=common.CHANNEL_EMAIL,
        **SMALL,
    )
    intake = outside.intake()
    reported = await intake.ReportFailure(first, metadata=outside.as_(agent), timeout=30)
    retried = await intake.ReportFailure(first, metadata=outside.as_(agent), timeout=30)
    assert retried == reported  # a retry gets the stored answer
    other = intake_pb2.ReportFailureRequest()
    other.CopyFrom(first)
    other.description = "something else entirely"
    for request, who in ((other, agent), (first, colleague)):  # other parameters; the same id from someone else
        with pytest.raises(grpc.aio.AioRpcError) as reused:
            await intake.ReportFailure(request, metadata=outside.as_(who), timeout=30)
        assert reused.value.code() == S.ALREADY_EXISTS, reused.value
    history = await intake.GetCustomerHistory(
        intake_pb2.GetCustomerHistoryRequest(customer_id=customer), metadata=outside.as_(agent), timeout=30
    )
    assert [(f.case_id, f.description) for f in history.failures] == [(reported.case_id, SMALL["description"])]
    assert [c.case_id for c in history.cases] == [reported.case_id]

    # Escalation: TransferCase.
    case = await authorized(outside, reported.case_id, agent)
    stub = outside.cases()
    transfer = cases.TransferCaseRequest(
        request_id=req(), case_id=case.case_id, to_employee_id=colleague.sub, reason="she speaks the language"
    )
    await stub.TransferCase(transfer, metadata=outside.as_(agent), timeout=30)
    elsewhere = cases.TransferCaseRequest()
    elsewhere.CopyFrom(transfer)
    elsewhere.to_employee_id = third.sub
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await stub.TransferCase(elsewhere, metadata=outside.as_(agent), timeout=30)
    assert reused.value.code() == S.ALREADY_EXISTS, reused.value
    replayed = await stub.TransferCase(transfer, metadata=outside.as_(agent), timeout=30)
    assert replayed.case.owner_employee_id == colleague.sub
    now = await outside.case(case.case_id, colleague)
    assert (now.owner_employee_id, now.transfer_count) == (colleague.sub, 1)

    # Compensation has no mutating RPC (offers are made from events): nothing there takes a request id.
    for method in comp.DESCRIPTOR.services_by_name["CompensationService"].methods:
        assert "request_id" not in method.input_type.fields_by_name, f"{method.name} mutates: test its request id"

    # Followup: CancelFollowup (the customer lives where it is night: the follow-ups wait for the morning).
    await accept_and_resolve(outside, now, colleague)
    followups = await scheduled(outside, customer)
    assert len(followups) >= 2 and all(f.status == fu.FOLLOWUP_STATUS_PENDING for f in followups), followups
    followup = outside.followup()
    cancel = fu.CancelFollowupRequest(request_id=req(), followup_id=followups[0].followup_id, reason="asked not to")
    await followup.CancelFollowup(cancel, metadata=outside.as_(colleague), timeout=30)
    another = fu.CancelFollowupRequest()
    another.CopyFrom(cancel)
    another.followup_id = followups[1].followup_id
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await followup.CancelFollowup(another, metadata=outside.as_(colleague), timeout=30)
    assert reused.value.code() == S.ALREADY_EXISTS, reused.value
    listed = await followup.ListFollowups(
        fu.ListFollowupsRequest(case_id=case.case_id), metadata=outside.as_(colleague), timeout=30
    )
    status = {f.followup_id: f.status for f in listed.followups}
    assert status[followups[0].followup_id] == fu.FOLLOWUP_STATUS_CANCELLED
    assert status[followups[1].followup_id] == fu.FOLLOWUP_STATUS_PENDING


# -------------------------------------------------------------------------------------------------- logs

CARD = "4111 1111 1111 1111"
IBAN = "LT12 1000 0111 0100 1000"
JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9\-._~+/]{8,}")
# 13 to 19 digits, optionally grouped by single spaces or dashes, not part of a longer word or number.
DIGITS = re.compile(r"(?<![0-9A-Za-z])\d(?:[ -]?\d){12,18}(?![0-9A-Za-z]|[ -]\d)")
IBAN_LIKE = re.compile(r"(?<![0-9A-Za-z])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![0-9A-Za-z])")


def luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def card_numbers(line: str) -> list[str]:
    found = [m.group() for m in DIGITS.finditer(line) if luhn(re.sub(r"[ -]", "", m.group()))]
    return found + [m.group() for m in IBAN_LIKE.finditer(line) if iban_valid(m.group())]


def test_the_leak_detectors_see_what_they_look_for():
    assert card_numbers(f"x {CARD} y") == [CARD]
    assert card_numbers('"4111111111111111"') == ["4111111111111111"]
    assert card_numbers(f"account {IBAN}.") == [IBAN]
    assert not card_numbers("at 2026-01-02T03:04:05.678+00:00 offset 1234567 case 4f1e2d3c4b5a69788796a5b4c3d2e1f0")
    assert JWT_LIKE.search(valid_token(CALLERS["agent"]))


@pytest.fixture(scope="module")
async def exercised(outside, system) -> list[str]:
    """Drive the system with tokens, bad tokens and card/account numbers in reports; return its output since
    start once every service has handled them."""
    agent = Employee(f"sec-e-agent-{RUN}", "agent", f"sec-e-{RUN}")
    sensitive = f"charged twice on card {CARD}; refund to {IBAN} please (card 4111-1111-1111-1111)"
    good = [("authorization", f"Bearer {valid_token(agent)}")]
    # The frontline types what the customer said into the report.
    customer = new_id("cust")
    reply = await intake_report(outside, good, customer, sensitive)
    # A survey tool publishes the same words, once well formed and once with the comment in the score field.
    surveyed = new_id("cust")
    failure = events.FailureReported(
        customer_id=surveyed,
        source=common.SOURCE_SURVEY,
        source_event_id=new_id("survey"),
        reference=new_id("order"),
        category=common.CATEGORY_BILLING_ERROR,
        occurred_at=ago(hours=2),
        description=sensitive,
        survey_score=2,
    )
    await outside.publish("recovery.failure-reported.v1", failure, source="survey-tool", content_type=cloudevents.JSON)
    garbled = new_id("cust")
    headers, _, _ = cloudevents.encode(failure, source="survey-tool", content_type=cloudevents.JSON)
    body = json.dumps({"customerId": garbled, "source": "SOURCE_SURVEY", "surveyScore": sensitive}).encode()
    await outside.publish_raw("recovery.failure-reported.v1", key=garbled, value=body, headers=headers)
    # Bad tokens and a forbidden call, on every service.
    for method, request in TOKEN_PROBES.items():
        for kind in ("expired", "tampered_role", "wrong_secret"):
            await invoke(outside, method, request, [("authorization", f"Bearer {bad_token(kind, agent)}")])
        await invoke(outside, method, request, good)
        customer_token = valid_token(Employee(f"sec-e-customer-{RUN}", "customer", agent.team))
        await invoke(outside, method, request, [("authorization", f"Bearer {customer_token}")])

    # Every service has handled all of it: the reported case has its offer; the survey failure opened a case;
    # the garbled record was dead-lettered and intake's log line about it is in the output.
    await outside.case(reply.case_id, agent, lambda c: c.current_offer.version >= 1)
    await outside.events("recovery.case-opened.v1", surveyed)
    (letter,) = await outside.wait(DEAD_LETTERS, for_customer(garbled))
    where = f"{letter.headers['dlq_original_topic']}[{letter.headers['dlq_original_partition']}]"
    where += f"@{letter.headers['dlq_original_offset']}"
    async with asyncio.timeout(30):
        while True:  # the runner's reader appends each line as the process writes it
            if any(f"dead-lettering {where}" in line for line in system.output):
                break
            await asyncio.sleep(0.1)
    return list(system.output)


async def intake_report(
    outside: Outside, metadata, customer: str, description: str
) -> intake_pb2.ReportFailureResponse:
    return await outside.intake().ReportFailure(
        intake_pb2.ReportFailureRequest(
            request_id=req(),
            customer_id=customer,
            reference=new_id("order"),
            category=common.CATEGORY_BILLING_ERROR,
            occurred_at=ago(hours=1),
            description=description,
            impact_details=f"customer read out the card number {CARD.replace(' ', '')}",
            customer_timezone=night_zone(),
        ),
        metadata=metadata,
        timeout=30,
    )


def leaks(lines: list[str], find: Callable[[str], list[str]]) -> list[str]:
    return [f"{line.strip()[:400]}  <- {found}" for line in lines if (found := find(line))]


async def test_no_token_reaches_the_logs(exercised):
    assert ISSUED
    signatures = {t.split(".")[2] for t in ISSUED} - {""}
    found = leaks(exercised, lambda line: [t[:24] for t in ISSUED if t in line])
    found += leaks(exercised, lambda line: [s[:12] for s in signatures if s in line])
    found += leaks(exercised, lambda line: JWT_LIKE.findall(line) + BEARER.findall(line))
    print(f"\nlog lines scanned: {len(exercised)}; tokens sent by this module: {len(ISSUED)}")
    assert not found, "tokens in the logs:\n" + "\n".join(found)


async def test_no_secret_reaches_the_logs(exercised, system):
    secrets = {"JWT secret": system.jwt_secret}
    password = urlsplit(system.database_url).password
    if password:
        secrets["database password"] = password
    found = leaks(exercised, lambda line: [name for name, value in secrets.items() if value in line])
    assert not found, "secrets in the logs:\n" + "\n".join(found)


async def test_no_card_or_account_number_reaches_the_logs(exercised):
    found = leaks(exercised, card_numbers)
    assert not found, f"{len(found)} log lines carry a card or account number:\n" + "\n".join(found)
