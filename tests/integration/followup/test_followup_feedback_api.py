"""FollowupService over the real stack, and survey answers from Kafka: a dissatisfied answer asks escalation to
reopen the case and reports the failed recovery, once; staff list and cancel follow-ups under role rules."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from recovery.events.v1 import common_pb2, events_pb2
from recovery.followup.v1 import followup_pb2, followup_pb2_grpc

from services.common.wire import time_to_proto
from tests.integration.conftest import eventually
from tests.integration.followup.conftest import (
    DUE,
    FAILURES,
    FEEDBACK,
    REOPEN_REQUESTED,
    RESOLVED,
    header,
    metric,
    new_id,
    now,
    publish,
    read_all,
    read_events,
    resolved,
    rows,
)
from tests.support.running import bearer, channel

PENDING = followup_pb2.FOLLOWUP_STATUS_PENDING


@pytest.fixture
async def stub(followup):
    async with channel(followup.endpoints.grpc_port) as ch:
        yield followup_pb2_grpc.FollowupServiceStub(ch)


def staff(followup, *, sub: str = "emp-owner", role: str = "agent"):
    return bearer(followup.settings, sub=sub, role=role, team="care")


async def resolved_case(followup, publisher, **fields) -> events_pb2.CaseResolved:
    event = resolved(new_id("cust"), **fields)
    await publish(publisher, RESOLVED, event)
    await eventually(
        lambda: rows(followup.settings, "SELECT 1 FROM {schema}.followups WHERE case_id = $1", event.case_id)
    )
    return event


def violations(error: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(error)
    found = set()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found |= {v.field for v in bad.field_violations}
    return found


async def test_dissatisfied_feedback_requests_a_reopen_and_reports_the_failed_recovery_once(followup, publisher, stub):
    event = await resolved_case(followup, publisher, severity=common_pb2.SEVERITY_MAJOR)
    customer = event.customer_id
    before = metric(followup, "recovery_followup_recoveries_total", severity="major", outcome="failed")
    request = followup_pb2.RecordFeedbackRequest(
        request_id=new_id("req"), case_id=event.case_id, score=2, satisfied=False, comment="the parcel is still lost"
    )
    answer = await stub.RecordFeedback(request, metadata=staff(followup, sub="emp-desk"))
    assert answer.reopen_requested and answer.feedback_id
    assert await stub.RecordFeedback(request, metadata=staff(followup, sub="emp-desk")) == answer  # a retry
    bootstrap = followup.settings.kafka_bootstrap_servers

    [(record, reopen)] = await read_events(
        bootstrap, REOPEN_REQUESTED, events_pb2.CaseReopenRequested, keys=customer, count=1, settle=3.0
    )
    assert reopen.case_id == event.case_id and reopen.comment == "the parcel is still lost"
    assert reopen.feedback.satisfied is False and reopen.feedback.score == 2
    assert header(record, "ce_source") == "followup"
    [(_, failure)] = await read_events(bootstrap, FAILURES, events_pb2.FailureReported, keys=customer, count=1)
    assert failure.source == common_pb2.SOURCE_FOLLOWUP and failure.related_case_id == event.case_id
    assert failure.source_event_id == f"feedback:frontline:{answer.feedback_id}"
    assert failure.category == common_pb2.CATEGORY_LATE_DELIVERY and failure.reported_by_employee_id == "emp-desk"
    # Republished for intake; followup reads its own record back and does not take it as a second answer.
    [(_, republished)] = await read_events(bootstrap, FEEDBACK, events_pb2.FeedbackReceived, keys=customer, count=1)
    assert republished.feedback_id == answer.feedback_id and republished.source == common_pb2.SOURCE_FRONTLINE
    stored = await rows(followup.settings, "SELECT * FROM {schema}.feedback WHERE case_id = $1", event.case_id)
    assert len(stored) == 1 and stored[0]["reopen_requested"]
    assert metric(followup, "recovery_followup_recoveries_total", severity="major", outcome="failed") == before + 1


async def test_a_survey_answer_from_kafka_counts_once_and_marks_its_follow_up_answered(followup, publisher, stub):
    event = await resolved_case(followup, publisher)
    customer = event.customer_id
    listed = await stub.ListFollowups(
        followup_pb2.ListFollowupsRequest(case_id=event.case_id), metadata=staff(followup)
    )
    check = next(f for f in listed.followups if f.kind == common_pb2.FOLLOWUP_KIND_SATISFACTION_CHECK)
    survey = events_pb2.FeedbackReceived(
        customer_id=customer,
        case_id=event.case_id,
        followup_id=check.followup_id,
        feedback_id=new_id("survey"),
        source=common_pb2.SOURCE_SURVEY,
        score=3,
        satisfied=False,
        received_at=time_to_proto(now()),
    )
    await publish(publisher, FEEDBACK, survey, source="survey-tool")
    await publish(publisher, FEEDBACK, survey, source="survey-tool")  # the survey tool sent it twice
    await read_events(
        followup.settings.kafka_bootstrap_servers,
        REOPEN_REQUESTED,
        events_pb2.CaseReopenRequested,
        keys=customer,
        count=1,
        settle=3.0,
    )
    got = await read_all(
        followup.settings.kafka_bootstrap_servers, REOPEN_REQUESTED, events_pb2.CaseReopenRequested, keys=customer
    )
    assert len(got) == 1 and got[0][1].followup_id == check.followup_id
    [(_, failure)] = await read_events(
        followup.settings.kafka_bootstrap_servers, FAILURES, events_pb2.FailureReported, keys=customer, count=1
    )
    assert failure.source_event_id == f"feedback:survey:{survey.feedback_id}" and failure.survey_score == 3
    answered = await stub.ListFollowups(
        followup_pb2.ListFollowupsRequest(case_id=event.case_id, statuses=[followup_pb2.FOLLOWUP_STATUS_ANSWERED]),
        metadata=staff(followup),
    )
    assert [f.followup_id for f in answered.followups] == [check.followup_id]
    # Nothing about a silent answer ("satisfied" unset) is read as "no".
    silent = events_pb2.FeedbackReceived(
        customer_id=customer, case_id=event.case_id, feedback_id=new_id("survey"), source=common_pb2.SOURCE_SURVEY
    )
    await publish(publisher, FEEDBACK, silent, source="survey-tool")
    await eventually(
        lambda: rows(followup.settings, "SELECT 1 FROM {schema}.feedback WHERE feedback_id = $1", silent.feedback_id)
    )
    got = await read_all(
        followup.settings.kafka_bootstrap_servers, REOPEN_REQUESTED, events_pb2.CaseReopenRequested, keys=customer
    )
    assert len(got) == 1


async def test_a_score_alone_is_judged_by_the_policys_threshold(followup, publisher):
    bootstrap = followup.settings.kafka_bootstrap_servers
    low, high = await resolved_case(followup, publisher), await resolved_case(followup, publisher)
    for event, score in ((low, 3), (high, 8)):  # the policy's negative_below is 7; neither says satisfied or not
        answer = events_pb2.FeedbackReceived(
            customer_id=event.customer_id,
            case_id=event.case_id,
            feedback_id=new_id("survey"),
            source=common_pb2.SOURCE_SURVEY,
            score=score,
            received_at=time_to_proto(now()),
        )
        await publish(publisher, FEEDBACK, answer, source="survey-tool")
    [(_, reopen)] = await read_events(
        bootstrap, REOPEN_REQUESTED, events_pb2.CaseReopenRequested, keys=low.customer_id, count=1
    )
    assert reopen.case_id == low.case_id and reopen.feedback.score == 3
    stored = await eventually(
        lambda: rows(followup.settings, "SELECT satisfied FROM {schema}.feedback WHERE case_id = $1", high.case_id)
    )
    assert [r["satisfied"] for r in stored] == [True]
    assert await read_all(bootstrap, REOPEN_REQUESTED, events_pb2.CaseReopenRequested, keys=high.customer_id) == []


async def test_feedback_is_validated_and_needs_a_known_case(followup, publisher, stub):
    event = await resolved_case(followup, publisher)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordFeedback(
            followup_pb2.RecordFeedbackRequest(request_id=new_id("req"), case_id=event.case_id, score=11),
            metadata=staff(followup),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == {"satisfied", "score"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordFeedback(
            followup_pb2.RecordFeedbackRequest(request_id=new_id("req"), case_id=new_id("case"), satisfied=True),
            metadata=staff(followup),
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RecordFeedback(
            followup_pb2.RecordFeedbackRequest(request_id=new_id("req"), case_id=event.case_id, satisfied=True),
            metadata=bearer(followup.settings, sub="c-1", role="customer"),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    satisfied = await stub.RecordFeedback(
        followup_pb2.RecordFeedbackRequest(request_id=new_id("req"), case_id=event.case_id, satisfied=True, score=9),
        metadata=staff(followup),
    )
    assert not satisfied.reopen_requested


async def test_list_pages_through_a_customer_follow_ups_soonest_first(followup, publisher, stub):
    customer = new_id("cust")
    for _ in range(3):  # three major cases: three follow-ups each
        event = resolved(customer, severity=common_pb2.SEVERITY_MAJOR)
        await publish(publisher, RESOLVED, event)
    await eventually(
        lambda: rows(followup.settings, "SELECT 1 FROM {schema}.followups WHERE customer_id = $1 OFFSET 8", customer)
    )
    seen, token = [], ""
    while True:
        page = await stub.ListFollowups(
            followup_pb2.ListFollowupsRequest(customer_id=customer, page_size=4, page_token=token),
            metadata=staff(followup, role="director"),
        )
        seen.extend(page.followups)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 9 and len({f.followup_id for f in seen}) == 9
    dues = [(f.due_at.ToDatetime(), f.followup_id) for f in seen]
    assert dues == sorted(dues)
    assert all(f.original_due_at.ToDatetime() <= f.due_at.ToDatetime() for f in seen)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListFollowups(followup_pb2.ListFollowupsRequest(), metadata=staff(followup))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_needs_a_reason_and_the_owner_or_a_lead_and_is_idempotent(followup, publisher, stub):
    event = await resolved_case(followup, publisher)
    listed = await stub.ListFollowups(
        followup_pb2.ListFollowupsRequest(case_id=event.case_id, statuses=[PENDING]), metadata=staff(followup)
    )
    check_in = next(f for f in listed.followups if f.kind == common_pb2.FOLLOWUP_KIND_CHECK_IN)

    def cancel(reason: str = "customer asked not to be contacted", request_id: str | None = None):
        return followup_pb2.CancelFollowupRequest(
            request_id=request_id or new_id("req"), followup_id=check_in.followup_id, reason=reason
        )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelFollowup(cancel(reason=" "), metadata=staff(followup))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(caught.value) == {"reason"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelFollowup(cancel(), metadata=staff(followup, sub="emp-someone-else"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    request = cancel()
    done = await stub.CancelFollowup(request, metadata=staff(followup))
    assert done.followup.status == followup_pb2.FOLLOWUP_STATUS_CANCELLED
    assert done.followup.cancel_reason == "customer asked not to be contacted" and done.followup.HasField(
        "cancelled_at"
    )
    assert await stub.CancelFollowup(request, metadata=staff(followup)) == done  # a retry
    again = await stub.CancelFollowup(cancel(), metadata=staff(followup, sub="lead-1", role="team_lead"))
    assert again.followup.cancelled_at == done.followup.cancelled_at  # already cancelled: unchanged
    # A follow-up already sent can no longer be cancelled.
    check = next(f for f in listed.followups if f.kind == common_pb2.FOLLOWUP_KIND_SATISFACTION_CHECK)

    async def sent():
        found = await rows(
            followup.settings, "SELECT status FROM {schema}.followups WHERE followup_id = $1", check.followup_id
        )
        return found[0]["status"] == "sent"

    await eventually(sent)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelFollowup(
            followup_pb2.CancelFollowupRequest(request_id=new_id("req"), followup_id=check.followup_id, reason="late"),
            metadata=staff(followup, role="manager"),
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # "sent" is committed with the outbox row; the relay puts it on the wire a moment later.
    got = await read_events(
        followup.settings.kafka_bootstrap_servers,
        DUE,
        events_pb2.FollowupDue,
        keys=event.customer_id,
        count=1,
        settle=1.0,
    )
    assert [m.kind for _, m in got] == [common_pb2.FOLLOWUP_KIND_SATISFACTION_CHECK]
    assert metric(followup, "recovery_followup_cancelled_total", kind="check_in", reason="staff") >= 1
    assert metric(followup, "recovery_followup_scheduled_total", kind="check_in") >= 1
