"""``python -m services.deadletters``: list dead-lettered records with their reasons, and replay them.

    python -m services.deadletters list   [filters] [--json]
    python -m services.deadletters replay [filters] [--at P:O ...] [--dry-run]

Filters: ``--topic`` (the original topic), ``--group`` (the consumer that gave up), ``--error-class``,
``--reason`` (a substring), ``--key``. ``--at P:O`` picks single dead letters by their partition and offset
on recovery.deadletter.v1 (as ``list`` shows them). ``replay`` re-publishes each selected record to its
original topic with its original key, value and headers (so its ``ce_id`` is unchanged: a consumer that
already applied it skips it), after the fix that makes it acceptable is deployed. A record that still fails
is dead-lettered again with the new reason. Reads ``KAFKA_*`` settings like the services.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.common import deadletter
from services.common.deadletter import DEADLETTER_TOPIC, Selection
from services.common.kafka import client_options
from services.common.settings import KitSettings


async def read_all(settings: KitSettings, topic: str = DEADLETTER_TOPIC) -> list:
    """Return every record now on ``topic``, partition by partition, oldest first."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        records = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(r for r in batch if r.offset < ends[TopicPartition(r.topic, r.partition)])
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def selected(records: Sequence, selection: Selection) -> list:
    """Return the dead letters ``selection`` picks."""
    return [
        r
        for r in records
        if selection.matches(partition=r.partition, offset=r.offset, key=r.key, headers=r.headers or ())
    ]


def describe_record(record) -> dict[str, str]:
    """Return one dead letter as the fields ``list`` prints."""
    fields = deadletter.describe(record.headers or ())
    return {
        "at": f"{record.partition}:{record.offset}",
        "failed_at": fields.get(deadletter.FAILED_AT, ""),
        "group": fields.get(deadletter.CONSUMER_GROUP, ""),
        "original": (
            f"{fields.get(deadletter.ORIGINAL_TOPIC, '')}[{fields.get(deadletter.ORIGINAL_PARTITION, '')}]"
            f"@{fields.get(deadletter.ORIGINAL_OFFSET, '')}"
        ),
        "key": (record.key or b"").decode("utf-8", "replace"),
        "error_class": fields.get(deadletter.ERROR_CLASS, ""),
        "reason": fields.get(deadletter.REASON, ""),
    }


async def replay(settings: KitSettings, records: Sequence) -> list[str]:
    """Publish each dead letter again to its original topic (acks=all); returns what was sent where."""
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", enable_idempotence=settings.kafka_enable_idempotence
    )
    await producer.start()
    sent = []
    try:
        for record in records:
            topic = deadletter.describe(record.headers or ())[deadletter.ORIGINAL_TOPIC]
            await producer.send_and_wait(
                topic, record.value, key=record.key, headers=list(deadletter.original(record.headers or ()))
            )
            sent.append(f"{record.partition}:{record.offset} -> {topic}")
    finally:
        await producer.stop()
    return sent


def _positions(values: Sequence[str]) -> frozenset[tuple[int, int]]:
    found = set()
    for value in values:
        partition, _, offset = value.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise SystemExit(f"--at takes PARTITION:OFFSET, got {value!r}")
        found.add((int(partition), int(offset)))
    return frozenset(found)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.deadletters", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("list", "print the selected dead letters"), ("replay", "re-publish the selected ones")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--topic", default="", help="original topic")
        command.add_argument("--group", default="", help="consumer group that gave up on the record")
        command.add_argument("--error-class", default="", help="e.g. UndecodableRecord, InvalidFailureReport")
        command.add_argument("--reason", default="", help="substring of the reason")
        command.add_argument("--key", default="", help="record key (the customer id)")
        command.add_argument("--at", action="append", default=[], help="PARTITION:OFFSET on the dead-letter topic")
    commands.choices["list"].add_argument("--json", action="store_true", help="one JSON object per line")
    commands.choices["replay"].add_argument("--dry-run", action="store_true", help="say what would be sent")
    return parser


async def run(argv: Sequence[str], settings: KitSettings) -> int:
    """Run the command line ``argv``; returns the exit code."""
    args = _parser().parse_args(argv)
    selection = Selection(
        original_topic=args.topic,
        group=args.group,
        error_class=args.error_class,
        reason_contains=args.reason,
        key=args.key,
        positions=_positions(args.at),
    )
    chosen = selected(await read_all(settings), selection)
    if args.command == "list":
        for record in chosen:
            fields = describe_record(record)
            print(json.dumps(fields) if args.json else "  ".join(f"{k}={v}" for k, v in fields.items()))
        print(f"{len(chosen)} dead letters", file=sys.stderr)
        return 0
    if args.dry_run:
        for record in chosen:
            fields = describe_record(record)
            print(f"would replay {fields['at']} -> {fields['original']}")
        return 0
    for line in await replay(settings, chosen):
        print(f"replayed {line}")
    print(f"{len(chosen)} dead letters replayed", file=sys.stderr)
    return 0


def main() -> None:
    """Entry point of ``python -m services.deadletters``."""
    sys.exit(asyncio.run(run(sys.argv[1:], KitSettings.from_env(service_name="deadletters"))))


if __name__ == "__main__":
    main()
