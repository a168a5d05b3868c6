"""The running system seen from outside: what other systems publish, what the frontline calls, what
notification systems read. The end-to-end tests and the demo drive the system only through this.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from google.protobuf import symbol_database
from google.protobuf.message import Message
from recovery.compensation.v1 import compensation_pb2_grpc
from recovery.escalation.v1 import escalation_pb2 as cases_pb2
from recovery.escalation.v1 import escalation_pb2_grpc
from recovery.events.v1 import common_pb2
from recovery.followup.v1 import followup_pb2_grpc
from recovery.intake.v1 import intake_pb2_grpc

from services.common import cloudevents
from services.common.errors import UndecodableRecord
from services.common.topics import CATALOGUE
from tests.support.system import System

DEAD_LETTERS = "recovery.deadletter.v1"
DUE = "recovery.followup-due.v1"


def new_id(prefix: str) -> str:
    """Return a fresh id such as ``cust-1a2b3c4d5e``."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def daytime_zone(now: datetime | None = None) -> str:
    """Return an IANA zone where it is early afternoon now, so quiet hours never push a follow-up."""
    hour = (now or datetime.now(UTC)).hour
    offset = 13 - hour  # local hour = UTC hour + offset; always within -10..+13
    if offset == 0:
        return "Etc/UTC"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # POSIX sign: Etc/GMT-3 is UTC+3


@dataclass(frozen=True)
class Employee:
    """Someone calling the gRPC API: their id, role and team (the token's claims)."""

    sub: str
    role: str
    team: str


@dataclass
class Seen:
    """One record read from a topic, with its message decoded when it was a well-formed event."""

    record: ConsumerRecord
    message: Message | None

    @property
    def headers(self) -> dict[str, str]:
        return {k: v.decode(errors="replace") for k, v in self.record.headers or ()}


@dataclass
class Outside:
    """Producers of other systems, stubs of the frontline UI, and a reader of every topic from the start."""

    system: System
    seen: dict[str, list[Seen]] = field(default_factory=dict)
    _producer: AIOKafkaProducer | None = None
    _consumer: AIOKafkaConsumer | None = None
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _reader: asyncio.Task | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __aenter__(self) -> Outside:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.system.kafka, acks="all", enable_idempotence=False)
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.system.kafka, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self._consumer.start()
        partitions = []
        for t in CATALOGUE:
            self.seen[t.name] = []
            found = self._consumer.partitions_for_topic(t.name) or await self._partitions(t.name)
            partitions += [TopicPartition(t.name, p) for p in found]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning()
        self._reader = asyncio.create_task(self._read())
        for service, port in self.system.grpc_ports.items():
            self._channels[service] = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return self

    async def __aexit__(self, *exc) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for ch in self._channels.values():
            await ch.close()
        if self._consumer:
            await self._consumer.stop()
        if self._producer:
            await self._producer.stop()

    async def _partitions(self, name: str) -> set[int]:
        await self._consumer._client.force_metadata_update()  # a fresh client may not know every topic yet
        return self._consumer.partitions_for_topic(name) or set()

    async def _read(self) -> None:
        types = {t.name: _registry(t.message) for t in CATALOGUE}
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            if not batch:
                continue
            for records in batch.values():
                for record in records:
                    self.seen[record.topic].append(Seen(record, _decoded(record, types[record.topic])))
            async with self._arrived:
                self._arrived.notify_all()

    # ------------------------------------------------------------------------------ other systems

    async def publish(
        self,
        topic: str,
        message: Message,
        *,
        source: str,
        content_type: str = cloudevents.PROTOBUF,
        key: str | None = None,
    ) -> str:
        """Publish ``message`` as CloudEvents binary mode, as another internal system would; returns its ce_id."""
        headers, value, event_id = cloudevents.encode(message, source=source, content_type=content_type)
        await self.publish_raw(topic, key=key or message.customer_id, value=value, headers=headers)
        return event_id

    async def publish_raw(self, topic: str, *, key: str, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        """Publish exactly these bytes (malformed records included)."""
        await self._producer.send_and_wait(topic, value, key=key.encode(), headers=headers)

    # ------------------------------------------------------------------------------ notification systems

    async def wait(
        self, topic: str, match: Callable[[Seen], bool] = lambda s: True, *, count: int = 1, timeout: float = 60
    ) -> list[Seen]:
        """Return the records of ``topic`` that ``match`` once at least ``count`` arrived; fails after ``timeout``."""
        async with asyncio.timeout(timeout), self._arrived:
            while len(found := [s for s in self.seen[topic] if match(s)]) < count:
                await self._arrived.wait()
        return found

    async def events(self, topic: str, customer_id: str, *, count: int = 1, timeout: float = 60) -> list[Message]:
        """Return the decoded events of ``topic`` for one customer once ``count`` arrived."""
        found = await self.wait(topic, for_customer(customer_id), count=count, timeout=timeout)
        return [s.message for s in found]

    async def until(self, check: Callable[[], Awaitable[object]], *, timeout: float = 60, interval: float = 0.2):
        """Return ``check()``'s first truthy result (a read of a service that catches up on its own); fails after
        ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(interval)

    async def followups(self, customer_id: str, *, count: int = 1, timeout: float = 60) -> list[Message]:
        """Return the customer's due check-ins, notes and notices (not progress updates) once ``count`` arrived."""
        found = await self.wait(DUE, not_progress(for_customer(customer_id)), count=count, timeout=timeout)
        return [s.message for s in found]

    async def progress(self, customer_id: str, *, count: int = 1, timeout: float = 60) -> list[Message]:
        """Return the customer's due progress updates once ``count`` arrived."""
        mine = for_customer(customer_id)
        kind = common_pb2.FOLLOWUP_KIND_PROGRESS_UPDATE
        found = await self.wait(DUE, lambda s: mine(s) and s.message.kind == kind, count=count, timeout=timeout)
        return [s.message for s in found]

    def now_seen(self, topic: str, match: Callable[[Seen], bool] = lambda s: True) -> list[Seen]:
        """Return what has arrived on ``topic`` so far that matches."""
        return [s for s in self.seen[topic] if match(s)]

    # ------------------------------------------------------------------------------ the frontline UI

    def intake(self) -> intake_pb2_grpc.IntakeServiceStub:
        return intake_pb2_grpc.IntakeServiceStub(self._channels["intake"])

    def cases(self) -> escalation_pb2_grpc.CaseServiceStub:
        return escalation_pb2_grpc.CaseServiceStub(self._channels["escalation"])

    def compensation(self) -> compensation_pb2_grpc.CompensationServiceStub:
        return compensation_pb2_grpc.CompensationServiceStub(self._channels["compensation"])

    def followup(self) -> followup_pb2_grpc.FollowupServiceStub:
        return followup_pb2_grpc.FollowupServiceStub(self._channels["followup"])

    def as_(self, who: Employee) -> list[tuple[str, str]]:
        """Return call metadata carrying ``who``'s token."""
        return self.system.token(sub=who.sub, role=who.role, team=who.team)

    async def case(
        self, case_id: str, who: Employee, until: Callable[[cases_pb2.Case], bool] = lambda c: True, timeout=60
    ) -> cases_pb2.Case:
        """Return escalation's view of the case once ``until`` holds (the case may not have arrived yet)."""
        last = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        reply = await self.cases().GetCase(
                            cases_pb2.GetCaseRequest(case_id=case_id), metadata=self.as_(who), timeout=10
                        )
                        last = reply.case
                        if until(last):
                            return last
                    except grpc.aio.AioRpcError as error:
                        if error.code() is not grpc.StatusCode.NOT_FOUND:
                            raise
                    await asyncio.sleep(0.2)
        except TimeoutError:
            problems = "".join(line for line in self.system.output if "ERROR" in line or "WARNING" in line)[-3000:]
            raise AssertionError(
                f"case {case_id} never reached the expected state; last seen:\n{last}\nsystem problems:\n{problems}"
            ) from None


async def read_to_end(bootstrap: str, topic: str, keys: set[str], *, timeout: float = 60) -> list[ConsumerRecord]:
    """Every record of ``topic`` keyed by one of ``keys``, from the beginning to the topic's current end."""
    wanted = {k.encode() for k in keys}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fresh cluster metadata, so the topic's partitions are known
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = []
        async with asyncio.timeout(timeout):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                    found.extend(r for r in records if r.key in wanted)
        return found
    finally:
        await consumer.stop()


def for_customer(customer_id: str) -> Callable[[Seen], bool]:
    """Match records keyed by ``customer_id``."""
    key = customer_id.encode()
    return lambda s: s.record.key == key


def not_progress(match: Callable[[Seen], bool]) -> Callable[[Seen], bool]:
    """Match what ``match`` does among follow-ups, except progress updates (they come as a case moves)."""
    return lambda s: match(s) and s.message is not None and s.message.kind != common_pb2.FOLLOWUP_KIND_PROGRESS_UPDATE


def of_case(case_id: str) -> Callable[[Seen], bool]:
    """Match events about one case."""
    return lambda s: s.message is not None and getattr(s.message, "case_id", None) == case_id


def _registry(message_name: str) -> dict[str, type[Message]]:
    if not message_name:
        return {}
    return cloudevents.registry(symbol_database.Default().GetSymbol(message_name))


def _decoded(record: ConsumerRecord, types: dict[str, type[Message]]) -> Message | None:
    if not types:
        return None
    try:
        return cloudevents.decode(record.headers, record.value, types)[1]
    except UndecodableRecord:
        return None
