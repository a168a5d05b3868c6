"""The contact log's rules and what a move of the case tells its customer (pure)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.escalation.domain import contacts
from services.escalation.domain.errors import InvalidCommand
from services.escalation.domain.model import CaseState, Channel, ContactKind, ContactOutcome, ProgressStage
from tests.unit.escalation.escalation_builders import NOW, case

S = CaseState


def logged(**changes):
    values = {
        "contact_id": "k-1",
        "kind": ContactKind.CALL,
        "channel": Channel.PHONE,
        "outcome": ContactOutcome.REACHED,
        "note": "",
        "employee_id": "e-1",
        "at": NOW,
    }
    values.update(changes)
    return contacts.contact(case(S.ACKNOWLEDGED), **values)


def fields(error: InvalidCommand) -> dict[str, str]:
    return {v.field: v.description for v in error.violations}


def test_a_call_is_logged_with_who_how_and_how_it_went():
    entry = logged(outcome=ContactOutcome.NO_ANSWER, note="rang twice")
    assert (entry.case_id, entry.customer_id, entry.kind, entry.channel) == (
        "c-1",
        "cu-1",
        ContactKind.CALL,
        Channel.PHONE,
    )
    assert (entry.outcome, entry.note, entry.employee_id, entry.occurred_at) == (
        ContactOutcome.NO_ANSWER,
        "rang twice",
        "e-1",
        NOW,
    )
    assert logged(channel=None).channel is Channel.PHONE  # a call without a channel was by phone


def test_every_bad_field_is_named_at_once_and_nothing_is_logged():
    with pytest.raises(InvalidCommand) as caught:
        logged(kind=None, note="x" * 2_001)
    assert set(fields(caught.value)) == {"kind", "note"}
    assert "2,001" in fields(caught.value)["note"]
    with pytest.raises(InvalidCommand) as message:
        logged(kind=ContactKind.MESSAGE, channel=None)
    assert set(fields(message.value)) == {"channel"}
    with pytest.raises(InvalidCommand) as note:
        logged(kind=ContactKind.NOTE, channel=None, note="  ")
    assert set(fields(note.value)) == {"note"}
    with pytest.raises(InvalidCommand) as report:
        logged(kind=ContactKind.REPORT)  # the system logs a colleague's report when it merges
    assert "recorded by the system" in fields(report.value)["kind"]


def test_a_note_needs_words_but_no_channel():
    entry = logged(kind=ContactKind.NOTE, channel=None, outcome=None, note="prefers calls after 17:00")
    assert (entry.channel, entry.outcome) == (None, None)


@pytest.mark.parametrize(
    ("before", "after", "told"),
    [
        (case(S.OPEN), case(S.ACKNOWLEDGED, acknowledged_at=NOW), ProgressStage.ACKNOWLEDGED),
        # An offer was already pending when the owner apologised: still "we are on it".
        (case(S.OFFER_PENDING), case(S.OFFER_PENDING, acknowledged_at=NOW), ProgressStage.ACKNOWLEDGED),
        (case(S.OFFER_PENDING), case(S.AWAITING_APPROVAL), ProgressStage.AWAITING_APPROVAL),
        (case(S.AWAITING_APPROVAL), case(S.OFFER_READY), ProgressStage.OFFER_READY),
        (case(S.OPEN), case(S.OFFER_READY), ProgressStage.OFFER_READY),
        (case(S.WAITING_ON_CUSTOMER), case(S.RESOLVED), ProgressStage.DONE),
        # No news: the same state, a rejection back to work, an apology after the offer is ready, a transfer.
        (case(S.OFFER_READY), case(S.OFFER_READY), None),
        (
            case(S.AWAITING_APPROVAL, acknowledged_at=NOW),
            case(S.ACKNOWLEDGED, acknowledged_at=NOW),
            None,
        ),
        (case(S.OFFER_READY), case(S.OFFER_READY, acknowledged_at=NOW), None),
        (case(S.OFFER_READY), case(S.WAITING_ON_CUSTOMER), None),
        (case(S.WAITING_ON_CUSTOMER), case(S.OFFER_READY), None),  # accepted: they know
        (case(S.QUEUED), case(S.OPEN), None),
    ],
)
def test_what_a_move_of_the_case_tells_the_customer(before, after, told):
    assert contacts.progress(before, after) is told


def test_a_reopened_case_apologised_for_again_is_acknowledged_news_again():
    reopened = case(S.REOPENED, acknowledged_at=NOW)
    again = case(S.ACKNOWLEDGED, acknowledged_at=NOW + timedelta(days=2))
    assert contacts.progress(reopened, again) is ProgressStage.ACKNOWLEDGED


def test_a_merged_report_is_the_colleagues_contact_with_her_words_cut_to_a_note():
    entry = contacts.reported(
        case(S.ACKNOWLEDGED), contact_id="k-2", employee_id="e-9", description="x" * 3_000, at=NOW
    )
    assert (entry.kind, entry.employee_id, entry.channel, entry.outcome) == (ContactKind.REPORT, "e-9", None, None)
    assert len(entry.note) == contacts.NOTE_MAX and entry.occurred_at == NOW
