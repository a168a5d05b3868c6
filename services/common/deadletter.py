"""Dead-letter records: the original bytes and headers, plus where they came from and why they failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common.logs import redact
from services.common.outbox import OutgoingRecord

DEADLETTER_TOPIC = "recovery.deadletter.v1"
# Header names added to the original headers; the replay tool reads them back.
ORIGINAL_TOPIC = "dlq_original_topic"
ORIGINAL_PARTITION = "dlq_original_partition"
ORIGINAL_OFFSET = "dlq_original_offset"
CONSUMER_GROUP = "dlq_consumer_group"
ERROR_CLASS = "dlq_error_class"
REASON = "dlq_reason"
FAILED_AT = "dlq_failed_at"
_ADDED = (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET, CONSUMER_GROUP, ERROR_CLASS, REASON, FAILED_AT)
MAX_REASON_BYTES = 2048


@dataclass(frozen=True)
class RawRecord:
    """A Kafka record as it arrived, before any decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def deadletter_record(
    record: RawRecord, *, group: str, error: BaseException, now: datetime | None = None
) -> OutgoingRecord:
    """Return the dead-letter record for ``record``, which ``group`` could not process because of ``error``."""
    text = redact(getattr(error, "message", None) or str(error) or type(error).__name__)
    # Cut on a character boundary so the header stays valid UTF-8.
    reason = text.encode()[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode()
    # A record that is itself a dead letter replayed and failing again keeps only the newest failure.
    # Header names are stored as text: a NUL in one (the record was dead-lettered for less) must not make the
    # dead letter itself unstorable, which would stop the consumer on this record for ever.
    original = tuple((k.replace("\x00", "\ufffd"), v) for k, v in record.headers if k not in _ADDED)
    added = (
        (ORIGINAL_TOPIC, record.topic.encode()),
        (ORIGINAL_PARTITION, str(record.partition).encode()),
        (ORIGINAL_OFFSET, str(record.offset).encode()),
        (CONSUMER_GROUP, group.encode()),
        (ERROR_CLASS, type(error).__name__.encode()),
        (REASON, reason),
        (FAILED_AT, (now or datetime.now(UTC)).isoformat().encode()),
    )
    ce_id = dict(original).get("ce_id", b"").decode("utf-8", "replace").replace("\x00", "")
    return OutgoingRecord(
        topic=DEADLETTER_TOPIC,
        key=record.key,
        value=record.value or b"",
        headers=original + added,
        ce_id=ce_id or f"{record.topic}/{record.partition}/{record.offset}",
    )


def describe(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Return the dead-letter fields of a dead-lettered record's headers, as text."""
    found = {k: v.decode("utf-8", "replace") for k, v in headers if k in _ADDED}
    return found


def original(headers: Sequence[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Return a dead letter's original headers: what to publish again when replaying it."""
    return tuple((k, v) for k, v in headers if k not in _ADDED)


@dataclass(frozen=True)
class Selection:
    """Which dead letters to act on; an empty field matches everything."""

    original_topic: str = ""
    group: str = ""
    error_class: str = ""
    reason_contains: str = ""
    key: str = ""
    positions: frozenset[tuple[int, int]] = frozenset()  # (dead-letter partition, offset)

    def matches(self, *, partition: int, offset: int, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> bool:
        """Return True when the dead letter at (partition, offset) is selected."""
        fields = describe(headers)
        wanted = (
            (self.original_topic, fields.get(ORIGINAL_TOPIC, "")),
            (self.group, fields.get(CONSUMER_GROUP, "")),
            (self.error_class, fields.get(ERROR_CLASS, "")),
            (self.key, (key or b"").decode("utf-8", "replace")),
        )
        if any(want and want != have for want, have in wanted):
            return False
        if self.reason_contains and self.reason_contains not in fields.get(REASON, ""):
            return False
        return not self.positions or (partition, offset) in self.positions
