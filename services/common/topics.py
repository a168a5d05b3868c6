"""The topic catalogue in code: every topic, who produces and consumes it, and the message it carries.

The README's topic table is the same catalogue for people; a test keeps the two equal. Topics are keyed
by customer id and share one partition count, so one customer's events stay in order and land on the same
partition number everywhere. The events that are not about one customer say what their key is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

KEY = "customer_id"
# How long the broker keeps a topic's records. Events: a week, Apache Kafka's default, named so it is not left to
# a broker setting. Dead letters: a quarter, so an incident's records are still there when someone replays them.
EVENT_RETENTION = timedelta(days=7)
DEADLETTER_RETENTION = timedelta(days=90)


@dataclass(frozen=True)
class Topic:
    """One catalogue row."""

    name: str
    message: str  # full protobuf name, also the records' ce_type; "" for raw records (dead letters)
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    meaning: str
    key: str = KEY
    retention: timedelta = EVENT_RETENTION

    @property
    def configs(self) -> dict[str, str]:
        """Return the topic configuration the catalogue sets when it creates the topic."""
        return {"retention.ms": str(int(self.retention.total_seconds() * 1000))}


def _t(
    event: str,
    message: str,
    producers: str,
    consumers: str,
    meaning: str,
    key: str = KEY,
    retention: timedelta = EVENT_RETENTION,
) -> Topic:
    return Topic(
        key=key,
        retention=retention,
        name=f"recovery.{event}.v1",
        message=f"recovery.events.v1.{message}" if message else "",
        producers=tuple(producers.split(", ")),
        consumers=tuple(consumers.split(", ")) if consumers else (),
        meaning=meaning,
    )


CATALOGUE: tuple[Topic, ...] = (
    _t(
        "failure-reported",
        "FailureReported",
        "internal systems, followup",
        "intake",
        "A failure seen by a system, a survey or a failed recovery; intake turns it into a case.",
    ),
    _t(
        "case-opened",
        "CaseOpened",
        "intake",
        "compensation, escalation, followup",
        "A new case with its classification, outlook and the customer's history.",
    ),
    _t(
        "case-amended",
        "CaseAmended",
        "intake",
        "compensation, escalation",
        "Another failure merged into an open case.",
    ),
    _t(
        "hotspot-detected",
        "HotspotDetected",
        "intake",
        "notification systems",
        "Failures in one area exceed their trailing baseline.",
        key="hotspot:<dimension>:<value>",
    ),
    _t(
        "incident-declared",
        "IncidentDeclared",
        "escalation",
        "compensation, operations dashboards",
        "A disruption declared with a playbook whose offers the declaring supervisor pre-approves (Plan B).",
        key="incident:<incident_id>",
    ),
    _t(
        "incident-updated",
        "IncidentUpdated",
        "escalation",
        "operations dashboards",
        "How the recovery of one disruption stands: its cases, offers authorised, approvals waiting.",
        key="incident:<incident_id>",
    ),
    _t(
        "offer-proposed",
        "OfferProposed",
        "compensation",
        "escalation",
        "An itemised goodwill offer (a new version supersedes the previous one).",
    ),
    _t(
        "offer-authorized",
        "OfferAuthorized",
        "escalation",
        "compensation, intake",
        "An offer authorised by the owner, an approver or the system.",
    ),
    _t(
        "approval-requested",
        "ApprovalRequested",
        "escalation",
        "notification systems",
        "An offer above the owner's limits waits for the lowest tier that covers it.",
    ),
    _t(
        "approval-decided",
        "ApprovalDecided",
        "escalation",
        "notification systems",
        "An approver approved, rejected or modified an offer.",
    ),
    _t(
        "sla-breached",
        "SlaBreached",
        "escalation",
        "compensation",
        "A case missed its acknowledgement, resolution or approval deadline.",
    ),
    _t(
        "case-progressed",
        "CaseProgressed",
        "escalation",
        "followup, notification systems",
        "A case moved in a way its customer is told of: acknowledged, awaiting approval, offer ready, done.",
    ),
    _t(
        "contact-recorded",
        "ContactRecorded",
        "escalation",
        "intake, notification systems",
        "A contact with the customer in a case's contact log (apology, call, message, note, a colleague's report).",
    ),
    _t(
        "offer-adjusted",
        "OfferAdjusted",
        "escalation",
        "compensation",
        "The case owner adjusted the offer within policy (swap, personal gesture, late cost, receipt); re-quoted.",
    ),
    _t(
        "customer-countered",
        "CustomerCountered",
        "escalation",
        "compensation",
        "The customer asked for something else; compensation re-quotes.",
    ),
    _t(
        "case-resolved",
        "CaseResolved",
        "escalation",
        "followup, intake",
        "The customer accepted; follow-ups get scheduled.",
    ),
    _t(
        "case-reopened",
        "CaseReopened",
        "escalation",
        "followup, compensation, intake",
        "A resolved case went back to its owner; pending check-ins are held.",
    ),
    _t(
        "case-reopen-requested",
        "CaseReopenRequested",
        "followup",
        "escalation",
        "A dissatisfied answer asks escalation to reopen the case.",
    ),
    _t(
        "followup-due",
        "FollowupDue",
        "followup",
        "notification systems",
        "A check-in, satisfaction check, personal note or corrective-action notice is due now.",
    ),
    _t(
        "feedback-received",
        "FeedbackReceived",
        "survey systems, followup",
        "followup, intake",
        "A customer's satisfaction answer.",
    ),
    _t(
        "corrective-action-completed",
        "CorrectiveActionCompleted",
        "engineering systems",
        "followup",
        "A root cause was fixed; every customer whose case pointed at it (or was part of its incident) hears about it.",
        key="area:component:<component> (or area:team:<team>, or incident:<incident_id>)",
    ),
    _t(
        "deadletter",
        "",
        "intake, escalation, compensation, followup",
        "SREs (replay tool)",
        "Records a consumer could not process: original bytes and headers plus where and why.",
        retention=DEADLETTER_RETENTION,
    ),
)

BY_NAME = {t.name: t for t in CATALOGUE}


def longest_input_retention() -> timedelta:
    """Return the longest time any consumed topic keeps its records (dead letters aside: they are replayed by
    hand, and a dead-lettered record was never recorded as processed). A consumer's memory of what it processed
    must outlast it, or a redelivered record could be applied twice."""
    return max(t.retention for t in CATALOGUE if t.message)


def topic(name: str) -> Topic:
    """Return the catalogue row for ``name``; raises KeyError for a topic not in the catalogue."""
    return BY_NAME[name]
