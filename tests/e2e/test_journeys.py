"""The journeys of the product through the running system, driven only from outside.

Internal systems publish failures (CloudEvents, JSON and protobuf); an agent, a team lead and a manager
act through gRPC with their own tokens; the output topics are read as a notification system reads them.
Follow-up delays are seconds and moderate recoverable cases must be acknowledged within 15 s (conftest).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from recovery.escalation.v1 import escalation_pb2 as cases
from recovery.events.v1 import common_pb2 as common
from recovery.events.v1 import events_pb2 as events
from recovery.followup.v1 import followup_pb2
from recovery.intake.v1 import intake_pb2

from services.common import cloudevents
from services.common.topics import CATALOGUE
from tests.e2e.conftest import ACK_DEADLINE_SECONDS
from tests.support.frontline import (
    AGENT,
    LEAD,
    LOGISTICS_AGENT,
    Employee,
    accept_and_resolve,
    ago,
    authorized,
    eur,
    offered,
    report,
    resolve,
    scheduled,
    system_failure,
)
from tests.support.outside import DEAD_LETTERS, for_customer, new_id, not_progress, of_case

pytestmark = pytest.mark.e2e


def kinds(followups: list[events.FollowupDue]) -> list[int]:
    return sorted(f.kind for f in followups)


async def test_failures_from_a_system_and_from_the_frontline_become_cases(outside):
    customer = new_id("cust")
    detected = system_failure(customer, category=common.CATEGORY_LATE_DELIVERY)
    await outside.publish(
        "recovery.failure-reported.v1", detected, source="delivery-tracking", content_type=cloudevents.JSON
    )
    await outside.events("recovery.case-opened.v1", customer)  # a case before the customer even calls
    reply = await report(
        outside, AGENT, customer, category=common.CATEGORY_BILLING_ERROR, description="charged twice for one order"
    )
    opened = await outside.events("recovery.case-opened.v1", customer, count=2)
    by_source = {case.source: case for case in opened}
    assert by_source[common.SOURCE_DELIVERY_TRACKING].owner_employee_id == ""
    frontline = by_source[common.SOURCE_FRONTLINE]
    assert (frontline.case_id, frontline.owner_employee_id, frontline.owning_team) == (
        reply.case_id,
        AGENT.sub,
        AGENT.team,
    )
    assert frontline.history.prior_failure_count == 1  # the system-detected failure came first


async def test_1_a_small_system_detected_failure_is_put_right_by_the_system(outside):
    customer = new_id("cust")
    await outside.publish("recovery.failure-reported.v1", system_failure(customer), source="delivery-tracking")

    (opened,) = await outside.events("recovery.case-opened.v1", customer)
    assert opened.classification.severity.severity == common.SEVERITY_MINOR
    assert opened.classification.outlook.outlook == common.OUTLOOK_RECOVERABLE
    (authorized,) = await outside.events("recovery.offer-authorized.v1", customer)
    assert authorized.tier == common.AUTHORIZATION_TIER_SYSTEM
    assert authorized.authorized_by.kind == common.ACTOR_KIND_SYSTEM
    (proposed,) = await outside.events("recovery.offer-proposed.v1", customer)
    assert authorized.offer_id == proposed.offer_id and authorized.amount == proposed.total
    assert 0 < proposed.total.amount_minor <= 3_000  # within the automation limit

    # The case waits in the logistics queue, already put right; an agent takes it and closes it.
    queued = await outside.case(opened.case_id, LOGISTICS_AGENT, lambda c: c.current_offer.status == 3)
    assert queued.state == cases.CASE_STATE_QUEUED
    await outside.cases().ClaimCase(
        cases.ClaimCaseRequest(request_id=new_id("req"), case_id=opened.case_id),
        metadata=outside.as_(LOGISTICS_AGENT),
        timeout=30,
    )
    resolved = await resolve(outside, opened.case_id, LOGISTICS_AGENT)
    assert resolved.state == cases.CASE_STATE_RESOLVED

    due = await outside.followups(customer)
    assert due[0].kind == common.FOLLOWUP_KIND_SATISFACTION_CHECK
    (resolved_event,) = await outside.events("recovery.case-resolved.v1", customer)
    assert due[0].due_at.ToDatetime() >= resolved_event.resolved_at.ToDatetime() + timedelta(seconds=3)


async def test_2_the_frontline_owner_authorises_within_their_own_limit(outside):
    customer = new_id("cust")
    reply = await report(
        outside,
        AGENT,
        customer,
        category=common.CATEGORY_BILLING_ERROR,
        description="charged twice; took a taxi to the branch to sort it out",
        reported_costs=[common.CostItem(kind=common.COST_KIND_TAXI, amount=eur(1_500), has_receipt=True)],
        customer_request=common.CustomerRequest(
            remedy_kind=common.REMEDY_KIND_ACCOUNT_CREDIT, amount=eur(1_000), text="a credit for the trouble"
        ),
    )
    stub, meta = outside.cases(), outside.as_(AGENT)
    await outside.case(reply.case_id, AGENT)
    await stub.AcknowledgeCase(
        cases.AcknowledgeCaseRequest(request_id=new_id("req"), case_id=reply.case_id, note="sorry, we will fix it"),
        metadata=meta,
        timeout=30,
    )
    # Nobody calls AuthorizeOffer: within the agent's limits the offer is authorised by her authority at once.
    case = await authorized(outside, reply.case_id, AGENT)
    lines = {line.kind for line in case.current_offer.line_items}
    assert common.REMEDY_KIND_REIMBURSEMENT in lines and common.REMEDY_KIND_ACCOUNT_CREDIT in lines
    assert case.current_offer.request_outcome == common.REQUEST_OUTCOME_GRANTED
    assert (case.state, case.current_offer.tier) == (cases.CASE_STATE_OFFER_READY, common.AUTHORIZATION_TIER_OWNER)
    (event,) = await outside.events("recovery.offer-authorized.v1", customer)
    assert (event.tier, event.authorized_by.employee_id) == (common.AUTHORIZATION_TIER_OWNER, AGENT.sub)
    assert event.limits.role == AGENT.role
    assert not outside.now_seen("recovery.approval-requested.v1", for_customer(customer))  # nobody else asked

    resolved = await accept_and_resolve(outside, case, AGENT)
    assert (resolved.state, resolved.owner_employee_id) == (cases.CASE_STATE_RESOLVED, AGENT.sub)
    due = await outside.followups(customer, count=2)
    assert kinds(due) == [common.FOLLOWUP_KIND_SATISFACTION_CHECK, common.FOLLOWUP_KIND_CHECK_IN]
    assert {f.channel for f in due} == {common.CHANNEL_EMAIL}


async def test_3_a_big_avoidable_repeat_failure_goes_to_the_right_tier_and_the_owner_stays(outside):
    customer = new_id("cust")
    await outside.publish("recovery.failure-reported.v1", system_failure(customer), source="delivery-tracking")
    await outside.events("recovery.case-opened.v1", customer)  # the earlier failure: this one is a repeat
    reply = await report(
        outside,
        AGENT,
        customer,
        category=common.CATEGORY_CANCELLATION,
        description="our overbooking cancelled the trip to the customer's sister's wedding",
        avoidability=common.AVOIDABILITY_AVOIDABLE,
        stated_impacts=[common.IMPACT_MISSED_IMPORTANT_EVENT],
        order_value=eur(20_000),
        reported_costs=[common.CostItem(kind=common.COST_KIND_HOTEL, amount=eur(9_000), has_receipt=True)],
    )
    assert reply.classification.outlook.outlook == common.OUTLOOK_AT_RISK
    case = await offered(outside, reply.case_id, AGENT)
    assert any(line.kind == common.REMEDY_KIND_STATUTORY_COMPENSATION for line in case.current_offer.line_items)
    stub = outside.cases()

    with pytest.raises(grpc.aio.AioRpcError) as over_limit:
        await stub.AuthorizeOffer(
            cases.AuthorizeOfferRequest(
                request_id=new_id("req"), case_id=reply.case_id, offer_id=case.current_offer.offer_id
            ),
            metadata=outside.as_(AGENT),
            timeout=30,
        )
    assert over_limit.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    # The UI asks what the agent may grant on this case ("you can grant up to ...") before sending the rest up.
    room = await stub.GetMyAuthority(
        cases.GetMyAuthorityRequest(case_id=reply.case_id), metadata=outside.as_(AGENT), timeout=30
    )
    assert room.per_case.currency == case.current_offer.total.currency
    assert 0 < room.remaining_for_case.amount_minor <= room.per_case.amount_minor

    requested = await stub.RequestApproval(
        cases.RequestApprovalRequest(
            request_id=new_id("req"), case_id=reply.case_id, offer_id=case.current_offer.offer_id, note="wedding"
        ),
        metadata=outside.as_(AGENT),
        timeout=30,
    )
    approval = requested.approval
    # Frontline first: what the agent's own authority covers is granted at once; only the rest goes up.
    # Statutory compensation is beyond agents and senior agents; 500 EUR per case covers it: the team lead.
    assert approval.approver_role == "team_lead" and approval.amount.amount_minor <= 50_000
    assert approval.owner_share.amount_minor == room.remaining_for_case.amount_minor
    assert approval.owner_share.amount_minor + approval.amount.amount_minor == case.current_offer.total.amount_minor
    (share,) = await outside.wait("recovery.offer-authorized.v1", of_case(reply.case_id))
    assert (share.message.part, share.message.authorized_by.employee_id) == (
        common.AUTHORIZATION_PART_OWNER_SHARE,
        AGENT.sub,
    )
    assert share.message.amount == approval.owner_share

    with pytest.raises(grpc.aio.AioRpcError) as self_approval:
        await stub.DecideApproval(
            cases.DecideApprovalRequest(
                request_id=new_id("req"),
                approval_id=approval.approval_id,
                decision=common.APPROVAL_DECISION_APPROVE,
                reason="looks fine to me",
            ),
            metadata=outside.as_(AGENT),
            timeout=30,
        )
    assert self_approval.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "own request" in self_approval.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as not_routed:  # a senior agent is below the routed tier
        await stub.DecideApproval(
            cases.DecideApprovalRequest(
                request_id=new_id("req"),
                approval_id=approval.approval_id,
                decision=common.APPROVAL_DECISION_APPROVE,
                reason="I will take it",
            ),
            metadata=outside.as_(Employee("e2e-senior-saule", "senior_agent", AGENT.team)),
            timeout=30,
        )
    assert not_routed.value.code() is grpc.StatusCode.PERMISSION_DENIED

    decided = await stub.DecideApproval(
        cases.DecideApprovalRequest(
            request_id=new_id("req"),
            approval_id=approval.approval_id,
            decision=common.APPROVAL_DECISION_APPROVE,
            reason="avoidable, repeat, a family event: we pay what the law says and more",
        ),
        metadata=outside.as_(LEAD),
        timeout=30,
    )
    assert decided.approval.decided_by.employee_id == LEAD.sub
    (_, seen) = await outside.wait("recovery.offer-authorized.v1", of_case(reply.case_id), count=2)
    assert (seen.message.tier, seen.message.part, seen.message.authorized_by.employee_id) == (
        common.AUTHORIZATION_TIER_APPROVER,
        common.AUTHORIZATION_PART_REMAINDER,
        LEAD.sub,
    )
    assert seen.message.amount == approval.amount  # the approver's usage is booked for the remainder only

    ready = await outside.case(reply.case_id, AGENT, lambda c: c.state == cases.CASE_STATE_OFFER_READY)
    assert ready.owner_employee_id == AGENT.sub  # the approval changed nothing about who the customer talks to
    resolved = await accept_and_resolve(outside, ready, AGENT)
    assert (resolved.state, resolved.owner_employee_id) == (cases.CASE_STATE_RESOLVED, AGENT.sub)
    # A major, at-risk case gets a personal note from its owner (a task for staff: never held back).
    note = await outside.wait("recovery.followup-due.v1", not_progress(of_case(reply.case_id)))
    assert [s.message.kind for s in note] == [common.FOLLOWUP_KIND_PERSONAL_NOTE]
    # The customer's earlier case is still open: no "are you satisfied?" while we are still failing them.
    listed = await outside.followup().ListFollowups(
        followup_pb2.ListFollowupsRequest(case_id=reply.case_id), metadata=outside.as_(AGENT), timeout=30
    )
    pending = [f for f in listed.followups if f.status == followup_pb2.FOLLOWUP_STATUS_PENDING]
    # (A progress update, "it is done", is about this case and is not held; it goes out in seconds.)
    held = {f.kind: f for f in pending if f.kind != common.FOLLOWUP_KIND_PROGRESS_UPDATE}
    assert set(held) == {common.FOLLOWUP_KIND_SATISFACTION_CHECK, common.FOLLOWUP_KIND_CHECK_IN}
    for followup in held.values():
        assert followup.due_at.ToDatetime() - followup.original_due_at.ToDatetime() > timedelta(days=6)


async def test_3b_customers_in_gbp_and_pln_are_put_right_in_their_own_currency(outside):
    # A UK customer's late parcel, seen by delivery tracking: the system authorises it within the automation
    # limit, which is in EUR and holds in GBP at the policy's rate.
    uk = new_id("cust")
    gbp = common.Money(amount_minor=3_000, currency="GBP")
    await outside.publish("recovery.failure-reported.v1", system_failure(uk, order_value=gbp), source="tracking")
    (proposed,) = await outside.events("recovery.offer-proposed.v1", uk)
    (granted,) = await outside.events("recovery.offer-authorized.v1", uk)
    assert proposed.total.currency == "GBP" and granted.amount == proposed.total
    assert granted.tier == common.AUTHORIZATION_TIER_SYSTEM
    assert (granted.rate.from_currency, granted.rate.to_currency, granted.rate.rate) == ("GBP", "EUR", "1.17")

    # A Polish customer tells the frontline about a taxi: the agent's own authority (50 EUR = 212.76 PLN)
    # authorises the PLN offer at once.
    pl = new_id("cust")
    taxi = common.Money(amount_minor=6_000, currency="PLN")
    reply = await report(
        outside,
        AGENT,
        pl,
        category=common.CATEGORY_BILLING_ERROR,
        description="charged twice; took a taxi to the branch",
        order_value=common.Money(amount_minor=10_000, currency="PLN"),
        reported_costs=[common.CostItem(kind=common.COST_KIND_TAXI, amount=taxi, has_receipt=True)],
    )
    case = await authorized(outside, reply.case_id, AGENT)
    assert case.current_offer.total.currency == "PLN"
    (event,) = await outside.events("recovery.offer-authorized.v1", pl)
    assert (event.tier, event.amount.currency, event.rate.rate) == (common.AUTHORIZATION_TIER_OWNER, "PLN", "0.235")
    assert event.amount == case.current_offer.total


async def test_3c_every_customer_hears_from_us_in_their_own_language(outside):
    # A Polish customer, on the phone: the agent records the language; the offer and the check-ins are in Polish.
    pl = new_id("cust")
    reply = await report(
        outside,
        AGENT,
        pl,
        locale="pl-PL",
        category=common.CATEGORY_BILLING_ERROR,
        description="charged twice; took a taxi to the branch",
        order_value=common.Money(amount_minor=10_000, currency="PLN"),
        reported_costs=[
            common.CostItem(
                kind=common.COST_KIND_TAXI, amount=common.Money(amount_minor=6_050, currency="PLN"), has_receipt=True
            )
        ],
    )
    (opened,) = await outside.events("recovery.case-opened.v1", pl)
    assert opened.locale == "pl"
    (proposed,) = await outside.events("recovery.offer-proposed.v1", pl)
    assert proposed.locale == "pl"
    taxi = next(line for line in proposed.line_items if line.kind == common.REMEDY_KIND_REIMBURSEMENT)
    assert taxi.customer_explanation == "Zwracamy koszt, który ponieśli Państwo przez nasz błąd: taksówka, 60,50\xa0zł."
    assert (taxi.customer_text.template_id, taxi.customer_text.locale) == ("offer.reimbursement", "pl")
    assert dict(taxi.customer_text.params) == {"amount": "60.50 PLN", "cost": "cost_kind.taxi"}
    apology = next(line for line in proposed.line_items if line.kind == common.REMEDY_KIND_APOLOGY_NOTE)
    assert apology.customer_explanation == "Przepraszamy: to nie powinno było się Państwu przydarzyć."

    await accept_and_resolve(outside, await authorized(outside, reply.case_id, AGENT), AGENT)
    (resolved,) = await outside.events("recovery.case-resolved.v1", pl)
    assert resolved.locale == "pl"
    due = {f.kind: f for f in await outside.followups(pl, count=2)}
    check = due[common.FOLLOWUP_KIND_SATISFACTION_CHECK]
    assert check.message == check.text.text and check.text.locale == "pl"
    assert check.message.startswith("Czy są Państwo zadowoleni")
    assert due[common.FOLLOWUP_KIND_CHECK_IN].text.template_id == "followup.check_in"

    # A customer nobody asked: the market's language, by the customer's time zone (intake's policy).
    it = new_id("cust")
    await outside.publish(
        "recovery.failure-reported.v1", system_failure(it, customer_timezone="Europe/Rome"), source="tracking"
    )
    (proposed,) = await outside.events("recovery.offer-proposed.v1", it)
    assert proposed.locale == "it"
    assert any(line.customer_explanation.startswith("Ci dispiace") for line in proposed.line_items)

    # A language the system does not speak is refused at the field, and nothing is opened.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await report(outside, AGENT, new_id("cust"), locale="de-DE", category=common.CATEGORY_BILLING_ERROR)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "locale: 'de-DE' is not a supported locale" in refused.value.details()


async def test_3d_the_customer_hears_how_their_case_moves_and_every_contact_is_logged(outside):
    dora = Employee("e2e-agent-dora", "agent", AGENT.team)  # her own day's usage: other journeys keep theirs
    customer = new_id("cust")
    reply = await report(
        outside,
        dora,
        customer,
        locale="pl",
        category=common.CATEGORY_CANCELLATION,
        description="our overbooking cancelled the flight home",
        avoidability=common.AVOIDABILITY_AVOIDABLE,
        order_value=eur(20_000),
        reported_costs=[common.CostItem(kind=common.COST_KIND_HOTEL, amount=eur(9_000), has_receipt=True)],
    )
    case = await offered(outside, reply.case_id, dora)
    stub, meta = outside.cases(), outside.as_(dora)
    # The agent apologises on the phone, again by email the next morning, and tries to call back: all logged.
    for channel, note in ((common.CHANNEL_PHONE, "sorry on the phone"), (common.CHANNEL_EMAIL, "sorry in writing")):
        await stub.AcknowledgeCase(
            cases.AcknowledgeCaseRequest(request_id=new_id("req"), case_id=reply.case_id, channel=channel, note=note),
            metadata=meta,
            timeout=30,
        )
    await stub.RecordContact(
        cases.RecordContactRequest(
            request_id=new_id("req"),
            case_id=reply.case_id,
            kind=common.CONTACT_KIND_CALL,
            outcome=common.CONTACT_OUTCOME_NO_ANSWER,
            note="no answer; will try after 17:00",
        ),
        metadata=meta,
        timeout=30,
    )
    # Above her limits, at once: "we are on it" is made obsolete by "we are checking with our team".
    requested = await stub.RequestApproval(
        cases.RequestApprovalRequest(
            request_id=new_id("req"), case_id=reply.case_id, offer_id=case.current_offer.offer_id, note="hotel"
        ),
        metadata=meta,
        timeout=30,
    )
    kinds_logged = [k.kind for k in requested.case.contacts]
    assert kinds_logged == [common.CONTACT_KIND_APOLOGY, common.CONTACT_KIND_APOLOGY, common.CONTACT_KIND_CALL]

    # At the point of contact a colleague sees who spoke with the customer, newest first.
    async def history_with_contacts():
        view = await outside.intake().GetCustomerHistory(
            intake_pb2.GetCustomerHistoryRequest(customer_id=customer), metadata=outside.as_(LEAD), timeout=30
        )
        return view if len(view.contacts) >= 3 else None  # intake reads them from contact-recorded

    history = await outside.until(history_with_contacts)
    assert [c.note for c in history.contacts] == [
        "no answer; will try after 17:00",
        "sorry in writing",
        "sorry on the phone",
    ]
    assert history.summary.last_contact.outcome == common.CONTACT_OUTCOME_NO_ANSWER

    (waiting,) = await outside.progress(customer)  # told before anyone decides
    assert waiting.text.template_id == "followup.progress_update.awaiting_approval"
    assert waiting.text.locale == "pl" and waiting.message.startswith("Uzgadniamy z naszym zespołem")
    assert dict(waiting.text.params)["by"]  # the approval's deadline, in the customer's time
    await stub.DecideApproval(
        cases.DecideApprovalRequest(
            request_id=new_id("req"),
            approval_id=requested.approval.approval_id,
            decision=common.APPROVAL_DECISION_APPROVE,
            reason="our overbooking: we pay the hotel and more",
        ),
        metadata=outside.as_(LEAD),
        timeout=30,
    )
    (_, ready) = await outside.progress(customer, count=2)
    assert ready.message == "Nasza propozycja dla Państwa została zatwierdzona. Wkrótce prześlemy szczegóły."
    await accept_and_resolve(outside, await authorized(outside, reply.case_id, dora), dora)
    told = await outside.progress(customer, count=3)
    stages = [f.text.template_id.rsplit(".", 1)[1] for f in told]
    assert stages == ["awaiting_approval", "offer_ready", "done"]  # in order; the acknowledgement never went out
    listed = await outside.followup().ListFollowups(
        followup_pb2.ListFollowupsRequest(case_id=reply.case_id), metadata=outside.as_(dora), timeout=30
    )
    obsolete = [f for f in listed.followups if f.status == followup_pb2.FOLLOWUP_STATUS_CANCELLED]
    assert [f.kind for f in obsolete] == [common.FOLLOWUP_KIND_PROGRESS_UPDATE]
    assert obsolete[0].cancel_reason == "obsolete: awaiting_approval is newer"


async def test_3e_the_frontline_puts_it_right_in_her_own_way_within_her_authority_and_above_it(outside):
    ada = Employee("e2e-agent-ada", "agent", AGENT.team)  # her own day's usage: other journeys do not use it up
    stub, meta = outside.cases(), outside.as_(ada)

    async def adjust(case: cases.Case, reason: str, **adjustment) -> None:
        await stub.AdjustOffer(
            cases.AdjustOfferRequest(
                request_id=new_id("req"),
                case_id=case.case_id,
                offer_id=case.current_offer.offer_id,
                adjustment=common.OfferAdjustment(**adjustment),
                reason=reason,
            ),
            metadata=meta,
            timeout=30,
        )

    # She asked for 25 EUR back: above an agent's 20 EUR cash refunds, so the offer waits for Ada.
    customer = new_id("cust")
    reply = await report(
        outside,
        ada,
        customer,
        category=common.CATEGORY_BILLING_ERROR,
        description="charged twice for the same month",
        customer_request=common.CustomerRequest(remedy_kind=common.REMEDY_KIND_REFUND, amount=eur(2_500)),
    )
    pending = await outside.case(reply.case_id, ada, lambda c: c.current_offer.version >= 1)
    assert pending.current_offer.status == cases.OFFER_STATUS_PROPOSED
    assert any(line.kind == common.REMEDY_KIND_REFUND for line in pending.current_offer.line_items)
    # On the phone she takes a credit instead, and Ada adds flowers: within Ada's authority, granted at once.
    flowers = common.PersonalGesture(description="a bouquet of flowers", amount=eur(1_000), reason="a rough month")
    await adjust(
        pending,
        "prefers a credit on her account; flowers for the trouble",
        swaps=[common.RemedySwap(from_kind=common.REMEDY_KIND_REFUND, to_kind=common.REMEDY_KIND_ACCOUNT_CREDIT)],
        gestures=[flowers],
    )
    granted = await authorized(outside, reply.case_id, ada, version=2)
    offer = granted.current_offer
    assert (offer.tier, offer.authorized_by.employee_id) == (common.AUTHORIZATION_TIER_OWNER, ada.sub)
    assert common.REMEDY_KIND_REFUND not in [line.kind for line in offer.line_items]
    gift = next(line for line in offer.line_items if line.rule_id == "frontline.gesture")
    assert (gift.kind, gift.amount) == (common.REMEDY_KIND_GIFT, eur(1_000))
    assert gift.customer_explanation == "And a small gesture from us, personally: a bouquet of flowers."
    adjusted = next(e for e in granted.decision_history if e.action == cases.CASE_ACTION_OFFER_ADJUSTED)
    assert (adjusted.actor.employee_id, adjusted.reason) == (
        ada.sub,
        "prefers a credit on her account; flowers for the trouble",
    )

    # A taxi she paid without a receipt yet; a dinner for two is above Ada's gifts: her share now, the rest up.
    customer = new_id("cust")
    reply = await report(
        outside,
        ada,
        customer,
        category=common.CATEGORY_BILLING_ERROR,
        description="our billing error made her travel to the branch",
        reported_costs=[common.CostItem(kind=common.COST_KIND_TAXI, amount=eur(3_000))],
    )
    first = await authorized(outside, reply.case_id, ada)
    taxi = next(line for line in first.current_offer.line_items if line.kind == common.REMEDY_KIND_REIMBURSEMENT)
    assert taxi.needs_receipt  # 30 EUR without a receipt
    dinner = common.PersonalGesture(description="a dinner for two", amount=eur(4_000), reason="a wasted afternoon")
    await adjust(first, "she lost an afternoon", gestures=[dinner])
    second = await outside.case(reply.case_id, ada, lambda c: c.current_offer.version >= 2)
    assert second.current_offer.status == cases.OFFER_STATUS_PROPOSED  # above her limits: it waits for her
    assert [line.amount for line in second.current_offer.line_items if line.rule_id == "frontline.gesture"] == [
        eur(4_000)
    ]
    requested = await stub.RequestApproval(
        cases.RequestApprovalRequest(
            request_id=new_id("req"), case_id=reply.case_id, offer_id=second.current_offer.offer_id, note="dinner"
        ),
        metadata=meta,
        timeout=30,
    )
    approval = requested.approval
    assert approval.owner_share.amount_minor > 0 and approval.amount.amount_minor > 0  # split: only the excess up
    assert approval.owner_share.amount_minor + approval.amount.amount_minor == 4_000
    await stub.DecideApproval(
        cases.DecideApprovalRequest(
            request_id=new_id("req"),
            approval_id=approval.approval_id,
            decision=common.APPROVAL_DECISION_APPROVE,
            reason="a fair gesture",
        ),
        metadata=outside.as_(LEAD),
        timeout=30,
    )
    ready = await authorized(outside, reply.case_id, ada, version=2)
    # The receipt arrives: the repayment granted before no longer waits for it (nothing is paid twice).
    await adjust(ready, "receipt emailed", receipts=[common.ReceiptReceived(cost_kind=common.COST_KIND_TAXI)])
    third = await authorized(outside, reply.case_id, ada, version=3)
    repaid = [line for line in third.current_offer.granted_before if line.kind == common.REMEDY_KIND_REIMBURSEMENT]
    assert [(line.amount, line.needs_receipt) for line in repaid] == [(eur(3_000), False)]
    assert not any(line.kind == common.REMEDY_KIND_REIMBURSEMENT for line in third.current_offer.line_items)

    # A gesture without a reason, or above any authority, is refused at the field and changes nothing.
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await adjust(third, "x", gestures=[common.PersonalGesture(description="wine", amount=eur(500))])
    assert no_reason.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "adjustment.gestures[0].reason" in no_reason.value.details()
    car = common.PersonalGesture(description="a new car", amount=eur(5_000_000), reason="why not")
    with pytest.raises(grpc.aio.AioRpcError) as too_much:
        await adjust(third, "x", gestures=[car])
    assert too_much.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "above what any authority may grant" in too_much.value.details()
    same = await outside.case(reply.case_id, ada)
    assert same.current_offer.version == 3
    assert [e.action for e in same.decision_history].count(cases.CASE_ACTION_OFFER_ADJUSTED) == 2


async def test_4_a_missed_acknowledgement_breaches_the_sla_raises_the_offer_and_escalates(outside):
    customer = new_id("cust")
    reply = await report(
        outside,
        AGENT,
        customer,
        category=common.CATEGORY_DAMAGED_ITEM,
        description="the lamp arrived broken",
        order_value=eur(6_000),
    )
    assert reply.classification.severity.severity == common.SEVERITY_MODERATE
    assert reply.classification.outlook.outlook == common.OUTLOOK_RECOVERABLE
    first = await offered(outside, reply.case_id, AGENT)
    # Nobody acknowledges. The deadline passes.
    (breach,) = await outside.events("recovery.sla-breached.v1", customer, timeout=ACK_DEADLINE_SECONDS + 45)
    assert breach.clock == common.SLA_CLOCK_ACKNOWLEDGE and breach.escalated_to_role == "senior_agent"
    offers = await outside.events("recovery.offer-proposed.v1", customer, count=2)
    raised = offers[-1]
    assert raised.requote_reason == common.REQUOTE_REASON_SLA_BREACHED
    assert raised.total.amount_minor > first.current_offer.total.amount_minor
    assert any("SLA" in line.internal_reason or "breach" in line.internal_reason for line in raised.line_items)
    case = await outside.case(reply.case_id, AGENT, lambda c: c.current_offer.version == 2)
    assert (case.sla_breach_count, case.attention_role) == (1, "senior_agent")
    assert case.owner_employee_id == AGENT.sub
    assert case.sla.acknowledge.status == cases.SLA_STATUS_BREACHED


async def test_5_dissatisfied_feedback_reopens_the_case_to_the_same_owner(outside):
    customer = new_id("cust")
    reply = await report(
        outside, AGENT, customer, category=common.CATEGORY_SERVICE_QUALITY, description="rude reply at the counter"
    )
    await outside.case(reply.case_id, AGENT)
    await accept_and_resolve(outside, await authorized(outside, reply.case_id, AGENT), AGENT)
    (check,) = await outside.followups(customer)
    assert check.kind == common.FOLLOWUP_KIND_SATISFACTION_CHECK

    answer = await outside.followup().RecordFeedback(
        followup_pb2.RecordFeedbackRequest(
            request_id=new_id("req"),
            case_id=reply.case_id,
            followup_id=check.followup_id,
            score=2,
            satisfied=False,
            comment="nobody called me back as promised",
        ),
        metadata=outside.as_(AGENT),
        timeout=30,
    )
    assert answer.reopen_requested
    (reopened,) = await outside.events("recovery.case-reopened.v1", customer)
    assert (reopened.case_id, reopened.owner_employee_id) == (reply.case_id, AGENT.sub)
    # Back with its owner and open again. Not necessarily still REOPENED: the failed recovery joins the case
    # and the re-quote it causes may already have moved it on to a new offer.
    case = await outside.case(reply.case_id, AGENT, lambda c: c.state != cases.CASE_STATE_RESOLVED)
    assert case.owner_employee_id == AGENT.sub
    # The failed recovery is itself a failure: intake records it against the same case.
    failures = await outside.events("recovery.failure-reported.v1", customer, count=1)
    assert any(f.source == common.SOURCE_FOLLOWUP and f.related_case_id == reply.case_id for f in failures)


async def test_5b_a_survey_score_alone_is_judged_by_the_policys_threshold(outside):
    ema = Employee("e2e-agent-ema", "agent", AGENT.team)  # her own day's usage: other journeys keep theirs
    customer = new_id("cust")
    case_ids = []
    for description in ("slow reply at the counter", "slow reply on the phone"):
        reply = await report(outside, ema, customer, category=common.CATEGORY_SERVICE_QUALITY, description=description)
        await accept_and_resolve(outside, await authorized(outside, reply.case_id, ema), ema)
        case_ids.append(reply.case_id)
    for case_id in case_ids:
        await outside.until(lambda case_id=case_id: _planned(outside, case_id))  # followup knows both resolutions
    # A survey system sends scores and no verdict: 8 out of 10 is not below the policy's 7, 3 is.
    for case_id, score in zip(case_ids, (8, 3), strict=True):
        answer = events.FeedbackReceived(
            customer_id=customer,
            case_id=case_id,
            feedback_id=new_id("survey"),
            source=common.SOURCE_SURVEY,
            score=score,
            received_at=ago(seconds=1),
        )
        await outside.publish("recovery.feedback-received.v1", answer, source="survey-system")
    # One customer, one partition: the 8 was judged before the 3, so its reopening would have come first.
    reopened = await outside.events("recovery.case-reopened.v1", customer)
    assert [r.case_id for r in reopened] == [case_ids[1]]
    kept = await outside.case(case_ids[0], ema)
    assert kept.state == cases.CASE_STATE_RESOLVED


async def _planned(outside, case_id: str) -> bool:
    listed = await outside.followup().ListFollowups(
        followup_pb2.ListFollowupsRequest(case_id=case_id), metadata=outside.as_(AGENT), timeout=30
    )
    return any(f.kind == common.FOLLOWUP_KIND_SATISFACTION_CHECK for f in listed.followups)


async def test_5c_a_colleague_whose_report_merged_reads_the_case_and_the_owner_is_told(outside):
    fina = Employee("e2e-agent-fina", "agent", AGENT.team)  # her own day's usage: other journeys keep theirs
    customer, reference = new_id("cust"), new_id("booking")
    first = await report(
        outside, fina, customer, reference=reference, category=common.CATEGORY_CANCELLATION, description="cancelled"
    )
    await outside.case(first.case_id, fina)
    # The customer calls again and reaches another team: the same booking, the same case.
    again = await report(
        outside,
        LOGISTICS_AGENT,
        customer,
        reference=reference,
        category=common.CATEGORY_CANCELLATION,
        description="called again about the cancelled booking",
    )
    assert again.case_id == first.case_id
    (told,) = await outside.events("recovery.contact-recorded.v1", customer)
    assert (told.owner_employee_id, told.contact.employee_id) == (fina.sub, LOGISTICS_AGENT.sub)
    assert told.contact.kind == common.CONTACT_KIND_REPORT
    theirs = await outside.case(first.case_id, LOGISTICS_AGENT, lambda c: bool(c.reporters))
    assert theirs.owner_employee_id == fina.sub  # the owner stays the customer's contact
    assert [r.employee_id for r in theirs.reporters] == [LOGISTICS_AGENT.sub]
    assert [(k.kind, k.employee_id) for k in theirs.contacts] == [(common.CONTACT_KIND_REPORT, LOGISTICS_AGENT.sub)]


async def test_6_a_corrective_action_reaches_every_linked_customer_once(outside):
    component = new_id("courier-api")
    customers = [new_id("cust"), new_id("cust")]
    for customer in customers:
        reply = await report(
            outside, AGENT, customer, category=common.CATEGORY_LATE_DELIVERY, description="label printed for another"
        )
        await accept_and_resolve(
            outside,
            await authorized(outside, reply.case_id, AGENT),
            AGENT,
            root_cause_area=common.Area(component=component),
            root_cause="labels swapped by the courier integration",
        )
        await scheduled(outside, customer)  # followup knows the case and its root cause
    action = events.CorrectiveActionCompleted(
        customer_id=f"area:component:{component}",
        action_id=new_id("action"),
        area=common.Area(component=component),
        description="We rebuilt how shipping labels are matched to orders.",
        completed_at=ago(minutes=1),
    )
    for _ in range(2):  # the engineering system retries: still one notice per customer
        await outside.publish("recovery.corrective-action-completed.v1", action, source="engineering")

    def notice(customer):
        return lambda s: (
            s.record.key == customer.encode() and s.message.kind == (common.FOLLOWUP_KIND_CORRECTIVE_ACTION_NOTICE)
        )

    for customer in customers:
        (sent,) = await outside.wait("recovery.followup-due.v1", notice(customer))
        assert sent.message.action_id == action.action_id
        assert sent.message.corrective_action_description == action.description
    await asyncio.sleep(5)  # time for a second notice to show up, if one were ever sent
    for customer in customers:
        assert len(outside.now_seen("recovery.followup-due.v1", notice(customer))) == 1


async def test_6b_a_declared_cancelled_flight_gets_every_passenger_the_playbook_at_once(outside):
    incident = new_id("flight-LO281")

    def stranded(customer: str, **fields) -> events.FailureReported:
        return system_failure(customer, category=common.CATEGORY_CANCELLATION, incident_id=incident, **fields)

    early = new_id("cust")  # stranded before the disruption was declared: put right by the normal rules first
    await outside.publish("recovery.failure-reported.v1", stranded(early), source="delivery-tracking")
    (first,) = await outside.events("recovery.offer-authorized.v1", early)
    assert first.tier == common.AUTHORIZATION_TIER_SYSTEM

    declared = await outside.cases().DeclareIncident(
        cases.DeclareIncidentRequest(
            request_id=new_id("req"), incident_id=incident, playbook_id="cancelled_flight", reason="storm over WAW"
        ),
        metadata=outside.as_(LEAD),
        timeout=30,
    )
    assert declared.declaration.declared_by == LEAD.sub
    key = f"incident:{incident}".encode()
    (announced,) = await outside.wait("recovery.incident-declared.v1", lambda s: s.record.key == key)
    assert (announced.message.incident_id, announced.message.playbook_id) == (incident, "cancelled_flight")

    passengers = [new_id("cust") for _ in range(20)]
    stuck = new_id("cust")  # paid for a hotel and a new flight: more than the playbook gives
    costs = [
        common.CostItem(kind=common.COST_KIND_HOTEL, amount=eur(30_000), description="hotel", has_receipt=True),
        common.CostItem(kind=common.COST_KIND_REBOOKING, amount=eur(80_000), description="flight", has_receipt=True),
    ]
    await asyncio.gather(
        *(outside.publish("recovery.failure-reported.v1", stranded(c), source="delivery-tracking") for c in passengers),
        outside.publish(
            "recovery.failure-reported.v1", stranded(stuck, reported_costs=costs), source="delivery-tracking"
        ),
    )
    playbook = {}
    for customer in passengers:
        (authorised,) = await outside.events("recovery.offer-authorized.v1", customer)
        (offer,) = await outside.events("recovery.offer-proposed.v1", customer)
        assert (authorised.tier, authorised.limits.employee_id) == (common.AUTHORIZATION_TIER_PLAYBOOK, LEAD.sub)
        assert offer.playbook_id == "cancelled_flight" and authorised.offer_id == offer.offer_id
        playbook[customer] = offer.total.amount_minor
    assert len(set(playbook.values())) == 1, "every passenger hears the same answer"
    # The early customer is re-quoted with the playbook, less what the system already gave, and pre-approved too.
    _, requote = await outside.events("recovery.offer-proposed.v1", early, count=2)
    assert requote.requote_reason == common.REQUOTE_REASON_INCIDENT_DECLARED and requote.playbook_id
    _, second = await outside.events("recovery.offer-authorized.v1", early, count=2)
    assert second.tier == common.AUTHORIZATION_TIER_PLAYBOOK
    assert first.amount.amount_minor + second.amount.amount_minor == requote.granted_before_total.amount_minor + (
        requote.total.amount_minor
    )
    # The customer who needs more gets the normal rules' offer, on the normal path (a person authorises it).
    (normal,) = await outside.events("recovery.offer-proposed.v1", stuck)
    assert normal.playbook_id == "" and normal.total.amount_minor > playbook[passengers[0]]
    assert not outside.now_seen("recovery.offer-authorized.v1", for_customer(stuck))

    summary = await outside.cases().GetIncident(
        cases.GetIncidentRequest(incident_id=incident), metadata=outside.as_(LEAD), timeout=30
    )
    assert (summary.cases, summary.playbook_authorized) == (22, 21)
    assert summary.declaration.playbook_id == "cancelled_flight"


SERVICES = ("intake", "escalation", "compensation", "followup")
# Every (input topic, consuming service) pair of the catalogue.
INPUTS = sorted({(t.name, consumer) for t in CATALOGUE for consumer in t.consumers if consumer in SERVICES})


def malformed(message_type: str) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    """Return (what, value, headers) of records no consumer can take: each must be dead-lettered."""
    good = [
        ("ce_specversion", b"1.0"),
        ("ce_id", new_id("evt").encode()),
        ("ce_source", b"fuzzy-system"),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
    ]
    typed = [*good, ("ce_type", message_type.encode())]
    return [
        ("truncated protobuf", b"\x0a\xff\xff\xff", [*typed, ("content-type", b"application/protobuf")]),
        ("JSON of the wrong shape", b'{"occurred_at": 42}', [*typed, ("content-type", b"application/json")]),
        ("an unknown ce_type", b"{}", [*good, ("ce_type", b"x.Unknown"), ("content-type", b"application/json")]),
        ("no CloudEvents headers", b"hello", []),
    ]


async def test_7_malformed_records_on_every_input_are_dead_lettered_with_reasons_and_change_nothing(outside):
    poison = new_id("poison")
    sent = 0
    for name in sorted({topic for topic, _ in INPUTS}):
        for _, value, headers in malformed(next(t.message for t in CATALOGUE if t.name == name)):
            await outside.publish_raw(name, key=poison, value=value, headers=headers)
            sent += 1
    per_pair = 4  # each consumer of a topic dead-letters each of the four records once
    letters = await outside.wait(DEAD_LETTERS, for_customer(poison), count=per_pair * len(INPUTS), timeout=120)
    by_pair: dict[tuple[str, str], list] = {}
    for letter in letters:
        h = letter.headers
        by_pair.setdefault((h["dlq_original_topic"], h["dlq_consumer_group"]), []).append(h)
        assert h["dlq_reason"] and h["dlq_error_class"], h
    assert sorted(by_pair) == INPUTS
    assert {len(v) for v in by_pair.values()} == {per_pair}
    await asyncio.sleep(5)  # anything a bad record wrongly caused would show up meanwhile
    for topic in outside.seen:
        if topic != DEAD_LETTERS and not any(topic == name for name, _ in INPUTS):
            assert not outside.now_seen(topic, for_customer(poison)), f"{topic} got output from a bad record"
    for name in {n for n, _ in INPUTS}:
        assert len(outside.now_seen(name, for_customer(poison))) == 4  # only what was published, nothing more
