"""Intake's gRPC API over the real stack: frontline reports, idempotency, validation, the customer's history."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from recovery.events.v1 import common_pb2, events_pb2
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

from services.common.wire import time_to_proto
from tests.integration.conftest import eventually
from tests.integration.intake.conftest import new_id, now, publish, read_events
from tests.integration.intake.test_intake_consuming import cases_of, failure
from tests.support.running import bearer, channel


def report(customer_id: str, **fields) -> intake_pb2.ReportFailureRequest:
    base = {
        "request_id": new_id("req"),
        "customer_id": customer_id,
        "reference": new_id("booking"),
        "category": common_pb2.CATEGORY_CANCELLATION,
        "occurred_at": time_to_proto(now() - timedelta(hours=3)),
        "description": "flight cancelled, customer stranded overnight",
        "reported_costs": [
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_HOTEL, amount=common_pb2.Money(amount_minor=12900, currency="EUR")
            )
        ],
        "stated_impacts": [common_pb2.IMPACT_TIME_LOST],
        "customer_request": common_pb2.CustomerRequest(
            remedy_kind=common_pb2.REMEDY_KIND_REFUND, text="pay my hotel and give me something for the night"
        ),
        "avoidability": common_pb2.AVOIDABILITY_UNAVOIDABLE,
    }
    return intake_pb2.ReportFailureRequest(**(base | fields))


@pytest.fixture
async def stub(intake):
    async with channel(intake.endpoints.grpc_port) as ch:
        yield intake_pb2_grpc.IntakeServiceStub(ch)


def agent(intake, sub: str = "e-17", team: str = "front-desk"):
    return bearer(intake.settings, sub=sub, role="agent", team=team)


async def test_the_reporting_employee_owns_the_case_and_a_retry_returns_the_same_case(intake, stub):
    customer = new_id("cust")
    request = report(customer)
    first = await stub.ReportFailure(request, metadata=agent(intake))
    again = await stub.ReportFailure(request, metadata=agent(intake))
    assert again == first and not first.merged
    assert first.classification.severity.severity == common_pb2.SEVERITY_MODERATE  # cancellation, 129 EUR
    assert first.classification.outlook.outlook == common_pb2.OUTLOOK_RECOVERABLE
    [opened] = await read_events(
        intake.settings.kafka_bootstrap_servers,
        "recovery.case-opened.v1",
        events_pb2.CaseOpened,
        key=customer,
        count=1,
        settle=1.0,
    )
    assert opened.case_id == first.case_id
    assert (opened.owner_employee_id, opened.owning_team, opened.source) == (
        "e-17",
        "front-desk",
        common_pb2.SOURCE_FRONTLINE,
    )
    assert opened.owner_role == "agent"  # from the token: escalation applies the agent's limits at once
    assert opened.customer_request.text.startswith("pay my hotel")
    assert len(await cases_of(intake, customer)) == 1


async def test_a_reused_request_id_with_other_parameters_is_refused_and_changes_nothing(intake, stub):
    customer = new_id("cust")
    request = report(customer)
    await stub.ReportFailure(request, metadata=agent(intake))
    changed = report(customer, request_id=request.request_id, description="something else")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReportFailure(changed, metadata=agent(intake))
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # The same id from another employee is not their retry either.
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.ReportFailure(request, metadata=agent(intake, sub="e-99"))
    assert other.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(await cases_of(intake, customer)) == 1


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    found = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found |= {v.field: v.description for v in bad.field_violations}
    return found


async def test_a_bad_report_is_refused_field_by_field_and_nothing_is_written(intake, stub):
    customer = new_id("cust")
    bad = report(
        customer,
        category=common_pb2.CATEGORY_UNSPECIFIED,
        occurred_at=time_to_proto(now() + timedelta(days=2)),
        reported_costs=[
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_TAXI, amount=common_pb2.Money(amount_minor=-1, currency="EUR")
            ),
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_TAXI, amount=common_pb2.Money(amount_minor=10, currency="eur")
            ),
        ],
        reference="r" * 200,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReportFailure(bad, metadata=agent(intake))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = violations(refused.value)
    assert set(fields) == {
        "category",
        "occurred_at",
        "reported_costs[0].amount.amount_minor",
        "reported_costs[1].amount.currency",
        "reference",
    }
    assert "future" in fields["occurred_at"]
    with pytest.raises(grpc.aio.AioRpcError) as no_id:
        await stub.ReportFailure(report(customer, request_id=""), metadata=agent(intake))
    assert violations(no_id.value).keys() == {"request_id"}
    assert await cases_of(intake, customer) == []


def hotel(receipt_reference: str) -> common_pb2.CostItem:
    return common_pb2.CostItem(
        kind=common_pb2.COST_KIND_HOTEL,
        amount=common_pb2.Money(amount_minor=12900, currency="EUR"),
        has_receipt=True,
        receipt_reference=receipt_reference,
    )


async def test_a_receipt_reference_reaches_the_case_and_a_bad_one_is_refused_naming_it(intake, stub):
    customer = new_id("cust")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReportFailure(
            report(customer, reported_costs=[hotel("HTL-1"), hotel("HTL-\n2")]), metadata=agent(intake)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = violations(refused.value)
    assert set(fields) == {"reported_costs[1].receipt_reference"}
    assert "printable" in fields["reported_costs[1].receipt_reference"]
    assert "HTL-\\n2" in fields["reported_costs[1].receipt_reference"]

    accepted = await stub.ReportFailure(report(customer, reported_costs=[hotel("HTL-1")]), metadata=agent(intake))
    [opened] = await read_events(
        intake.settings.kafka_bootstrap_servers, "recovery.case-opened.v1", events_pb2.CaseOpened, key=customer, count=1
    )
    assert opened.case_id == accepted.case_id
    assert [c.receipt_reference for c in opened.reported_costs] == ["HTL-1"]


async def test_calls_without_a_valid_token_or_with_a_role_not_allowed_are_refused(intake, stub):
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub.ReportFailure(report(new_id("cust")))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as robot:
        await stub.GetCustomerHistory(
            intake_pb2.GetCustomerHistoryRequest(customer_id="c"),
            metadata=bearer(intake.settings, sub="svc", role="crawler"),
        )
    assert robot.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_history_follows_the_customer_across_cases(intake, stub, publisher):
    customer = new_id("cust")
    first = await stub.ReportFailure(report(customer), metadata=agent(intake))
    # What escalation and the survey system later say about that first case:
    await publish(
        publisher,
        "recovery.offer-authorized.v1",
        events_pb2.OfferAuthorized(
            customer_id=customer,
            case_id=first.case_id,
            offer_id=new_id("offer"),
            offer_version=1,
            amount=common_pb2.Money(amount_minor=17900, currency="EUR"),
            authorized_at=time_to_proto(now()),
        ),
        source="escalation",
    )
    await publish(
        publisher,
        "recovery.case-resolved.v1",
        events_pb2.CaseResolved(customer_id=customer, case_id=first.case_id, resolved_at=time_to_proto(now())),
        source="escalation",
    )
    await publish(
        publisher,
        "recovery.feedback-received.v1",
        events_pb2.FeedbackReceived(
            customer_id=customer,
            case_id=first.case_id,
            feedback_id=new_id("fb"),
            source=common_pb2.SOURCE_SURVEY,
            score=9,
            satisfied=True,
            received_at=time_to_proto(now()),
        ),
        source="survey",
    )

    async def recorded():
        view = await stub.GetCustomerHistory(
            intake_pb2.GetCustomerHistoryRequest(customer_id=customer), metadata=agent(intake)
        )
        case = view.cases[0]
        done = (
            case.status == intake_pb2.CASE_STATUS_RESOLVED
            and case.compensation_received
            and view.summary.HasField("last_satisfaction")
        )
        return view if done else None

    view = await eventually(recorded, timeout=30)
    assert view.cases[0].compensation_received[0].amount_minor == 17900
    assert view.cases[0].satisfaction.score == 9
    assert [f.case_id for f in view.failures] == [first.case_id]

    # A second failure, on another booking: a repeat failure, so recovery is no longer a sure win.
    second = await stub.ReportFailure(
        report(customer, category=common_pb2.CATEGORY_LATE_DELIVERY, reported_costs=[], stated_impacts=[]),
        metadata=agent(intake),
    )
    assert second.case_id != first.case_id and not second.merged
    history = second.history
    assert history.prior_failure_count == 1 and history.prior_case_count == 1
    assert [(m.amount_minor, m.currency) for m in history.compensation_received] == [(17900, "EUR")]
    assert history.last_satisfaction.satisfied and history.last_satisfaction.score == 9
    assert second.classification.outlook.outlook == common_pb2.OUTLOOK_AT_RISK
    assert [r.code for r in second.classification.outlook.reasons] == ["repeat_failure"]
    view = await stub.GetCustomerHistory(
        intake_pb2.GetCustomerHistoryRequest(customer_id=customer, limit=1), metadata=agent(intake)
    )
    assert [c.case_id for c in view.cases] == [second.case_id]  # newest first, limited


async def test_a_failed_recovery_reported_by_followup_joins_its_case_and_counts_as_a_repeat(intake, stub, publisher):
    customer = new_id("cust")
    first = await stub.ReportFailure(report(customer), metadata=agent(intake))
    failed = failure(
        customer,
        source=common_pb2.SOURCE_FOLLOWUP,
        related_case_id=first.case_id,
        reference="",
        category=common_pb2.CATEGORY_SERVICE_QUALITY,
        description="customer not satisfied with the recovery",
    )
    await publish(publisher, "recovery.failure-reported.v1", failed, source="followup")
    [amended] = await read_events(
        intake.settings.kafka_bootstrap_servers,
        "recovery.case-amended.v1",
        events_pb2.CaseAmended,
        key=customer,
        count=1,
    )
    assert amended.case_id == first.case_id and amended.revision == 2
    assert "repeat_failure" in [r.code for r in amended.classification.outlook.reasons]


async def test_history_requests_are_validated(intake, stub):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetCustomerHistory(intake_pb2.GetCustomerHistoryRequest(limit=-1), metadata=agent(intake))
    assert violations(refused.value).keys() == {"customer_id", "limit"}


async def test_reports_arriving_together_each_get_their_own_answer_and_owner(intake, stub):
    """Calls in flight together are accepted as one group: each caller still owns their own case, a refused
    report fails alone, a retry sent beside its first call gets the same answer, a reused id is refused."""
    customers = [new_id("cust") for _ in range(12)]
    requests = [report(customer) for customer in customers]
    bad = report(new_id("cust"), category=common_pb2.CATEGORY_UNSPECIFIED)
    reused = report(customers[0], request_id=requests[0].request_id, description="something else")
    calls = [stub.ReportFailure(r, metadata=agent(intake, sub=f"e-{i}")) for i, r in enumerate(requests)]
    calls += [
        stub.ReportFailure(requests[1], metadata=agent(intake, sub="e-1")),  # a retry beside its first call
        stub.ReportFailure(bad, metadata=agent(intake)),
        stub.ReportFailure(reused, metadata=agent(intake, sub="e-0")),
    ]
    *answers, retry, refused, reused_answer = await asyncio.gather(*calls, return_exceptions=True)
    # One request id, two parameter sets in flight together: whichever the server took first is accepted, the
    # other refused, never both.
    pair = [answers[0], reused_answer]
    [accepted] = [a for a in pair if isinstance(a, intake_pb2.ReportFailureResponse)]
    [conflict] = [a for a in pair if not isinstance(a, intake_pb2.ReportFailureResponse)]
    assert conflict.code() == grpc.StatusCode.ALREADY_EXISTS
    answers[0] = accepted
    assert all(isinstance(a, intake_pb2.ReportFailureResponse) for a in answers), answers
    assert len({a.case_id for a in answers}) == len(customers) and retry == answers[1]
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and "category" in violations(refused)
    for i, customer in enumerate(customers):
        [case] = await cases_of(intake, customer)
        assert (case["case_id"], case["owner_employee_id"]) == (answers[i].case_id, f"e-{i}")
