"""The case lifecycle as a transition table: (state, command type) -> handler -> Transition.

A pair missing from the table is an illegal transition, refused with ``IllegalTransition`` (a
FAILED_PRECONDITION with a STATE violation saying why). Handlers are small and return the new case and
the domain events of the change; limits and SLA clocks are decided elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from services.escalation.domain import commands as c
from services.escalation.domain.errors import IllegalTransition
from services.escalation.domain.events import (
    ApprovalDecided,
    ApprovalRequested,
    CaseAcknowledged,
    CaseClaimed,
    CaseReopened,
    CaseResolved,
    CaseTransferred,
    CustomerDecisionRecorded,
    OfferAuthorized,
    OfferPresented,
    OfferProposed,
)
from services.escalation.domain.model import ActorKind, Case, CaseState, CustomerDecision

S = CaseState


@dataclass(frozen=True)
class Transition:
    """The case after a command, and what happened."""

    case: Case
    events: tuple[object, ...]


Handler = Callable[[Case, object, datetime], Transition]


def _to(state: CaseState, event: Callable[[Case, object, datetime], object]) -> Handler:
    def handler(case: Case, command: object, now: datetime) -> Transition:
        return Transition(replace(case, state=state), (event(case, command, now),))

    return handler


def _stay(event: Callable[[Case, object, datetime], object]) -> Handler:
    def handler(case: Case, command: object, now: datetime) -> Transition:
        return Transition(case, (event(case, command, now),))

    return handler


def _after_work(case: Case) -> CaseState:
    """Return where a case goes when its offer is no longer in play: acknowledged, or open if never."""
    return S.ACKNOWLEDGED if case.acknowledged_at else S.OPEN


def _claim(case: Case, command: c.ClaimCase, now: datetime) -> Transition:
    # An offer that arrived while the case was queued is in play as soon as someone owns the case.
    if not case.current_offer_id:
        state = S.OPEN
    elif case.pending_approval_id:
        state = S.AWAITING_APPROVAL  # sent for review while queued: the new owner inherits the request in flight
    else:
        state = S.OFFER_READY if command.offer_authorized else S.OFFER_PENDING
    claimed = replace(case, state=state, owner_employee_id=command.by.employee_id, owner_role=command.by.role)
    return Transition(claimed, (CaseClaimed(case.case_id, command.by.employee_id, at=now),))


def _acknowledge(case: Case, command: c.AcknowledgeCase, now: datetime) -> Transition:
    if case.acknowledged_at is not None and case.state is not S.REOPENED:
        return Transition(case, ())  # apologising again is a contact (logged), not a move of the case
    # Acknowledging moves an open (or reopened) case on; with an offer in play the state is the offer's.
    state = S.ACKNOWLEDGED if case.state in (S.OPEN, S.REOPENED) else case.state
    return Transition(replace(case, state=state, acknowledged_at=now), (CaseAcknowledged(case.case_id, at=now),))


def _authorize(case: Case, command: c.AuthorizeOffer, now: datetime) -> Transition:
    if case.state is S.QUEUED and command.by.kind is not ActorKind.SYSTEM:
        raise IllegalTransition.of(case.case_id, "a queued case has no owner to authorise its offer; claim it first")
    state = S.QUEUED if case.state is S.QUEUED else S.OFFER_READY
    return Transition(replace(case, state=state), (OfferAuthorized(case.case_id, command.by, at=now),))


def _request_queued(case: Case, command: c.RequestApproval, now: datetime) -> Transition:
    # Only the system sends a queued case's offer up (a flagged one, as it arrives); people claim the case first.
    if command.by.kind is not ActorKind.SYSTEM:
        raise IllegalTransition.of(case.case_id, "a queued case has no owner to send its offer up; claim it first")
    return Transition(case, (ApprovalRequested(case.case_id, command.by, at=now),))


def _decide(case: Case, command: c.DecideApproval, now: datetime) -> Transition:
    if case.state is S.QUEUED:  # decided before anyone claimed the case: it waits in the queue, decided
        state = S.QUEUED
    else:
        state = S.OFFER_READY if command.approved else _after_work(case)
    event = ApprovalDecided(case.case_id, command.by, approved=command.approved, at=now)
    return Transition(replace(case, state=state, pending_approval_id=""), (event,))


_ANSWER_STATE: dict[CustomerDecision, Callable[[Case], CaseState]] = {
    # Accepted: the offer stands, the owner resolves. Declined or countered: work goes on (a counter makes
    # compensation re-quote, and the new offer brings the case back to offer pending).
    CustomerDecision.ACCEPTED: lambda case: S.OFFER_READY,
    CustomerDecision.DECLINED: _after_work,
    CustomerDecision.COUNTERED: _after_work,
}


def _answer(case: Case, command: c.RecordCustomerDecision, now: datetime) -> Transition:
    state = _ANSWER_STATE[command.decision](case)
    event = CustomerDecisionRecorded(case.case_id, command.decision, at=now)
    return Transition(replace(case, state=state), (event,))


def _transfer(case: Case, command: c.TransferCase, now: datetime) -> Transition:
    if not command.reason.strip():
        raise IllegalTransition.of(case.case_id, "a transfer needs a reason (passing the customer on is the brush-off)")
    if command.to_employee_id and command.to_employee_id == case.owner_employee_id:
        raise IllegalTransition.of(case.case_id, "the case already belongs to that employee")
    team = command.to_team or case.team
    if command.to_employee_id:
        state = case.state
        if case.state is S.QUEUED:
            state = S.AWAITING_APPROVAL if case.pending_approval_id else S.OPEN
    elif case.pending_approval_id:
        raise IllegalTransition.of(case.case_id, "an approval is in flight: the case can only go to a named employee")
    elif case.state in _QUEUEABLE:
        state = S.QUEUED
    else:
        raise IllegalTransition.of(case.case_id, f"a case in state {case.state.value} can only go to a named employee")
    moved = replace(
        case,
        state=state,
        owner_employee_id=command.to_employee_id,
        owner_role="",  # the new owner's role is known once they act with their own token
        team=team,
        transfer_count=case.transfer_count + 1,
    )
    event = CaseTransferred(case.case_id, case.owner_employee_id, command.to_employee_id, team, command.reason, at=now)
    return Transition(moved, (event,))


def _resolve(case: Case, command: c.ResolveCase, now: datetime) -> Transition:
    resolved = replace(case, state=S.RESOLVED, resolution_count=case.resolution_count + 1)
    return Transition(resolved, (CaseResolved(case.case_id, command.by, at=now),))


def _reopen(case: Case, command: c.ReopenCase, now: datetime) -> Transition:
    if not command.reason.strip():
        raise IllegalTransition.of(case.case_id, "reopening needs a reason")
    return Transition(replace(case, state=S.REOPENED), (CaseReopened(case.case_id, command.reason, at=now),))


# Transfers to a queue are allowed only where no offer decision is in flight (an approver or customer waits).
_QUEUEABLE = frozenset({S.QUEUED, S.OPEN, S.ACKNOWLEDGED, S.OFFER_PENDING, S.OFFER_READY, S.REOPENED})
_ACTIVE = tuple(s for s in CaseState if s is not S.RESOLVED)
_OFFER_ACCEPTING = (
    S.OPEN,
    S.ACKNOWLEDGED,
    S.OFFER_PENDING,
    S.OFFER_READY,
    S.WAITING_ON_CUSTOMER,
    S.REOPENED,
)

TABLE: dict[tuple[CaseState, type], Handler] = {
    (S.QUEUED, c.ClaimCase): _claim,
    **{
        (s, c.AcknowledgeCase): _acknowledge
        # Every state with an owner: apologising again, whenever, is logged (the first one moves the case).
        for s in _ACTIVE
        if s is not S.QUEUED
    },
    (S.QUEUED, c.ProposeOffer): _stay(lambda case, cmd, now: OfferProposed(case.case_id, cmd.offer_id, at=now)),
    **{
        (s, c.ProposeOffer): _to(
            S.OFFER_PENDING, lambda case, cmd, now: OfferProposed(case.case_id, cmd.offer_id, at=now)
        )
        for s in _OFFER_ACCEPTING
    },
    # A re-quote never cancels an approval in progress: the request follows the new offer (see arrivals).
    (S.AWAITING_APPROVAL, c.ProposeOffer): _stay(
        lambda case, cmd, now: OfferProposed(case.case_id, cmd.offer_id, at=now)
    ),
    (S.QUEUED, c.AuthorizeOffer): _authorize,
    (S.OFFER_PENDING, c.AuthorizeOffer): _authorize,
    (S.OFFER_PENDING, c.RequestApproval): _to(
        S.AWAITING_APPROVAL, lambda case, cmd, now: ApprovalRequested(case.case_id, cmd.by, at=now)
    ),
    (S.QUEUED, c.RequestApproval): _request_queued,
    (S.AWAITING_APPROVAL, c.DecideApproval): _decide,
    (S.QUEUED, c.DecideApproval): _decide,
    (S.OFFER_READY, c.PresentOffer): _to(
        S.WAITING_ON_CUSTOMER, lambda case, cmd, now: OfferPresented(case.case_id, cmd.by, at=now)
    ),
    (S.OFFER_READY, c.RecordCustomerDecision): _answer,
    (S.WAITING_ON_CUSTOMER, c.RecordCustomerDecision): _answer,
    **{(s, c.TransferCase): _transfer for s in _ACTIVE},
    **{
        (s, c.ResolveCase): _resolve
        for s in (S.OPEN, S.ACKNOWLEDGED, S.OFFER_PENDING, S.OFFER_READY, S.WAITING_ON_CUSTOMER, S.REOPENED)
    },
    (S.RESOLVED, c.ReopenCase): _reopen,
}

# Why a command is refused in a state, when the table has no entry (the default is generic).
_WHY: dict[type, str] = {
    c.ClaimCase: "only a queued case can be claimed",
    c.AcknowledgeCase: "the case cannot be acknowledged now (queued cases are claimed first; resolved ones are closed)",
    c.ProposeOffer: "a resolved case takes no new offer",
    c.AuthorizeOffer: "there is no proposed offer waiting for authorisation",
    c.RequestApproval: "only a proposed offer (offer pending) can be sent for approval",
    c.DecideApproval: "the case is not awaiting an approval",
    c.PresentOffer: "only an authorised offer (offer ready) can be made to the customer",
    c.RecordCustomerDecision: "the customer can only answer an authorised offer",
    c.TransferCase: "a resolved case cannot be transferred",
    c.ResolveCase: "the case cannot be resolved now (claim a queued case; decide a pending approval first)",
    c.ReopenCase: "only a resolved case can be reopened",
}


def apply(case: Case, command: object, now: datetime) -> Transition:
    """Return the transition ``command`` makes from the case's state; raises IllegalTransition when refused."""
    handler = TABLE.get((case.state, type(command)))
    if handler is None:
        why = _WHY.get(type(command), "not allowed")
        raise IllegalTransition.of(case.case_id, f"{type(command).__name__} refused in state {case.state.value}: {why}")
    return handler(case, command, now)


def allowed(state: CaseState) -> frozenset[type]:
    """Return the command types the table accepts in ``state``."""
    return frozenset(command for s, command in TABLE if s is state)
