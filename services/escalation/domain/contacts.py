"""The contact log and the customer's progress updates: what a contact must say, and what a move of the case
tells the customer (pure)."""

from __future__ import annotations

from datetime import datetime

from services.escalation.domain.errors import FieldViolation, InvalidCommand
from services.escalation.domain.model import Case, CaseState, Channel, Contact, ContactKind, ContactOutcome
from services.escalation.domain.model import ProgressStage as P

NOTE_MAX = 2_000

# The kinds staff record by hand; a report is recorded by the system when a colleague's report merges.
RECORDABLE = frozenset(ContactKind) - {ContactKind.REPORT}


def contact(
    case: Case,
    *,
    contact_id: str,
    kind: ContactKind | None,
    channel: Channel | None,
    outcome: ContactOutcome | None,
    note: str,
    employee_id: str,
    at: datetime,
) -> Contact:
    """Return the contact-log entry staff recorded; raises InvalidCommand naming each bad field and value."""
    problems = []
    if kind is None:
        problems.append(FieldViolation("kind", f"required: one of {', '.join(k.value for k in sorted_kinds())}"))
    elif kind not in RECORDABLE:
        problems.append(FieldViolation("kind", f"{kind.value} is recorded by the system when a report merges"))
    if kind is ContactKind.MESSAGE and channel is None:
        problems.append(FieldViolation("channel", "required for a message: how it reached the customer"))
    if kind is ContactKind.NOTE and not note.strip():
        problems.append(FieldViolation("note", "required for a note"))
    if len(note) > NOTE_MAX:
        problems.append(FieldViolation("note", f"{len(note):,} characters; at most {NOTE_MAX:,}"))
    if problems or kind is None:  # a missing kind is among the problems
        raise InvalidCommand.of(*problems)
    if kind is ContactKind.CALL and channel is None:
        channel = Channel.PHONE
    return Contact(
        contact_id=contact_id,
        case_id=case.case_id,
        customer_id=case.customer_id,
        kind=kind,
        channel=channel,
        outcome=outcome,
        note=note,
        employee_id=employee_id,
        occurred_at=at,
    )


def reported(case: Case, *, contact_id: str, employee_id: str, description: str, at: datetime) -> Contact:
    """Return the contact-log entry of a colleague's report that merged into the case: she heard from the customer
    (the report's description, cut to a note's length)."""
    return Contact(
        contact_id=contact_id,
        case_id=case.case_id,
        customer_id=case.customer_id,
        kind=ContactKind.REPORT,
        channel=None,
        outcome=None,
        note=description[:NOTE_MAX],
        employee_id=employee_id,
        occurred_at=at,
    )


def sorted_kinds() -> list[ContactKind]:
    """Return the kinds staff may record, in the contract's order."""
    return [k for k in ContactKind if k in RECORDABLE]


# What the customer is told when a case arrives in a state (a state not listed tells them nothing new).
_STAGES = {
    CaseState.AWAITING_APPROVAL: P.AWAITING_APPROVAL,
    CaseState.OFFER_READY: P.OFFER_READY,
    CaseState.RESOLVED: P.DONE,
}


def progress(before: Case | None, after: Case) -> P | None:
    """Return the stage the customer is told of when the case moves from ``before`` to ``after``, or None.

    Acknowledged is told once, when someone first apologises, and only while no offer is ready (after "your
    offer is ready" it would be a step back); the other stages each time the case arrives in their state (a
    counter-offer made ready again is news too). Staying in a state is no news, nor is the offer being ready
    again when the customer accepts it.
    """
    apologised = after.acknowledged_at is not None and (
        before is None or before.acknowledged_at != after.acknowledged_at
    )
    if apologised and after.state in (CaseState.ACKNOWLEDGED, CaseState.OFFER_PENDING):
        return P.ACKNOWLEDGED
    if before is not None and before.state is after.state:
        return None
    if before is not None and before.state is CaseState.WAITING_ON_CUSTOMER and after.state is CaseState.OFFER_READY:
        return None  # the customer accepted the offer they were given: they know it is ready
    return _STAGES.get(after.state)
