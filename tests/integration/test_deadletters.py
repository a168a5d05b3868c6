"""The dead-letter tool over the real broker: list with reasons, replay to the original topic untouched."""

from __future__ import annotations

import json
import uuid

import pytest

from services import deadletters
from services.common import deadletter
from services.common.deadletter import RawRecord, deadletter_record
from services.common.errors import InvalidInput, UndecodableRecord
from services.common.kafka import ensure_topics
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.integration


async def test_dead_letters_are_listed_with_reasons_and_replayed_to_their_topic(settings, topic, producer, capsys):
    await ensure_topics(settings, [deadletter.DEADLETTER_TOPIC])
    group = f"group-{uuid.uuid4().hex[:8]}"
    failures = [
        (b"one", InvalidInput("amount: must not be negative")),
        (b"two", InvalidInput("currency: unknown ISO-4217 currency 'EUX'")),
        (b"\xff", UndecodableRecord("missing header ce_specversion")),
    ]
    for offset, (value, error) in enumerate(failures):
        original = RawRecord(
            topic=topic,
            partition=1,
            offset=offset,
            key=b"cust-1",
            value=value,
            headers=(("ce_id", f"ce-{offset}".encode()), ("ce_type", b"x.y")),
        )
        dead = deadletter_record(original, group=group, error=error)
        await producer.send_and_wait(dead.topic, dead.value, key=dead.key, headers=list(dead.headers))

    assert await deadletters.run(["list", "--group", group, "--json"], settings) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["reason"] for d in listed] == [
        "amount: must not be negative",
        "currency: unknown ISO-4217 currency 'EUX'",
        "missing header ce_specversion",
    ]
    assert {d["original"] for d in listed} == {f"{topic}[1]@0", f"{topic}[1]@1", f"{topic}[1]@2"}

    # After a fix: replay the two that failed validation, not the garbage.
    assert await deadletters.run(["replay", "--group", group, "--error-class", "InvalidInput"], settings) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    replayed = await read_topic(settings.kafka_bootstrap_servers, topic, until=lambda rs: len(rs) >= 2, settle=0.5)
    assert sorted(r.value for r in replayed) == [b"one", b"two"]
    for record in replayed:
        assert record.key == b"cust-1"
        assert [k for k, _ in record.headers] == ["ce_id", "ce_type"]  # original headers only, ce_id unchanged

    # One picked by its position on the dead-letter topic.
    garbage = listed[2]["at"]
    assert await deadletters.run(["replay", "--at", garbage, "--dry-run"], settings) == 0
    assert capsys.readouterr().out.strip() == f"would replay {garbage} -> {topic}[1]@2"
