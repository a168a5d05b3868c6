"""Fuzzing every door of the running system with generated input, driven only from outside.

Records: per input topic, hypothesis draws recipes that range from random bytes, truncated protobuf and JSON
of the wrong shape to well-formed events with a few wild fields (huge strings, negative or overflowing
money, unknown currencies, timestamps far in the future, unknown enum numbers), in binary and structured
CloudEvents mode, from other sources, and broken CloudEvents headers. Each record goes out keyed by its own
fresh customer. Every consumer of the topic must either dead-letter it with a reason or accept it (its inbox
holds the record's ce_id), never both, and must keep consuming: a valid canary published after the batch on
every partition is processed end to end. A record every consumer refused causes nothing anywhere else.

Calls: every method of the four gRPC services, enumerated from the generated descriptors, gets requests
whose fields hypothesis fills by type. No call may end UNKNOWN or INTERNAL; INVALID_ARGUMENT names the bad
fields; a refused report writes nothing; a request over the size limit is RESOURCE_EXHAUSTED.

Recipes and requests are drawn with a fixed seed (derandomised, no example database), so every run sends
the same batch; only the ids are fresh. The records test comes last: a record that stops a consumer stops it
for the whole session, and the gRPC tests' setup needs the consumers. Figures (records per topic, dead letters
and acceptances per consumer, calls per method by status) are printed; ``pytest -s`` shows them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka.partitioner import DefaultPartitioner
from google.protobuf import json_format, message_factory, symbol_database, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from recovery.compensation.v1 import compensation_pb2
from recovery.escalation.v1 import escalation_pb2 as cases_pb2
from recovery.events.v1 import common_pb2 as common
from recovery.events.v1 import events_pb2 as events
from recovery.followup.v1 import followup_pb2
from recovery.intake.v1 import intake_pb2

from services.common import cloudevents
from services.common.settings import KitSettings
from services.common.topics import CATALOGUE
from services.common.wire import time_to_proto
from tests.support.frontline import accept_and_resolve, ago, authorized, eur, report, scheduled, system_failure
from tests.support.outside import DEAD_LETTERS, Employee, Outside, Seen, daytime_zone, for_customer, new_id

pytestmark = pytest.mark.e2e

SERVICES = ("intake", "escalation", "compensation", "followup")
# Every topic a service consumes, with the services consuming it.
INPUTS: dict[str, tuple[str, ...]] = {
    t.name: tuple(c for c in t.consumers if c in SERVICES) for t in CATALOGUE if set(t.consumers) & set(SERVICES)
}
# The error classes of deliberate refusals (the services' InvalidInput family); anything else is a crash.
DELIBERATE = re.compile(r"^(Undecodable|Invalid|.*NotFound$)")
MESSAGES: dict[str, type[Message]] = {
    t.name: symbol_database.Default().GetSymbol(t.message) for t in CATALOGUE if t.name in INPUTS
}
# The quick mode runs in `make test`; the long mode (FUZZ_RECORDS_PER_TOPIC=10000 FUZZ_CALLS_PER_METHOD=1000)
# in `make test-faults`.
RECORDS_PER_TOPIC = int(os.environ.get("FUZZ_RECORDS_PER_TOPIC", "40"))
MAX_RECORD_BYTES = 600_000
CALLS_PER_METHOD = int(os.environ.get("FUZZ_CALLS_PER_METHOD", "25"))
PARTITIONS = KitSettings().topic_partitions  # the system runs with this environment too
# Employees of a team no other test uses, so what the fuzz changes (load, usage, delegations) stays theirs.
FZ_AGENT = Employee("fz-agent-fay", "agent", "fz-desk")
FZ_LEAD = Employee("fz-lead-finn", "team_lead", "fz-desk")
FZ_MANAGER = Employee("fz-manager-flo", "manager", "fz-desk")
CALLERS = (FZ_AGENT, FZ_LEAD, FZ_MANAGER)
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
BIG_CHANNEL = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


# ============================================================================================ drawing


def drawn(strategy: st.SearchStrategy, count: int) -> list:
    """Return ``count`` examples of ``strategy``: the same ones on every run (fixed seed, no database)."""
    found: list = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example) -> None:
        found.append(example)

    collect()
    assert len(found) >= count, f"hypothesis gave {len(found)} examples, not {count}"
    return found[:count]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLEAR = _Marker("CLEAR")  # unset the field
PRESENT = _Marker("PRESENT")  # set a message field, empty


@dataclass(frozen=True)
class Count:
    """Make a repeated message field hold this many elements (copies of the first)."""

    n: int


@dataclass(frozen=True)
class Ref:
    """A value known only at run time: a fresh id, or the index-th id of a kind the test created."""

    kind: str
    index: int = 0


Path = tuple[tuple[str, int | None], ...]


@dataclass(frozen=True)
class Leaf:
    """A field reachable from a message: its path (index 0 into repeated messages) and descriptor."""

    path: Path
    field: FieldDescriptor
    count: bool = False  # the edit sets how many elements a repeated message field has
    mapped: bool = False  # a map field (string to string, e.g. a customer text's parameters): the edit sets it whole

    @property
    def dotted(self) -> str:
        return ".".join(f"{n}[{i}]" if i is not None else n for n, i in self.path) + ("#" if self.count else "")


def leaves(descriptor: Descriptor, depth: int = 0, prefix: Path = ()) -> list[Leaf]:
    """Return every field of ``descriptor`` and of its messages down to a depth of three."""
    found = []
    for f in descriptor.fields:
        if f.type != FieldDescriptor.TYPE_MESSAGE:
            found.append(Leaf((*prefix, (f.name, None)), f))
        elif f.message_type.GetOptions().map_entry:
            found.append(Leaf((*prefix, (f.name, None)), f, mapped=True))
        elif depth >= 3:
            found.append(Leaf((*prefix, (f.name, None)), f))
        elif f.is_repeated:
            found.append(Leaf((*prefix, (f.name, None)), f, count=True))
            found += leaves(f.message_type, depth + 1, (*prefix, (f.name, 0)))
        else:
            found += leaves(f.message_type, depth + 1, (*prefix, (f.name, None)))
    return found


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
WILD_TEXT = st.one_of(
    _TEXT,
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "null",
            "-1",
            "9" * 40,
            "'; DROP TABLE inbox; --",
            "\u202etxet",
            "\U0001f600" * 5,
            "line\nbreak",
        ]
    ),
    st.sampled_from([129, 2_001, 4_001, 70_000]).map(lambda n: "x" * n),  # each just over a limit, and huge
)
CURRENCIES = st.one_of(st.sampled_from(["EUR", "eur", "XXX", "EURO", "", "\u20ac", "E R", "XTS"]), _TEXT)
ZONES = st.one_of(
    st.sampled_from(["Europe/Warsaw", "Mars/Olympus", "", "UTC+99", "../etc/passwd", "Etc/GMT+14"]), _TEXT
)
INT32 = st.one_of(st.sampled_from([0, -1, 1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1))
INT64 = st.one_of(st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63), 2**31]), st.integers(-(2**63), 2**63 - 1))
AMOUNTS = st.one_of(st.sampled_from([-1, -(2**63), 2**63 - 1, 10**12, 10**12 + 1, 0, 999]), INT64)
# Timestamp seconds: year 2100, the last second protobuf allows, one past it, far beyond, and before year 1.
SECONDS = st.one_of(st.sampled_from([4_102_444_800, 253_402_300_799, 253_402_300_800, 10**12, -62_135_596_801]), INT64)
NANOS = st.sampled_from([0, -1, 999_999_999, 1_000_000_000, 2**31 - 1])


def scalar(f: FieldDescriptor, refs: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Return wild values for one (non-repeated) field, by its type and name."""
    name, kind = f.name, f.type
    if kind == FieldDescriptor.TYPE_STRING:
        if name in refs:
            return st.one_of(refs[name], WILD_TEXT)
        if name == "currency":
            return CURRENCIES
        if name.endswith("timezone"):
            return ZONES
        return WILD_TEXT
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([-1, 99, 2**31 - 1]), INT32)
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return {"seconds": SECONDS, "amount_minor": AMOUNTS}.get(name, INT64)
    if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return NANOS if name == "nanos" else INT32
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    return st.just(PRESENT)  # a message at the depth limit


def wild(leaf: Leaf, refs: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Return wild values for ``leaf``: unset one time in five, otherwise by type."""
    if leaf.count:
        return st.sampled_from([Count(0), Count(2), Count(51), Count(120)])
    if leaf.mapped:
        entries = st.dictionaries(WILD_TEXT, WILD_TEXT, max_size=4)
        return st.integers(0, 4).flatmap(lambda i: st.just(CLEAR) if i == 0 else entries)
    value = scalar(leaf.field, refs)
    if leaf.field.is_repeated:
        value = st.lists(value, max_size=4) | st.lists(value, min_size=60, max_size=60)
    return st.integers(0, 4).flatmap(lambda i: st.just(CLEAR) if i == 0 else value)


def edits(descriptor: Descriptor, refs: dict[str, st.SearchStrategy], most: int) -> st.SearchStrategy:
    """Return lists of (path, value) edits of up to ``most`` fields of ``descriptor``."""
    found = leaves(descriptor)
    one = st.sampled_from(found).flatmap(lambda leaf: st.tuples(st.just(leaf), wild(leaf, refs)))
    return st.lists(one, max_size=most, unique_by=lambda e: e[0].dotted)


def apply(message: Message, leaf: Leaf, value: Any, resolve: Callable[[Any], Any] = lambda v: v) -> None:
    """Set ``leaf`` of ``message`` to ``value`` (creating the messages on the way)."""
    target = message
    *steps, (name, _) = leaf.path
    for step, index in steps:
        child = getattr(target, step)
        if index is not None:
            while len(child) <= index:
                child.add()
            child = child[index]
        target = child
    if value is CLEAR:
        target.ClearField(name)
    elif isinstance(value, Count):
        container = getattr(target, name)
        if value.n == 0:
            del container[:]
            return
        if not container:
            container.add()
        while len(container) < value.n:
            container.add().CopyFrom(container[0])
    elif value is PRESENT:
        getattr(target, name).SetInParent()
    elif leaf.mapped:
        container = getattr(target, name)
        container.clear()
        container.update(value)
    elif leaf.field.is_repeated:
        container = getattr(target, name)
        del container[:]
        container.extend(resolve(v) for v in value)
    else:
        setattr(target, name, resolve(value))


# ============================================================================================ records

CE_HEADERS = ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type")
HEADER_VALUES: dict[str, list[str]] = {
    "ce_specversion": ["0.3", "", "1", "1.0 ", "1.0\x00"],
    # ce_id variants keep the record's own id in them, so a record is never a duplicate of another by accident.
    "ce_id": ["<empty>", "<huge>", "<not utf-8>", "<nul>", "<spaces>"],
    "ce_type": [
        *sorted(t.message for t in CATALOGUE if t.message),
        "x.Unknown",
        "",
        "recovery.events.v1.failurereported",
        "recovery.events.v1.FailureReported ",
    ],
    # Another system's name is an identity of its own (not a fault); the rest are faults.
    "ce_source": ["", "\x00", "s" * 5000, "billing", "warehouse-eu"],
    "ce_time": [
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-23:59",  # a valid RFC 3339 time past the end of Python's calendar in UTC
        "0001-01-01T00:00:00+14:00",
        "2999-01-01T00:00:00Z",  # far in the future
        "10000-01-01T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00+25:00",
        "yesterday",
        "",
    ],
    "content-type": [
        "application/xml",
        "",
        "application/json; charset=utf-8",
        "APPLICATION/PROTOBUF",
        "application/cloudevents+json",
    ],
}
HEADER_OP = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(CE_HEADERS), st.just(b"")),
    st.tuples(st.just("drop-all"), st.just(""), st.just(b"")),
    st.sampled_from(("set", "again")).flatmap(
        lambda op: st.sampled_from(CE_HEADERS).flatmap(
            lambda name: st.tuples(
                st.just(op),
                st.just(name),
                st.one_of(
                    st.sampled_from(HEADER_VALUES[name]).map(str.encode),
                    st.binary(max_size=24) if name != "ce_id" else st.nothing(),
                ),
            )
        )
    ),
    st.tuples(
        st.just("extra"), st.sampled_from(["x-fuzz", "", "ce_extension", "k\u00e9y", "x-\x00"]), st.binary(max_size=16)
    ),
)
JSON_WILD = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    _TEXT,
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(_TEXT, st.integers(), max_size=2),
    st.sampled_from(
        [
            "9223372036854775808",
            "-9223372036854775809",
            "1e400",
            "NaN",
            "9999-12-31T23:59:59Z",
            "10000-01-01T00:00:00Z",
            "2030-02-30T00:00:00Z",
            "CATEGORY_NOPE",
            "x" * 70_000,
        ]
    ),
)
JSON_OP = st.tuples(st.sampled_from(["replace", "replace", "delete", "unknown-key"]), st.integers(0, 10_000), JSON_WILD)
SHAPES = [
    b"[]",
    b"null",
    b"42",
    b'"text"',
    b"",
    b"\xff\xfe{}",
    b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser recursion
    b'{"customerId": "\\ud800"}',  # a lone surrogate
    b'{"customerId": "a", "customerId": "b"}',
    b"{'single': 'quotes'}",
    b'{"customerId": null, "occurredAt": {}}',
]
BODIES = (
    "proto",
    "proto",
    "proto",
    "json",
    "json",
    "json",
    "structured",  # CloudEvents structured mode: the envelope in the value, the event in its data
    "structured-protobuf",  # the same with the protobuf bytes in data_base64
    "truncated",
    "random",
    "tail",
    "shape",
    "none",
)


@dataclass(frozen=True)
class Recipe:
    """How to make one record out of a topic's template event (drawn; the ids are filled in per run)."""

    body: str
    edits: tuple[tuple[Leaf, Any], ...]
    json_ops: tuple[tuple[str, int, Any], ...]
    cut: float
    raw: bytes
    headers: tuple[tuple[str, str, bytes], ...]

    @property
    def label(self) -> str:
        parts = [self.body]
        if self.body in ("proto", "json", "structured", "structured-protobuf", "truncated", "tail"):
            parts += [f"{leaf.dotted}={_short(v)}" for leaf, v in self.edits]
        if self.body in ("json", "structured"):
            parts += [f"json {op}#{at}={_short(v)}" for op, at, v in self.json_ops]
        parts += [f"{op} {name!r}={_short(v)}" for op, name, v in self.headers]
        return " ".join(parts)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} chars)"


def compact(message: Message) -> str:
    """Return ``message`` on one line, runs of one character counted rather than repeated."""
    text = text_format.MessageToString(message, as_one_line=True)
    return re.sub(r"(.)\1{19,}", lambda m: f"{m.group(1)}<x{len(m.group(0))}>", text)[:600]


def recipes(descriptor: Descriptor) -> st.SearchStrategy[Recipe]:
    return st.builds(
        Recipe,
        body=st.sampled_from(BODIES),
        edits=edits(descriptor, {}, 3).map(tuple),
        json_ops=st.lists(JSON_OP, max_size=2).map(tuple),
        cut=st.floats(0.05, 0.95),
        raw=st.one_of(st.binary(max_size=300), st.sampled_from(SHAPES)),
        headers=st.lists(HEADER_OP, max_size=2).map(tuple),
    )


def template(topic: str, key: str, uid: str, case_id: str = "") -> Message:
    """Return a well-formed event for ``topic`` about a fresh customer (``key``) and case: what a canary sends."""
    case_id = case_id or f"case-fz-{uid}"
    team, owner = f"fz-team-{uid}", f"fz-owner-{uid}"
    employee = common.Actor(kind=common.ACTOR_KIND_EMPLOYEE, employee_id=owner, role="agent", team=team)
    system = common.Actor(kind=common.ACTOR_KIND_SYSTEM)
    classified = common.Classification(
        severity=common.SeverityAssessment(severity=common.SEVERITY_MINOR),
        avoidability=common.AvoidabilityAssessment(avoidability=common.AVOIDABILITY_UNAVOIDABLE),
        outlook=common.OutlookAssessment(outlook=common.OUTLOOK_RECOVERABLE),
        policy_version="fz",
    )
    costs = [common.CostItem(kind=common.COST_KIND_TAXI, amount=eur(500), description="taxi", has_receipt=True)]
    line = common.OfferLineItem(kind=common.REMEDY_KIND_VOUCHER, amount=eur(1_000), rule_id="fz")
    failure = system_failure(key, source_event_id=f"trk-{uid}", reference=f"order-{uid}")
    case = {"customer_id": key, "case_id": case_id}
    offer = {**case, "offer_id": f"offer-fz-{uid}"}
    made: dict[str, Callable[[], Message]] = {
        "recovery.failure-reported.v1": lambda: failure,
        "recovery.case-opened.v1": lambda: events.CaseOpened(
            **case,
            owning_team=team,
            failure_ids=[f"failure-{uid}"],
            source=common.SOURCE_DELIVERY_TRACKING,
            system_detected=True,
            category=common.CATEGORY_LATE_DELIVERY,
            reference=f"order-{uid}",
            occurred_at=ago(hours=3),
            description="parcel missed its delivery slot",
            classification=classified,
            history=common.HistorySummary(),
            reported_costs=costs,
            order_value=eur(3_000),
            customer_timezone=daytime_zone(),
            preferred_channel=common.CHANNEL_EMAIL,
            opened_at=ago(seconds=5),
        ),
        "recovery.case-amended.v1": lambda: events.CaseAmended(
            **case,
            revision=2,
            merged_failure_id=f"failure-{uid}",
            merged_failure=failure,
            failure_ids=[f"failure-0-{uid}", f"failure-{uid}"],
            category=common.CATEGORY_LATE_DELIVERY,
            reference=f"order-{uid}",
            classification=classified,
            history=common.HistorySummary(prior_failure_count=1),
            reported_costs=costs,
            order_value=eur(3_000),
            system_detected=True,
            amended_at=ago(seconds=5),
            customer_timezone=daytime_zone(),
            preferred_channel=common.CHANNEL_EMAIL,
        ),
        "recovery.offer-proposed.v1": lambda: events.OfferProposed(
            **offer, version=1, policy_version="fz", line_items=[line], total=eur(1_000), proposed_at=ago(seconds=5)
        ),
        "recovery.offer-authorized.v1": lambda: events.OfferAuthorized(
            **offer,
            offer_version=1,
            authorized_by=system,
            tier=common.AUTHORIZATION_TIER_SYSTEM,
            amount=eur(1_000),
            line_items=[line],
            team=team,
            authorized_at=ago(seconds=5),
        ),
        "recovery.sla-breached.v1": lambda: events.SlaBreached(
            **case,
            clock=common.SLA_CLOCK_ACKNOWLEDGE,
            deadline_at=ago(minutes=5),
            breached_at=ago(minutes=1),
            severity=common.SEVERITY_MINOR,
            outlook=common.OUTLOOK_RECOVERABLE,
            owner_employee_id=owner,
            team=team,
        ),
        "recovery.case-progressed.v1": lambda: events.CaseProgressed(
            **case,
            stage=common.PROGRESS_STAGE_AWAITING_APPROVAL,
            progressed_at=ago(seconds=5),
            expected_by=ago(seconds=-3_600),
            owner_employee_id=owner,
            customer_timezone=daytime_zone(),
            preferred_channel=common.CHANNEL_EMAIL,
            locale="pl",
        ),
        "recovery.contact-recorded.v1": lambda: events.ContactRecorded(
            customer_id=key,
            contact=common.Contact(
                contact_id=f"contact-fz-{uid}",
                case_id=case["case_id"],
                customer_id=case["customer_id"],
                kind=common.CONTACT_KIND_CALL,
                channel=common.CHANNEL_PHONE,
                outcome=common.CONTACT_OUTCOME_REACHED,
                note="called back",
                employee_id=owner,
                occurred_at=ago(seconds=5),
            ),
            owner_employee_id=owner,
        ),
        "recovery.offer-adjusted.v1": lambda: events.OfferAdjusted(
            **offer,
            offer_version=1,
            adjustment_id=f"adjustment-fz-{uid}",
            adjustment=common.OfferAdjustment(
                gestures=[common.PersonalGesture(description="flowers", amount=eur(500), reason="fz")],
                late_costs=[common.CostItem(kind=common.COST_KIND_TAXI, amount=eur(900))],
            ),
            reason="fz",
            adjusted_by=employee,
            adjusted_at=ago(seconds=5),
        ),
        "recovery.customer-countered.v1": lambda: events.CustomerCountered(
            **offer,
            offer_version=1,
            request=common.CustomerRequest(remedy_kind=common.REMEDY_KIND_REFUND, amount=eur(2_000), text="refund"),
            recorded_by=employee,
            countered_at=ago(seconds=5),
        ),
        "recovery.case-resolved.v1": lambda: events.CaseResolved(
            **case,
            owner_employee_id=owner,
            team=team,
            severity=common.SEVERITY_MINOR,
            outlook=common.OUTLOOK_RECOVERABLE,
            category=common.CATEGORY_LATE_DELIVERY,
            resolved_at=ago(seconds=5),
            resolved_by=employee,
            customer_timezone=daytime_zone(),
            preferred_channel=common.CHANNEL_EMAIL,
            resolution_summary="put right",
            customer_decision=common.CUSTOMER_DECISION_ACCEPTED,
            offer_id=f"offer-fz-{uid}",
            compensation_total=eur(1_000),
            resolution_number=1,
        ),
        "recovery.case-reopened.v1": lambda: events.CaseReopened(
            **case, reason="not satisfied", owner_employee_id=owner, reopened_by=employee, reopened_at=ago(seconds=5)
        ),
        "recovery.case-reopen-requested.v1": lambda: events.CaseReopenRequested(
            **case,
            followup_id=f"followup-fz-{uid}",
            reason="the customer is not satisfied",
            feedback=common.SatisfactionAnswer(score=2, satisfied=False, received_at=ago(seconds=5)),
            comment="still waiting",
            requested_at=ago(seconds=5),
        ),
        "recovery.feedback-received.v1": lambda: events.FeedbackReceived(
            **case,
            feedback_id=f"feedback-fz-{uid}",
            source=common.SOURCE_SURVEY,
            score=9,
            satisfied=True,
            comment="thanks",
            received_at=ago(seconds=5),
        ),
        "recovery.incident-declared.v1": lambda: events.IncidentDeclared(
            customer_id=key,
            incident_id=f"incident-fz-{uid}",
            playbook_id="cancelled_flight",
            declared_by=owner,
            declared_by_role="team_lead",
            reason="fz",
            per_case_limit=eur(50_000),
            limits_policy_version="fz",
            declared_at=ago(seconds=5),
        ),
        "recovery.corrective-action-completed.v1": lambda: events.CorrectiveActionCompleted(
            customer_id=key,
            action_id=f"action-fz-{uid}",
            area=common.Area(component=key.removeprefix("area:component:")),
            description="the slot planner no longer overbooks",
            completed_by=employee,
            completed_at=ago(seconds=5),
        ),
    }
    return made[topic]()


def keyed(outside: Outside) -> dict[str, dict[bytes, list[Seen]]]:
    """Return what ``outside`` has seen so far, per topic and record key."""
    index: dict[str, dict[bytes, list[Seen]]] = defaultdict(dict)
    for topic, records in list(outside.seen.items()):
        for seen in records:
            index[topic].setdefault(seen.record.key, []).append(seen)
    return index


def fresh_key(topic: str) -> tuple[str, str]:
    """Return (record key, uid) for a new record on ``topic``: a fresh customer, or a fresh area."""
    uid = new_id("fz").removeprefix("fz-")
    if topic == "recovery.corrective-action-completed.v1":
        return f"area:component:fz-comp-{uid}", uid
    return f"fz-{uid}", uid


_PARTITIONER = DefaultPartitioner()


def partition_of(key: str) -> int:
    """Return the partition the producer puts ``key`` on (the default partitioner, as Outside's producer)."""
    every = list(range(PARTITIONS))
    return _PARTITIONER(key.encode(), every, every)


def one_key_per_partition(topic: str) -> list[tuple[str, str]]:
    """Return a fresh (key, uid) landing on each partition, in partition order."""
    found: dict[int, tuple[str, str]] = {}
    while len(found) < PARTITIONS:
        key, uid = fresh_key(topic)
        found.setdefault(partition_of(key), (key, uid))
    return [found[p] for p in range(PARTITIONS)]


def headers_for(message: Message, content_type: str, uid: str) -> list[tuple[str, bytes]]:
    # Encoded as protobuf (any edit serialises), then labelled as the body really is: JSON cannot hold every
    # edit (a timestamp out of range), and the body is made elsewhere anyway.
    headers, _, _ = cloudevents.encode(message, source="fuzzer", id=f"evt-fz-{uid}")
    return [(k, content_type.encode() if k == "content-type" else v) for k, v in headers]


def _json_paths(document: Any, prefix: tuple = ()) -> list[tuple]:
    found = []
    items = (
        document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) else ()
    )
    for k, v in items:
        found.append((*prefix, k))
        found += _json_paths(v, (*prefix, k))
    return found


def _json_edit(document: dict, op: str, at: int, value: Any) -> None:
    paths = _json_paths(document)
    if op == "unknown-key" or not paths:
        document[f"fuzz{at}"] = value
        return
    *parents, last = paths[at % len(paths)]
    target = document
    for step in parents:
        target = target[step]
    if op == "delete":
        del target[last]
    else:
        target[last] = value


def materialise(recipe: Recipe, message: Message, uid: str) -> tuple[bytes | None, list]:
    """Return (value, headers) of the record ``recipe`` makes of ``message`` (edited in place)."""
    for leaf, value in recipe.edits:
        apply(message, leaf, value)
    content_type = cloudevents.PROTOBUF
    body = recipe.body
    value: bytes | None
    if body in ("structured", "structured-protobuf"):
        value = _envelope(recipe, message, uid)
        headers: list[tuple[str, bytes]] = [("content-type", cloudevents.STRUCTURED_JSON.encode())]
        return value, _edited_headers(recipe, headers, uid)
    if body == "json":
        try:
            document = json_format.MessageToDict(message)
            for op, at, wild_value in recipe.json_ops:
                _json_edit(document, op, at, wild_value)
            value, content_type = json.dumps(document).encode(), cloudevents.JSON
        except (ValueError, json_format.SerializeToJsonError):  # an edit JSON cannot express (a bad timestamp)
            value = message.SerializeToString()
    elif body == "proto":
        value = message.SerializeToString()
    elif body == "truncated":
        whole = message.SerializeToString()
        value = whole[: max(1, int(len(whole) * recipe.cut))]
    elif body == "tail":
        value = message.SerializeToString() + recipe.raw
    elif body == "random":
        value = recipe.raw
        content_type = cloudevents.JSON if recipe.cut > 0.5 else cloudevents.PROTOBUF
    elif body == "shape":
        value, content_type = SHAPES[int(recipe.cut * len(SHAPES))], cloudevents.JSON
    else:
        value = None
    return value, _edited_headers(recipe, headers_for(message, content_type, uid), uid)


def _envelope(recipe: Recipe, message: Message, uid: str) -> bytes:
    """Return a structured-mode record of ``message``: the CloudEvents envelope with the event as its data."""
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"evt-fz-{uid}",
        "source": "fuzzer",
        "type": message.DESCRIPTOR.full_name,
    }
    if recipe.cut > 0.3:  # time is optional: sometimes there is none
        envelope["time"] = datetime.now(UTC).isoformat()
    if recipe.body == "structured":
        try:
            document = json_format.MessageToDict(message)
        except (ValueError, json_format.SerializeToJsonError):  # an edit JSON cannot express: send it as bytes
            envelope |= {"datacontenttype": "application/protobuf", "data_base64": _b64(message)}
        else:
            for op, at, wild_value in recipe.json_ops:
                _json_edit(document, op, at, wild_value)
            envelope |= {"datacontenttype": "application/json", "data": document}
    else:
        envelope |= {"datacontenttype": "application/protobuf", "data_base64": _b64(message)}
    return json.dumps(envelope).encode()


def _b64(message: Message) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


def _edited_headers(recipe: Recipe, headers: list[tuple[str, bytes]], uid: str) -> list[tuple[str, bytes]]:
    own_id = f"evt-fz-{uid}"
    for op, name, raw in recipe.headers:
        if name == "ce_id" and op in ("set", "again"):
            raw = {
                b"<empty>": b"",
                b"<huge>": (own_id + "x" * 3_000).encode(),
                b"<not utf-8>": own_id.encode() + b"\xff\xfe",
                b"<nul>": (own_id + "\x00").encode(),
                b"<spaces>": f" {own_id} ".encode(),
            }[raw]
        if op == "drop":
            headers = [(k, v) for k, v in headers if k != name]
        elif op == "drop-all":
            headers = []
        elif op == "set":
            headers = [(k, raw if k == name else v) for k, v in headers]
        else:  # "again" repeats a header (the last one wins) and "extra" adds one no one reads
            headers.append((name, raw))
    return headers


def consumers_ce_id(headers: Iterable[tuple[str, bytes]], value: bytes | None = None) -> str | None:
    """Return the ce_id a consumer reads from ``headers`` (or, in structured mode, from the envelope in
    ``value``); None when it cannot read one (so cannot accept)."""
    if cloudevents.structured(headers):
        with contextlib.suppress(Exception):
            found = json.loads(value or b"").get("id")
            return found if isinstance(found, str) and found else None
        return None
    raw = cloudevents.header_map(headers).get("ce_id")
    if not raw:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


@dataclass
class Sent:
    """One record published: where, under which key, how it was made, and the id a consumer would log."""

    topic: str
    key: str
    label: str
    value: bytes | None
    headers: list[tuple[str, bytes]]
    ce_id: str | None
    case_id: str = ""  # the case the record names, when it decodes

    @property
    def partition(self) -> int:
        return partition_of(self.key)

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}] key={self.key} ({self.label})"


def fuzz_batch(topic: str, known_cases: list[tuple[str, str]]) -> list[Sent]:
    """Return the records to publish on ``topic``: one per drawn recipe, each with a fresh key."""
    types = cloudevents.registry(MESSAGES[topic])
    batch = []
    for i, recipe in enumerate(drawn(recipes(MESSAGES[topic].DESCRIPTOR), RECORDS_PER_TOPIC)):
        if known_cases:
            (key, case_id), uid = known_cases[i], new_id("u").removeprefix("u-")
        else:
            (key, uid), case_id = fresh_key(topic), ""
        message = template(topic, key, uid, case_id)
        value, headers = materialise(recipe, message, uid)
        label = recipe.label
        if value is not None and len(value) > MAX_RECORD_BYTES:  # stay well under the broker's record size
            value, label = value[:MAX_RECORD_BYTES], f"{label} (cut to {MAX_RECORD_BYTES} bytes)"
        sent = Sent(topic, key, label, value, headers, consumers_ce_id(headers, value))
        with contextlib.suppress(Exception):  # a record that does not decode names no case
            sent.case_id = getattr(cloudevents.decode(headers, value, types)[1], "case_id", "")
        batch.append(sent)
    return batch


def canary(topic: str, key: str, uid: str, case_id: str = "") -> Sent:
    message = template(topic, key, uid, case_id)
    headers = headers_for(message, cloudevents.PROTOBUF, uid)
    return Sent(
        topic,
        key,
        "canary",
        message.SerializeToString(),
        headers,
        consumers_ce_id(headers),
        getattr(message, "case_id", ""),
    )


# ============================================================================================ observing


def dead_letters(outside: Outside) -> dict[tuple[str, str, str], list[dict[str, str]]]:
    """Return the dead letters seen so far by (original topic, consumer group, key)."""
    found: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for letter in outside.now_seen(DEAD_LETTERS):
        h = letter.headers
        key = (letter.record.key or b"").decode(errors="replace")
        found[(h.get("dlq_original_topic", ""), h.get("dlq_consumer_group", ""), key)].append(h)
    return found


async def inbox(db: asyncpg.Connection, service: str, ce_ids: Iterable[str]) -> set[str]:
    """Return which of ``ce_ids`` ``service``'s consumers recorded as processed (read-only)."""
    wanted = [i for i in ce_ids if "\x00" not in i]  # text cannot hold NUL: such an id is never in an inbox
    if not wanted:
        return set()
    rows = await db.fetch(
        f"SELECT ce_id FROM {service}.inbox WHERE consumer = $1 AND ce_id = ANY($2::text[])", service, wanted
    )
    return {r["ce_id"] for r in rows}


@dataclass
class Outcomes:
    """What each consumer did with each record: dead letters (with their headers) and acceptances."""

    letters: dict[tuple[int, str], list[dict[str, str]]] = field(default_factory=dict)
    accepted: set[tuple[int, str]] = field(default_factory=set)

    def resolved(self, index: int, group: str) -> bool:
        return (index, group) in self.letters or (index, group) in self.accepted


async def observe(outside: Outside, db: asyncpg.Connection, sent: list[Sent], *, timeout: float) -> Outcomes:
    """Wait until every consumer of every record dead-lettered or accepted it; fails naming those that did not."""
    seen = Outcomes()
    deadline = time.monotonic() + timeout
    while True:
        letters = dead_letters(outside)
        for i, record in enumerate(sent):
            for group in INPUTS[record.topic]:
                if found := letters.get((record.topic, group, record.key)):
                    seen.letters[(i, group)] = found
        for group in SERVICES:
            waiting = {r.ce_id for i, r in enumerate(sent) if r.ce_id and group in INPUTS[r.topic]}
            ids = await inbox(db, group, waiting)
            seen.accepted |= {(i, group) for i, r in enumerate(sent) if r.ce_id in ids and group in INPUTS[r.topic]}
        open_ = [(r, g) for i, r in enumerate(sent) for g in INPUTS[r.topic] if not seen.resolved(i, g)]
        if not open_:
            return seen
        if time.monotonic() > deadline:
            open_.sort(key=lambda pair: (pair[0].label == "canary", pair[0].topic, pair[0].partition))
            where = Counter(f"{g} on {r.topic}" for r, g in open_)
            stuck = "\n".join(f"  {g} never took {r.describe()}" for r, g in open_[:15])
            raise AssertionError(
                f"{len(open_)} record(s) neither dead-lettered nor accepted: a consumer stopped: {dict(where)}\n"
                f"batches the consumers keep retrying:\n{problems(outside, retried=True)}\n"
                f"records not taken (the canaries among them were published last):\n{stuck}"
            )
        await asyncio.sleep(0.5)


def problems(outside: Outside, ref: str = "", retried: bool = False) -> str:
    """Return the system's distinct recent errors (message and the exception it ended with), one call's (``ref``)
    or the batches a consumer rolled back (``retried``)."""
    found: dict[str, None] = {}
    for line in outside.system.output:
        if ref and f"(ref {ref})" not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        rolled_back = "rolled back" in entry.get("message", "")
        if ref or rolled_back or (entry.get("level") == "error" and not retried):
            error = (entry.get("error") or "").strip().splitlines()
            text = re.sub(r"retrying in [\d.]+s", "retrying", f"{entry.get('service')}: {entry.get('message')}")
            found[text + (f" <- {error[-1]}" if error else "")] = None
    return "\n".join(list(found)[-15:])


async def offer_authorized_for(outside: Outside, key: str, case_id: str) -> None:
    await outside.wait(
        "recovery.offer-authorized.v1",
        lambda s: for_customer(key)(s) and getattr(s.message, "case_id", None) == case_id,
        timeout=60,
    )


async def history(outside: Outside, customer: str) -> intake_pb2.GetCustomerHistoryResponse:
    return await outside.intake().GetCustomerHistory(
        intake_pb2.GetCustomerHistoryRequest(customer_id=customer), metadata=outside.as_(FZ_AGENT), timeout=30
    )


async def frontline_cases(outside: Outside, keys: list[str]) -> list[tuple[str, str]]:
    """Return (customer, case id) of a frontline case per customer, once escalation knows every one."""
    made = []
    for i, customer in enumerate(keys):
        reporter = Employee(f"fz-reporter-{i % 8}", "agent", "fz-desk")
        reply = await report(outside, reporter, customer, category=common.CATEGORY_BILLING_ERROR, description="fz")
        made.append((customer, reply.case_id, reporter))
    limit = asyncio.Semaphore(16)  # a long run makes thousands: wait for them a few at a time

    async def known(case_id: str, reporter: Employee) -> None:
        async with limit:
            await outside.case(case_id, reporter)

    await asyncio.gather(*(known(case_id, reporter) for _, case_id, reporter in made))
    return [(customer, case_id) for customer, case_id, _ in made]


def _letter(letter: Seen) -> str:
    h = letter.headers
    return f"{h.get('dlq_original_topic')} by {h.get('dlq_consumer_group')}: {_letter_reason(h)}"


def _letter_reason(headers: dict[str, str]) -> str:
    return f"{headers.get('dlq_error_class')}: {headers.get('dlq_reason', '')[:200]}"


# ============================================================================================ gRPC

MODULES = {"intake": intake_pb2, "escalation": cases_pb2, "compensation": compensation_pb2, "followup": followup_pb2}


def every_method() -> list[tuple[str, ServiceDescriptor, MethodDescriptor]]:
    """Return (service process, gRPC service, method) for every method of the four APIs."""
    return [
        (name, service, method)
        for name, module in MODULES.items()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def multicallable(channel: grpc.aio.Channel, service: ServiceDescriptor, method: MethodDescriptor):
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    make = channel.unary_stream if method.server_streaming else channel.unary_unary
    return make(
        f"/{service.full_name}/{method.name}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )


# Ids the test made (cases, offers, follow-ups, customers) or fresh ones, by field name.
REFS: dict[str, st.SearchStrategy] = {
    "request_id": st.just(Ref("fresh")),
    "case_id": st.integers(0, 1).map(lambda i: Ref("case", i)),
    "offer_id": st.integers(0, 1).map(lambda i: Ref("offer", i)),
    "followup_id": st.integers(0, 1).map(lambda i: Ref("followup", i)),
    "customer_id": st.one_of(st.just(Ref("fresh")), st.integers(0, 1).map(lambda i: Ref("customer", i))),
    "owner_employee_id": st.sampled_from([Ref("employee", i) for i in range(len(CALLERS))]),
    "delegate_employee_id": st.sampled_from([Ref("employee", i) for i in range(len(CALLERS))]),
    "to_employee_id": st.sampled_from([Ref("employee", i) for i in range(len(CALLERS))]),
    "team": st.just("fz-desk"),
}


@dataclass(frozen=True)
class Call:
    """One drawn call: who calls, and the edits to the method's plausible request."""

    caller: int
    edits: tuple[tuple[Leaf, Any], ...]


def calls(method: MethodDescriptor) -> list[Call]:
    strategy = st.builds(Call, caller=st.integers(0, len(CALLERS) - 1), edits=edits(method.input_type, REFS, 4))
    return drawn(strategy.map(lambda c: Call(c.caller, tuple(c.edits))), CALLS_PER_METHOD)


@dataclass
class Pool:
    """What the gRPC fuzz refers to: two cases of the fuzz agent (one resolved), their offers and follow-ups."""

    ids: dict[str, list[str]]

    def resolve(self, value: Any) -> Any:
        if not isinstance(value, Ref):
            return value
        if value.kind == "fresh":
            return new_id("fz")
        if value.kind == "employee":
            return CALLERS[value.index].sub
        return self.ids[value.kind][value.index % len(self.ids[value.kind])]


@pytest.fixture(scope="module")
async def pool(outside) -> Pool:
    customers = [new_id("fz-pool"), new_id("fz-pool")]
    costs = [common.CostItem(kind=common.COST_KIND_TAXI, amount=eur(1_500), description="taxi", has_receipt=True)]
    made = []
    for customer in customers:
        reply = await report(outside, FZ_AGENT, customer, category=common.CATEGORY_LATE_DELIVERY, reported_costs=costs)
        made.append(await authorized(outside, reply.case_id, FZ_AGENT))
    await accept_and_resolve(outside, made[0], FZ_AGENT)
    followups = await scheduled(outside, customers[0])
    return Pool(
        {
            "case": [c.case_id for c in made],
            "offer": [c.current_offer.offer_id for c in made],
            "followup": [f.followup_id for f in followups],
            "customer": customers,
        }
    )


def plausible(method: MethodDescriptor, pool: Pool) -> Message:
    """Return a request for ``method`` that names the pool's things and gives the reasons it needs."""
    request = message_factory.GetMessageClass(method.input_type)()
    if method.input_type.full_name == "recovery.intake.v1.ReportFailureRequest":
        request.MergeFrom(
            intake_pb2.ReportFailureRequest(
                category=common.CATEGORY_LATE_DELIVERY,
                occurred_at=ago(hours=1),
                description="parcel late",
                reference=new_id("order"),
                customer_timezone=daytime_zone(),
                preferred_channel=common.CHANNEL_EMAIL,
            )
        )
    texts = {"reason": "fuzz", "resolution_summary": "fuzz", "note": "fuzz", "comment": "fuzz"}
    for f in method.input_type.fields:
        if f.name in texts:
            setattr(request, f.name, texts[f.name])
        elif f.name in REFS and f.name != "team" and f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated:
            if f.name == "request_id" or (f.name == "customer_id" and "reference" in method.input_type.fields_by_name):
                default = Ref("fresh")  # a new request; a report about a new customer
            elif f.name.endswith("employee_id"):
                default = Ref("employee", 0)
            else:
                default = Ref(f.name.removesuffix("_id"), 0)
            setattr(request, f.name, pool.resolve(default))
    if "starts_at" in method.input_type.fields_by_name:
        request.starts_at.CopyFrom(time_to_proto(datetime.now(UTC)))
        request.ends_at.CopyFrom(time_to_proto(datetime.now(UTC) + timedelta(days=1)))
    return request


async def outcome(multi, request: Message, metadata, streaming: bool) -> tuple[grpc.StatusCode, Any]:
    """Return the call's status code and error (None when OK); a stream's first response or error decides."""
    if not streaming:
        try:
            await multi(request, metadata=metadata, timeout=30)
            return grpc.StatusCode.OK, None
        except grpc.aio.AioRpcError as error:
            return error.code(), error
    stream = multi(request, metadata=metadata, timeout=30)
    try:
        await asyncio.wait_for(stream.read(), 1.0)  # the first case, the end, or the error
        return grpc.StatusCode.OK, None
    except TimeoutError:
        return grpc.StatusCode.OK, None  # open and waiting for changes: nothing went wrong
    except grpc.aio.AioRpcError as error:
        return error.code(), error
    finally:
        stream.cancel()


def field_violations(error: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    status = rpc_status.from_call(error)
    found = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += list(bad.field_violations)
    return found


@dataclass
class Tally:
    codes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    wrong: list[str] = field(default_factory=list)
    reports: list[tuple[str, grpc.StatusCode, str]] = field(default_factory=list)  # (customer, code, request)
    refs: list[str] = field(default_factory=list)  # the references of INTERNAL answers, to find their causes


async def fuzz_service(system, outside: Outside, pool: Pool, name: str, tally: Tally) -> None:
    """Make every drawn call of every method of one service, one after another."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{system.grpc_ports[name]}", options=BIG_CHANNEL)
    try:
        for process, service, method in every_method():
            if process != name:
                continue
            multi = multicallable(channel, service, method)
            label = f"{service.name}.{method.name}"
            streams = []
            for drawn_call in calls(method):
                request = plausible(method, pool)
                for leaf, value in drawn_call.edits:
                    apply(request, leaf, value, pool.resolve)
                metadata = outside.as_(CALLERS[drawn_call.caller])
                if method.server_streaming:  # reads only: these may run side by side
                    streams.append((request, outcome(multi, request, metadata, True)))
                    continue
                check(tally, label, request, *(await outcome(multi, request, metadata, False)))
            answers = await asyncio.gather(*(pending for _, pending in streams))
            for (request, _), answer in zip(streams, answers, strict=True):
                check(tally, label, request, *answer)
    finally:
        await channel.close()


def check(tally: Tally, label: str, request: Message, code: grpc.StatusCode, error: Any) -> None:
    tally.codes[label][code.name] += 1
    shown = compact(request)
    if code not in ALLOWED:
        details = error.details() if error else ""
        tally.wrong.append(f"{label} answered {code.name} ({details}) to: {shown}")
        if ref := re.search(r"\(ref (\w+)\)", details or ""):
            tally.refs.append(ref[1])
    elif code is grpc.StatusCode.INVALID_ARGUMENT:
        violations = field_violations(error)
        if not violations or not all(v.field and v.description for v in violations):
            tally.wrong.append(f"{label} INVALID_ARGUMENT without field violations ({error.details()}): {shown}")
    if label == "IntakeService.ReportFailure":
        tally.reports.append((request.customer_id, code, shown))


async def test_every_grpc_method_answers_generated_requests_with_a_deliberate_status(system, outside, pool):
    started = time.monotonic()
    tally = Tally()
    await asyncio.gather(*(fuzz_service(system, outside, pool, name, tally) for name in MODULES))
    fuzzed = time.monotonic()

    # A refused report wrote nothing: its (fresh) customer has no history; an accepted one has.
    fresh = Counter(customer for customer, _, _ in tally.reports)
    for customer, code, shown in tally.reports:
        if not customer.startswith("fz-") or fresh[customer] > 1 or customer in pool.ids["customer"]:
            continue  # the customer id itself was fuzzed: its history is not this report's alone
        found = await history(outside, customer)
        if code is grpc.StatusCode.OK:
            assert found.failures and found.cases, f"accepted report left no history: {shown}"
        else:
            assert not found.failures and not found.cases, f"{code.name} report left history: {shown}\n{found}"

    print(f"\ngRPC calls: {sum(sum(c.values()) for c in tally.codes.values())} to {len(tally.codes)} methods")
    for label in sorted(tally.codes):
        print(f"  {label}: {dict(sorted(tally.codes[label].items()))}")
    print(f"  calls took {fuzzed - started:.1f}s, checks {time.monotonic() - fuzzed:.1f}s")
    assert {label for label in tally.codes} == {f"{s.name}.{m.name}" for _, s, m in every_method()}
    causes = "\n".join(problems(outside, ref) for ref in tally.refs)
    assert not tally.wrong, (
        f"{len(tally.wrong)} call(s) went wrong:\n"
        + "\n".join(tally.wrong)
        + (f"\nwhy (the services' logs):\n{causes}")
    )


async def test_requests_over_the_size_limit_are_resource_exhausted_on_every_service(system, outside):
    limit = KitSettings().grpc_max_message_bytes
    codes: dict[str, str] = {}
    for name in MODULES:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{system.grpc_ports[name]}", options=BIG_CHANNEL)
        try:
            for process, service, method in every_method():
                if process != name:
                    continue
                request = message_factory.GetMessageClass(method.input_type)()
                text = next(
                    leaf for leaf in leaves(method.input_type) if leaf.field.type == FieldDescriptor.TYPE_STRING
                )
                apply(request, text, "x" * (limit + 1024 * 1024))
                assert request.ByteSize() > limit
                code, _ = await outcome(
                    multicallable(channel, service, method), request, outside.as_(FZ_MANAGER), method.server_streaming
                )
                codes[f"{service.name}.{method.name}"] = code.name
        finally:
            await channel.close()
    print(f"\n{len(codes)} methods sent {limit // 1024 // 1024 + 1} MiB: {dict(Counter(codes.values()))}")
    assert set(codes.values()) == {"RESOURCE_EXHAUSTED"}, codes


# ============================================================================================ records: the test
# Last in the file: a consumer a record stops stays stopped for the session, and the gRPC tests' setup needs them.


async def test_every_input_topic_dead_letters_or_accepts_generated_records_and_keeps_consuming(system, outside):
    started = time.monotonic()
    reopen = "recovery.case-reopen-requested.v1"
    # Escalation refuses a reopen request for a case it does not know: those records (and their canaries) name
    # real cases, one per customer.
    reopen_keys = [new_id("fz") for _ in range(RECORDS_PER_TOPIC)]
    known = await frontline_cases(outside, reopen_keys + [key for key, _ in one_key_per_partition(reopen)])

    batch: list[Sent] = []
    for topic in sorted(INPUTS):
        batch += fuzz_batch(topic, known[:RECORDS_PER_TOPIC] if topic == reopen else [])
    assert len({r.key for r in batch}) == len(batch), "every record has its own key"
    canaries: list[Sent] = []
    for topic in sorted(INPUTS):
        if topic == reopen:
            canaries += [canary(topic, key, new_id("u"), case_id) for key, case_id in known[RECORDS_PER_TOPIC:]]
        else:
            canaries += [canary(topic, key, uid) for key, uid in one_key_per_partition(topic)]
    assert sorted(r.partition for r in canaries) == sorted(list(range(PARTITIONS)) * len(INPUTS))
    for record in [*batch, *canaries]:
        assert record.topic in INPUTS

    # In chunks: a long run's hundred thousand sends at once outgrow the producer's buffer and time out.
    for start in range(0, len(batch), 2_000):
        await asyncio.gather(
            *(outside.publish_raw(r.topic, key=r.key, value=r.value, headers=r.headers) for r in batch[start:][:2_000])
        )
    # The canaries go out after the whole batch: on each partition, behind every fuzzed record.
    await asyncio.gather(*(outside.publish_raw(r.topic, key=r.key, value=r.value, headers=r.headers) for r in canaries))
    published = time.monotonic()

    db = await asyncpg.connect(system.database_url, server_settings={"default_transaction_read_only": "on"})
    try:
        # Every consumer took or refused every record, the canaries last (a consumer that stopped never gets to
        # them); every canary was taken (they are valid: none may be dead-lettered).
        # A minute, and more for a long run (a few hundred records a second at worst on this machine).
        everything = await observe(outside, db, [*batch, *canaries], timeout=60 + len(batch) / 100)
        settled = time.monotonic()
        refused = [
            (canaries[i - len(batch)].describe(), g, h[0].get("dlq_reason"))
            for (i, g), h in everything.letters.items()
            if i >= len(batch)
        ]
        assert not refused, f"valid canaries were dead-lettered: {refused}\n{problems(outside)}"
        # ... and processed them end to end.
        for record in canaries:
            if record.topic == "recovery.failure-reported.v1":
                await outside.events("recovery.case-opened.v1", record.key)
                assert (await history(outside, record.key)).failures, record.describe()
            elif record.topic == "recovery.case-opened.v1":
                await outside.wait("recovery.offer-proposed.v1", for_customer(record.key), timeout=60)
                await offer_authorized_for(outside, record.key, record.case_id)
            elif record.topic == "recovery.case-resolved.v1":
                await outside.events("recovery.followup-due.v1", record.key)
        seen = Outcomes(
            {k: v for k, v in everything.letters.items() if k[0] < len(batch)},
            {k for k in everything.accepted if k[0] < len(batch)},
        )

        # Exactly one outcome per record and consumer; a dead letter says why.
        for (i, group), letters in seen.letters.items():
            record = batch[i]
            assert (i, group) not in seen.accepted, f"{group} both accepted and dead-lettered {record.describe()}"
            assert len(letters) == 1, f"{group} dead-lettered {record.describe()} {len(letters)} times"
            assert letters[0].get("dlq_reason") and letters[0].get("dlq_error_class"), (record.describe(), letters)
            # The partition the test computed (and put a canary behind) is where the record went.
            assert letters[0].get("dlq_original_partition") == str(record.partition), record.describe()

        # Everything seen so far by topic and key, once: a long run's checks then stay linear in its records.
        by_key = keyed(outside)
        # A record every consumer refused changed nothing: no event anywhere but its own record and dead letters.
        refused_by_all = [i for i, r in enumerate(batch) if all((i, g) in seen.letters for g in INPUTS[r.topic])]
        shared_cases = Counter(r.case_id for r in batch)
        for i in refused_by_all:
            record = batch[i]
            key = record.key.encode()
            assert len(by_key[record.topic].get(key, ())) == 1, record.describe()
            if record.topic == reopen:
                continue  # its customer has a real case, with events of its own: escalation's refusal is shown above
            for topic, seen_by_key in by_key.items():
                if topic not in (record.topic, DEAD_LETTERS):
                    caused = seen_by_key.get(key, ())
                    assert not caused, f"{record.describe()} was dead-lettered but caused {topic}: {caused[0].message}"
            if record.topic == "recovery.failure-reported.v1":
                found = await history(outside, record.key)
                assert not found.failures and not found.cases, f"{record.describe()} left history: {found}"
        # Escalation opened no case for a case-opened record it refused (unless another record names that case).
        for i, group in seen.letters:
            record = batch[i]
            if group == "escalation" and record.topic == "recovery.case-opened.v1" and record.case_id:
                if shared_cases[record.case_id] == 1 and len(record.case_id) <= 128 and "\x00" not in record.case_id:
                    with pytest.raises(grpc.aio.AioRpcError) as refused_case:
                        await outside.cases().GetCase(
                            cases_pb2.GetCaseRequest(case_id=record.case_id), metadata=outside.as_(FZ_MANAGER)
                        )
                    assert refused_case.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)

        # A failure intake accepted is a case, and every service downstream takes the events it causes.
        downstream_letters = []
        for i, record in enumerate(batch):
            if record.topic == "recovery.failure-reported.v1" and (i, "intake") in seen.accepted:
                if not by_key["recovery.case-opened.v1"].get(record.key.encode()):
                    await outside.wait("recovery.case-opened.v1", for_customer(record.key), timeout=30)
                assert (await history(outside, record.key)).failures, record.describe()
            if any((i, g) in seen.accepted for g in INPUTS[record.topic]):
                for letter in by_key[DEAD_LETTERS].get(record.key.encode(), ()):
                    if letter.headers.get("dlq_original_topic") != record.topic:
                        downstream_letters.append((record, letter))
    finally:
        await db.close()

    print(f"\nfuzzed records: {len(batch)} on {len(INPUTS)} topics, {len(canaries)} canaries")
    for topic in sorted(INPUTS):
        indexes = [i for i, r in enumerate(batch) if r.topic == topic]
        per_group = ", ".join(
            f"{g} {sum((i, g) in seen.letters for i in indexes)} dead-lettered / "
            f"{sum((i, g) in seen.accepted for i in indexes)} accepted"
            for g in INPUTS[topic]
        )
        print(f"  {topic}: {len(indexes)} records; {per_group}")
    classes = Counter(letters[0].get("dlq_error_class") for letters in seen.letters.values())
    print(f"  dead-letter error classes: {dict(classes.most_common())}")
    for (i, group), letters in sorted(seen.letters.items()):
        if not DELIBERATE.match(letters[0].get("dlq_error_class", "")):  # a crash, dead-lettered by the harness
            print(f"  {group} crashed on {batch[i].describe()}: {_letter_reason(letters[0])}")
    for record, letter in downstream_letters:
        print(f"  downstream of accepted {record.describe()}: {_letter(letter)}")
    print(
        f"  published in {published - started:.1f}s, all taken or refused {settled - published:.1f}s later "
        f"(total {time.monotonic() - started:.1f}s)"
    )
    external = [(r, letter) for r, letter in downstream_letters if r.topic == "recovery.failure-reported.v1"]
    assert not external, "a failure intake accepted was refused downstream:\n" + "\n".join(
        f"{r.describe()}: {_letter(letter)}" for r, letter in external
    )
