"""`make demo`: the system on its embedded default, a dozen customers failed and won back, a timeline per case.

Brings the whole system up as `make run` does (follow-up delays and the moderate acknowledgement deadline
shortened by configuration), plays a scenario through the same doors real users use (internal systems
publish failures to Kafka; an agent, a team lead and a manager call gRPC with their own tokens; a survey
tool publishes answers), then prints what happened to each customer, read back from the output topics.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import grpc
from google.protobuf.message import Message
from recovery.escalation.v1 import escalation_pb2 as cases
from recovery.events.v1 import common_pb2 as common
from recovery.events.v1 import events_pb2 as events
from recovery.followup.v1 import followup_pb2

from services.common import cloudevents
from services.common.wire import time_to_proto
from tests.support import frontline
from tests.support.frontline import (
    AGENT,
    LEAD,
    LOGISTICS_AGENT,
    MANAGER,
    accept_and_resolve,
    ago,
    authorized,
    eur,
    offered,
    resolve,
    scheduled,
)
from tests.support.outside import Outside, new_id
from tests.support.system import ACK_DEADLINE_SECONDS, running_system, short_clocks

PEOPLE = {
    "c01 Ona": "small late parcel, put right by the system before she noticed",
    "c02 Jonas": "double charge, a taxi to the branch, asks for a credit",
    "c03 Agnieszka": "second failure: our overbooking cancelled her trip to a wedding",
    "c04 Marco": "broken lamp; nobody acknowledges it in time",
    "c05 Giulia": "rude counter service; not satisfied with the fix",
    "c06 Tomas": "wrong label from the courier integration",
    "c07 Rasa": "the same courier integration bug",
    "c08 Piotr": "answers a survey with a 2 out of 10",
    "c09 Laura": "delivery tracking reports her late parcel twice",
    "c10 Matteo": "two failures on one booking, merged into one case",
    "c11 Ewa": "counters the offer: she wants a refund, not a voucher",
    "c12 Lina": "our overbooking cancelled her flight; the offer is a manager's to approve",
}


# The language each customer speaks with us (Lithuanian, Polish, Italian or English): every word they receive
# from the system is in it. Laura names none: the market's language applies (by her time zone).
SPEAKS = {"c01": "lt", "c02": "lt", "c03": "pl", "c04": "it", "c05": "it", "c06": "lt", "c07": "lt", "c08": "pl",
          "c09": "", "c10": "it", "c11": "pl-PL", "c12": "en"}  # fmt: skip


def customer(label: str) -> str:
    return f"demo-{label.split()[0]}-{new_id('x')[-6:]}"


def speaks(customer_id: str) -> str:
    return SPEAKS[customer_id.split("-")[1]]


async def report(outside: Outside, who, customer_id: str, **fields):
    """The frontline's report, in the language the customer speaks on the phone."""
    return await frontline.report(outside, who, customer_id, locale=speaks(customer_id), **fields)


def system_failure(customer_id: str, **fields) -> events.FailureReported:
    """A system's report, with the language the customer chose in their account (if any)."""
    return frontline.system_failure(customer_id, locale=speaks(customer_id), **fields)


async def play(outside: Outside, ids: dict[str, str]) -> None:
    """The scenario: each step as the frontline or another system does it."""
    say = print
    c = ids

    say("c01  delivery tracking publishes a late parcel (protobuf)")
    await outside.publish("recovery.failure-reported.v1", system_failure(c["c01 Ona"]), source="delivery-tracking")

    say("c02  the agent takes Jonas's call and reports it; acknowledges; her own limit covers the offer")
    r02 = await report(
        outside,
        AGENT,
        c["c02 Jonas"],
        category=common.CATEGORY_BILLING_ERROR,
        description="charged twice; took a taxi to the branch",
        reported_costs=[common.CostItem(kind=common.COST_KIND_TAXI, amount=eur(1_500), has_receipt=True)],
        customer_request=common.CustomerRequest(
            remedy_kind=common.REMEDY_KIND_ACCOUNT_CREDIT, amount=eur(1_000), text="a credit for the trouble"
        ),
    )
    await outside.case(r02.case_id, AGENT)
    await outside.cases().AcknowledgeCase(
        cases.AcknowledgeCaseRequest(request_id=new_id("req"), case_id=r02.case_id, note="sorry, fixing it now"),
        metadata=outside.as_(AGENT),
    )

    say("c03  Agnieszka had a late parcel last week; now our overbooking cancels her trip")
    await outside.publish(
        "recovery.failure-reported.v1", system_failure(c["c03 Agnieszka"]), source="delivery-tracking"
    )
    await outside.events("recovery.case-opened.v1", c["c03 Agnieszka"])
    r03 = await report(
        outside,
        AGENT,
        c["c03 Agnieszka"],
        category=common.CATEGORY_CANCELLATION,
        description="overbooked: her trip to her sister's wedding was cancelled",
        avoidability=common.AVOIDABILITY_AVOIDABLE,
        stated_impacts=[common.IMPACT_MISSED_IMPORTANT_EVENT],
        impact_details="missed her sister's wedding",
        order_value=eur(20_000),
        reported_costs=[common.CostItem(kind=common.COST_KIND_HOTEL, amount=eur(9_000), has_receipt=True)],
    )

    say(f"c04  Marco's lamp: reported, then nobody acknowledges within {ACK_DEADLINE_SECONDS} s")
    await report(  # left open on purpose: the breach is the point
        outside,
        AGENT,
        c["c04 Marco"],
        category=common.CATEGORY_DAMAGED_ITEM,
        description="the lamp arrived broken",
        order_value=eur(6_000),
    )

    say("c05  Giulia: rude service, reported by the agent")
    r05 = await report(
        outside, AGENT, c["c05 Giulia"], category=common.CATEGORY_SERVICE_QUALITY, description="rude at the counter"
    )

    component = "courier-labels"
    r06 = []
    for label in ("c06 Tomas", "c07 Rasa"):
        say(f"{label[:3]}  wrong label printed by the courier integration")
        r06.append(
            await report(
                outside,
                AGENT,
                c[label],
                category=common.CATEGORY_LATE_DELIVERY,
                description="parcel went to the wrong town: label printed for another order",
                area=common.Area(component=component),
            )
        )

    say("c08  the survey tool publishes a 2/10 answer (JSON)")
    survey = events.FailureReported(
        customer_id=c["c08 Piotr"],
        source=common.SOURCE_SURVEY,
        source_event_id=new_id("survey"),
        category=common.CATEGORY_SERVICE_QUALITY,
        occurred_at=ago(days=1),
        description="How was everything? 2/10: 'waited 40 minutes on the phone'",
        survey_score=2,
        locale=speaks(c["c08 Piotr"]),
    )
    await outside.publish("recovery.failure-reported.v1", survey, source="survey-tool", content_type=cloudevents.JSON)

    say("c09  delivery tracking publishes the same event twice")
    twice = system_failure(c["c09 Laura"])
    for _ in range(2):
        await outside.publish("recovery.failure-reported.v1", twice, source="delivery-tracking")

    say("c10  two failures on one booking within the merge window")
    booking = new_id("booking")
    for what in ("the room was not cleaned", "the air conditioning is broken"):
        await report(
            outside,
            AGENT,
            c["c10 Matteo"],
            category=common.CATEGORY_SERVICE_QUALITY,
            reference=booking,
            description=what,
        )

    say("c11  Ewa's parcel is late; she will counter the offer")
    r11 = await report(
        outside,
        AGENT,
        c["c11 Ewa"],
        category=common.CATEGORY_LATE_DELIVERY,
        description="parcel a week late",
        order_value=eur(4_000),
    )

    say("c12  our overbooking cancels Lina's 900 EUR flight; she rebooked and paid a hotel")
    r12 = await report(
        outside,
        AGENT,
        c["c12 Lina"],
        category=common.CATEGORY_CANCELLATION,
        description="flight cancelled: overbooked",
        avoidability=common.AVOIDABILITY_AVOIDABLE,
        order_value=eur(90_000),
        reported_costs=[
            common.CostItem(kind=common.COST_KIND_REBOOKING, amount=eur(70_000), has_receipt=True),
            common.CostItem(kind=common.COST_KIND_HOTEL, amount=eur(15_000), has_receipt=True),
        ],
    )

    # ---- the owners act on their offers
    say("c01  a logistics agent claims the queued case the system already put right, and resolves it")
    (opened01,) = await outside.events("recovery.case-opened.v1", c["c01 Ona"])
    await outside.case(
        opened01.case_id, LOGISTICS_AGENT, lambda k: k.current_offer.status == cases.OFFER_STATUS_AUTHORIZED
    )
    await outside.cases().ClaimCase(
        cases.ClaimCaseRequest(request_id=new_id("req"), case_id=opened01.case_id),
        metadata=outside.as_(LOGISTICS_AGENT),
    )
    await resolve(outside, opened01.case_id, LOGISTICS_AGENT)

    say("c02  within the agent's limit: authorised by her authority as it arrives, accepted, resolved")
    case02 = await authorized(outside, r02.case_id, AGENT)
    await accept_and_resolve(outside, case02, AGENT)

    say("c03  above the agent's limit: approval to the lowest tier that covers it; she tries to approve herself")
    case03 = await offered(outside, r03.case_id, AGENT)
    requested = await outside.cases().RequestApproval(
        cases.RequestApprovalRequest(
            request_id=new_id("req"), case_id=r03.case_id, offer_id=case03.current_offer.offer_id, note="a wedding"
        ),
        metadata=outside.as_(AGENT),
    )
    try:
        await outside.cases().DecideApproval(
            cases.DecideApprovalRequest(
                request_id=new_id("req"),
                approval_id=requested.approval.approval_id,
                decision=common.APPROVAL_DECISION_APPROVE,
                reason="fine by me",
            ),
            metadata=outside.as_(AGENT),
        )
    except grpc.aio.AioRpcError as refused:
        say(f"     refused: {refused.code().name}: {refused.details()}")
    await outside.cases().DecideApproval(
        cases.DecideApprovalRequest(
            request_id=new_id("req"),
            approval_id=requested.approval.approval_id,
            decision=common.APPROVAL_DECISION_APPROVE,
            reason="avoidable, a repeat, a family event: pay what the law says and more",
        ),
        metadata=outside.as_(LEAD),
    )
    ready = await outside.case(r03.case_id, AGENT, lambda k: k.state == cases.CASE_STATE_OFFER_READY)
    await accept_and_resolve(outside, ready, AGENT)

    say("c05  authorised, accepted, resolved")
    case05 = await authorized(outside, r05.case_id, AGENT)
    await accept_and_resolve(outside, case05, AGENT)

    for reply in r06:
        case06 = await authorized(outside, reply.case_id, AGENT)
        await accept_and_resolve(
            outside,
            case06,
            AGENT,
            root_cause_area=common.Area(component=component),
            root_cause="labels swapped by the courier integration",
        )

    say("c11  the customer counters: a refund instead; compensation re-quotes")
    case11 = await authorized(outside, r11.case_id, AGENT)
    await outside.cases().RecordCustomerDecision(
        cases.RecordCustomerDecisionRequest(
            request_id=new_id("req"),
            case_id=r11.case_id,
            offer_id=case11.current_offer.offer_id,
            decision=common.CUSTOMER_DECISION_COUNTERED,
            counter_request=common.CustomerRequest(
                remedy_kind=common.REMEDY_KIND_REFUND, amount=eur(1_500), text="money back, not a voucher"
            ),
        ),
        metadata=outside.as_(AGENT),
    )
    await accept_and_resolve(outside, await authorized(outside, r11.case_id, AGENT, version=2), AGENT)

    say("c12  above the team lead's limit too: routed to the manager, who modifies and approves")
    case12 = await offered(outside, r12.case_id, AGENT)
    sofa = await outside.cases().RequestApproval(
        cases.RequestApprovalRequest(
            request_id=new_id("req"), case_id=r12.case_id, offer_id=case12.current_offer.offer_id, note="sofa"
        ),
        metadata=outside.as_(AGENT),
    )
    approver = {"team_lead": LEAD, "manager": MANAGER}.get(sofa.approval.approver_role, MANAGER)
    fixed = (common.REMEDY_KIND_REIMBURSEMENT, common.REMEDY_KIND_STATUTORY_COMPENSATION)
    gesture = sum(li.amount.amount_minor for li in case12.current_offer.line_items if li.kind not in fixed)
    amount = sofa.approval.amount.amount_minor - gesture // 2  # half the gesture; the rest stands
    await outside.cases().DecideApproval(
        cases.DecideApprovalRequest(
            request_id=new_id("req"),
            approval_id=sofa.approval.approval_id,
            decision=common.APPROVAL_DECISION_MODIFY_AND_APPROVE,
            approved_amount=eur(amount),
            reason="the statutory part and her costs in full; a smaller gesture, she already has a new flight",
        ),
        metadata=outside.as_(approver),
    )
    ready12 = await outside.case(r12.case_id, AGENT, lambda k: k.state == cases.CASE_STATE_OFFER_READY)
    await accept_and_resolve(outside, ready12, AGENT)

    say("c05  Giulia answers the satisfaction check: not satisfied -> reopened to the same agent")
    (check,) = await outside.followups(c["c05 Giulia"])
    await outside.followup().RecordFeedback(
        followup_pb2.RecordFeedbackRequest(
            request_id=new_id("req"),
            case_id=r05.case_id,
            followup_id=check.followup_id,
            score=3,
            satisfied=False,
            comment="nobody called me back as promised",
        ),
        metadata=outside.as_(AGENT),
    )

    say("c06+c07  engineering fixes the courier labels; both customers hear about it once")
    for label in ("c06 Tomas", "c07 Rasa"):
        await scheduled(outside, c[label])  # followup has read both resolutions
    action = events.CorrectiveActionCompleted(
        customer_id=f"area:component:{component}",
        action_id=new_id("action"),
        area=common.Area(component=component),
        description="We rebuilt how shipping labels are matched to orders.",
        completed_at=time_to_proto(datetime.now(UTC)),
    )
    await outside.publish("recovery.corrective-action-completed.v1", action, source="engineering")

    say(f"...   waiting for Marco's acknowledgement deadline ({ACK_DEADLINE_SECONDS} s) and the follow-ups")
    await outside.events("recovery.sla-breached.v1", c["c04 Marco"], timeout=ACK_DEADLINE_SECONDS + 60)
    await outside.followups(c["c07 Rasa"], count=3, timeout=60)
    await asyncio.sleep(8)


# ------------------------------------------------------------------------------------------ the timeline


def money(m: common.Money) -> str:
    units, cents = divmod(m.amount_minor, 100)
    return f"{units}.{cents:02d} {m.currency}"


def name(enum_type, value: int) -> str:
    """Return a proto enum value as the domain spells it: REMEDY_KIND_VOUCHER -> voucher."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum_type.DESCRIPTOR.name).upper() + "_"
    return enum_type.Name(value).removeprefix(prefix).lower()


def who(actor: common.Actor) -> str:
    return "the system" if actor.kind == common.ACTOR_KIND_SYSTEM else f"{actor.employee_id} ({actor.role})"


def reasons(assessment) -> str:
    return "; ".join(r.detail for r in assessment.reasons)


def describe(topic: str, m: Message) -> list[str]:
    """Return the timeline lines for one event."""
    kind = common.RemedyKind
    match topic:
        case "recovery.failure-reported.v1":
            return [f"failure reported by {name(common.Source, m.source)}: {m.description}"]
        case "recovery.case-opened.v1" | "recovery.case-amended.v1":
            c = m.classification
            head = "case opened" if topic.endswith("opened.v1") else f"failure merged (revision {m.revision})"
            return [
                f"{head}: {name(common.Severity, c.severity.severity)}, "
                f"{name(common.Avoidability, c.avoidability.avoidability)}, "
                f"outlook {name(common.Outlook, c.outlook.outlook)} (policy {c.policy_version}), in {m.locale}",
                f"    severity: {reasons(c.severity)}",
            ] + ([f"    outlook: {reasons(c.outlook)}"] if c.outlook.reasons else [])
        case "recovery.offer-proposed.v1":
            why = f", re-quote: {m.requote_detail}" if m.supersedes_offer_id else ""
            lines = [f"offer v{m.version}: {money(m.total)} (compensation policy {m.policy_version}{why})"]
            for li in m.line_items:
                lines.append(f"    {name(kind, li.kind):<22} {money(li.amount):>12}  {li.internal_reason}")
                lines.append(f"    {'':<22} {'':>12}  to the customer ({m.locale}): {li.customer_explanation}")
            return lines
        case "recovery.offer-authorized.v1":
            limits = m.limits
            return [
                f"authorised {money(m.amount)} by {who(m.authorized_by)} as {name(common.AuthorizationTier, m.tier)}"
                + (f", per-case limit {money(limits.per_case_limit)}" if limits.HasField("per_case_limit") else "")
            ]
        case "recovery.approval-requested.v1":
            return [f"approval requested: {money(m.amount)} routed to {m.approver_role} of {m.approver_team}"]
        case "recovery.approval-decided.v1":
            return [f"approval {name(common.ApprovalDecision, m.decision)} by {who(m.decided_by)}: {m.reason}"]
        case "recovery.sla-breached.v1":
            return [f"SLA {name(common.SlaClock, m.clock)} breached; escalated to {m.escalated_to_role} for attention"]
        case "recovery.case-progressed.v1":
            by = f", expected by {m.expected_by.ToDatetime():%Y-%m-%d %H:%M} UTC" if m.HasField("expected_by") else ""
            return [f"customer to be told: {name(common.ProgressStage, m.stage)}{by}"]
        case "recovery.contact-recorded.v1":
            k = m.contact
            how = f" via {name(common.Channel, k.channel)}" if k.channel else ""
            return [f"contact logged: {name(common.ContactKind, k.kind)}{how} by {k.employee_id}: {k.note or '-'}"]
        case "recovery.customer-countered.v1":
            return [f"customer countered: {m.request.text}"]
        case "recovery.case-resolved.v1":
            return [f"resolved by {who(m.resolved_by)}; compensation {money(m.compensation_total)}"]
        case "recovery.case-reopened.v1":
            return [f"reopened to {m.owner_employee_id}: {m.reason}"]
        case "recovery.followup-due.v1":
            return [
                f"follow-up due: {name(common.FollowupKind, m.kind)} via {name(common.Channel, m.channel)} "
                f"({m.text.locale}): {m.message}"
            ]
        case "recovery.feedback-received.v1":
            return [f"feedback: score {m.score}, satisfied {m.satisfied}: {m.comment}"]
    return []


def timeline(outside: Outside, customer_id: str) -> list[str]:
    """Return one customer's events in the order they happened (their ce_time), described."""
    key = customer_id.encode()
    seen = [
        (cloudevents.parse_time(s.headers["ce_time"]), topic, s)
        for topic, records in outside.seen.items()
        for s in records
        if s.record.key == key and s.message is not None
    ]
    if not seen:
        return []
    start = min(at for at, _, _ in seen)
    several = len({s.message.case_id for _, t, s in seen if t == "recovery.case-opened.v1"}) > 1
    lines = []
    for at, topic, s in sorted(seen, key=lambda x: x[0]):
        case = getattr(s.message, "case_id", "")
        tag = f"[case {case[:8]}] " if several and case else ""
        for i, line in enumerate(describe(topic, s.message)):
            when = f"+{(at - start).total_seconds():5.1f}s" if i == 0 else " " * 7
            lines.append(f"  {when}  {tag if i == 0 else ''}{line}")
    return lines


async def main() -> int:
    ids = {label: customer(label) for label in PEOPLE}
    with tempfile.TemporaryDirectory(prefix="recovery-demo-") as tmp:
        directory = Path(tmp)
        print("starting the system (broker, Postgres, four services)...", flush=True)
        async with running_system(directory, short_clocks(directory)) as system, Outside(system) as outside:
            print("the system is up; playing the scenario\n", flush=True)
            await play(outside, ids)
            print("\n================ what happened, per customer (read back from the topics) ================")
            for label, about in PEOPLE.items():
                print(f"\n{label}: {about}  [{ids[label]}]")
                print("\n".join(timeline(outside, ids[label])) or "  (nothing)")
            hotspots = [s.message for s in outside.seen["recovery.hotspot-detected.v1"] if s.message]
            for h in hotspots:
                print(f"\nhot spot: {name(common.HotspotDimension, h.dimension)}={h.value}: {h.count} failures")
            dead = outside.seen["recovery.deadletter.v1"]
            print(f"\ndead letters: {len(dead)}")
            print("stopping the system...")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
