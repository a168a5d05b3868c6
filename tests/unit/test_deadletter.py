"""Dead-letter records: original bytes and headers kept, where-from and why added once, readable back."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime

from services.__main__ import _without_password
from services.common import deadletter
from services.common.deadletter import RawRecord, deadletter_record, describe
from services.common.errors import UndecodableRecord
from services.common.logs import JsonFormatter, redact

FAILED_AT = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
ORIGINAL_HEADERS = (
    ("ce_specversion", b"1.0"),
    ("ce_id", b"evt-123"),
    ("ce_type", b"recovery.events.v1.FailureReported"),
    ("traceparent", b"00-abc-def-01"),
    ("binary", b"\x00\xff\xfe"),
)
DLQ_HEADERS = {
    "dlq_original_topic",
    "dlq_original_partition",
    "dlq_original_offset",
    "dlq_consumer_group",
    "dlq_error_class",
    "dlq_reason",
    "dlq_failed_at",
}


class PolicyBroken(Exception):
    pass


def raw(**changes) -> RawRecord:
    fields = {
        "topic": "recovery.failure-reported.v1",
        "partition": 4,
        "offset": 1017,
        "key": b"cust-42",
        "value": b"\x0a\x07cust-42\xff not even valid protobuf",
        "headers": ORIGINAL_HEADERS,
    }
    fields.update(changes)
    return RawRecord(**fields)


def test_keeps_original_bytes_headers_and_key_and_adds_where_from_and_why():
    record = deadletter_record(raw(), group="intake", error=UndecodableRecord("missing header ce_time"), now=FAILED_AT)
    assert record.topic == deadletter.DEADLETTER_TOPIC == "recovery.deadletter.v1"
    assert record.key == b"cust-42"
    assert record.value == raw().value
    assert record.headers[: len(ORIGINAL_HEADERS)] == ORIGINAL_HEADERS
    added = dict(record.headers[len(ORIGINAL_HEADERS) :])
    assert added == {
        "dlq_original_topic": b"recovery.failure-reported.v1",
        "dlq_original_partition": b"4",
        "dlq_original_offset": b"1017",
        "dlq_consumer_group": b"intake",
        "dlq_error_class": b"UndecodableRecord",
        "dlq_reason": b"missing header ce_time",
        "dlq_failed_at": FAILED_AT.isoformat().encode(),
    }


def test_the_dead_letter_keeps_the_original_ce_id():
    assert deadletter_record(raw(), group="g", error=ValueError("bad")).ce_id == "evt-123"


def test_without_a_ce_id_the_record_position_is_the_id():
    no_id = tuple((k, v) for k, v in ORIGINAL_HEADERS if k != "ce_id")
    for headers in (no_id, (*no_id, ("ce_id", b""))):
        record = deadletter_record(raw(headers=headers), group="g", error=ValueError("bad"))
        assert record.ce_id == "recovery.failure-reported.v1/4/1017"


def test_a_record_without_headers_key_or_value_still_dead_letters():
    record = deadletter_record(raw(headers=(), key=None, value=None), group="g", error=ValueError("bad"))
    assert record.key is None
    assert record.value == b""
    assert record.ce_id == "recovery.failure-reported.v1/4/1017"
    assert {k for k, _ in record.headers} == DLQ_HEADERS


def test_reason_is_the_error_message_then_its_text_then_its_class():
    def reason(error: BaseException) -> str:
        return describe(deadletter_record(raw(), group="g", error=error).headers)["dlq_reason"]

    assert reason(UndecodableRecord("record has no value")) == "record has no value"
    assert reason(KeyError("customer_id")) == "'customer_id'"
    assert reason(PolicyBroken()) == "PolicyBroken"


def test_a_very_long_reason_is_truncated():
    error = ValueError("x" * 100_000)
    record = deadletter_record(raw(), group="g", error=error)
    reason = dict(record.headers)["dlq_reason"]
    assert len(reason) == deadletter.MAX_REASON_BYTES
    assert reason == b"x" * deadletter.MAX_REASON_BYTES


def test_a_truncated_multibyte_reason_is_still_valid_utf8():
    record = deadletter_record(raw(), group="g", error=ValueError("€" * 5_000))  # 3 bytes each; 2048 % 3 == 2
    reason = dict(record.headers)["dlq_reason"]
    assert len(reason) <= deadletter.MAX_REASON_BYTES
    assert reason.decode("utf-8").startswith("€" * 600)


def test_a_replayed_dead_letter_failing_again_keeps_one_set_of_dlq_headers_the_newest():
    first = deadletter_record(raw(), group="intake", error=ValueError("first failure"), now=FAILED_AT)
    replayed = RawRecord(
        topic="recovery.failure-reported.v1",
        partition=1,
        offset=99,
        key=first.key,
        value=first.value,
        headers=first.headers,
    )
    later = datetime(2025, 11, 4, tzinfo=UTC)
    second = deadletter_record(replayed, group="intake-replay", error=PolicyBroken("second failure"), now=later)

    counts = Counter(k for k, _ in second.headers)
    assert all(counts[name] == 1 for name in DLQ_HEADERS), counts
    assert second.headers[: len(ORIGINAL_HEADERS)] == ORIGINAL_HEADERS
    assert len(second.headers) == len(ORIGINAL_HEADERS) + len(DLQ_HEADERS)
    assert second.value == raw().value
    assert second.ce_id == "evt-123"
    assert describe(second.headers) == {
        "dlq_original_topic": "recovery.failure-reported.v1",
        "dlq_original_partition": "1",
        "dlq_original_offset": "99",
        "dlq_consumer_group": "intake-replay",
        "dlq_error_class": "PolicyBroken",
        "dlq_reason": "second failure",
        "dlq_failed_at": later.isoformat(),
    }


def test_describe_reads_the_dead_letter_fields_back_and_ignores_the_rest():
    record = deadletter_record(raw(), group="escalation", error=ValueError("bad amount"), now=FAILED_AT)
    assert describe(record.headers) == {
        "dlq_original_topic": "recovery.failure-reported.v1",
        "dlq_original_partition": "4",
        "dlq_original_offset": "1017",
        "dlq_consumer_group": "escalation",
        "dlq_error_class": "ValueError",
        "dlq_reason": "bad amount",
        "dlq_failed_at": FAILED_AT.isoformat(),
    }
    assert describe(ORIGINAL_HEADERS) == {}


def test_without_now_the_failure_time_is_the_current_utc_time():
    before = datetime.now(UTC)
    record = deadletter_record(raw(), group="g", error=ValueError("bad"))
    failed_at = datetime.fromisoformat(describe(record.headers)["dlq_failed_at"])
    assert before <= failed_at <= datetime.now(UTC)


def test_a_reason_that_quotes_a_card_number_an_iban_or_a_token_keeps_them_out():
    quoted = UndecodableRecord(
        'Couldn\'t parse integer: "card 4111 1111 1111 1111, refund to LT12 1000 0111 0100 1000"'
        " (sent with Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJlIn0.c2ln)"
    )
    reason = describe(deadletter_record(raw(), group="g", error=quoted).headers)["dlq_reason"]
    assert "4111" not in reason and "LT12" not in reason and "eyJ" not in reason
    assert reason.startswith("Couldn't parse integer") and reason.count("[redacted]") == 3


def test_log_lines_are_redacted_too():
    formatter = JsonFormatter("intake")
    line = logging.LogRecord("x", logging.WARNING, __file__, 1, "dead-lettering: %s", ("4111-1111-1111-1111",), None)
    entry = json.loads(formatter.format(line))
    assert entry["message"] == "dead-lettering: [redacted]"
    assert redact("order 12345, case c-1, 2026-11-23T12:00:00") == "order 12345, case c-1, 2026-11-23T12:00:00"


def test_make_run_prints_the_database_url_without_its_password():
    assert _without_password("postgresql://svc:s3cret@db:5432/recovery") == "postgresql://svc:***@db:5432/recovery"
    assert _without_password("postgresql://postgres@127.0.0.1:5432/postgres").endswith(
        "postgres@127.0.0.1:5432/postgres"
    )


def test_a_nul_in_a_header_name_or_the_ce_id_still_leaves_a_storable_dead_letter():
    headers = (("ce_id", b"evt-1\x00"), ("x-\x00", b"v"))
    record = deadletter_record(raw(headers=headers), group="g", error=UndecodableRecord("bad"))
    assert "\x00" not in record.ce_id and all("\x00" not in k for k, _ in record.headers)
