"""CloudEvents Kafka binding, binary mode: attributes in ``ce_*`` headers, the event message as the value.

The value is the protobuf message itself, as ``application/protobuf`` or as the proto3 JSON mapping
(``application/json``), so other internal systems can publish either. ``ce_type`` is the message's
full protobuf name (``recovery.events.v1.FailureReported``), which is also how a consumer finds the
class to decode into.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from services.common.errors import UndecodableRecord
from services.common.wire import nul_fields

SPEC_VERSION = "1.0"
PROTOBUF = "application/protobuf"
JSON = "application/json"
_CONTENT_TYPES = {PROTOBUF, "application/x-protobuf", JSON}

Headers = Sequence[tuple[str, bytes]]

# RFC 3339 date-time (section 5.6): full date, "T", full time with seconds, a zone; "T"/"Z" any case.
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class CloudEvent:
    """The CloudEvents attributes of one record."""

    id: str
    type: str
    source: str
    time: datetime
    content_type: str


def type_of(message_class: type[Message]) -> str:
    """Return the ``ce_type`` of a protobuf message class (its full name)."""
    return message_class.DESCRIPTOR.full_name


def registry(*message_classes: type[Message]) -> dict[str, type[Message]]:
    """Return a ``ce_type -> class`` map for decoding."""
    return {type_of(cls): cls for cls in message_classes}


def encode(
    message: Message,
    *,
    source: str,
    id: str | None = None,
    time: datetime | None = None,
    content_type: str = PROTOBUF,
) -> tuple[list[tuple[str, bytes]], bytes, str]:
    """Return (headers, value, ce_id) for ``message`` in binary mode."""
    ce_id = id or str(uuid.uuid4())
    when = (time or datetime.now(UTC)).astimezone(UTC)
    if content_type == JSON:
        value = json_format.MessageToJson(message, indent=None, preserving_proto_field_name=False).encode()
    elif content_type == PROTOBUF:
        value = message.SerializeToString(deterministic=True)
    else:
        raise ValueError(f"unsupported content type {content_type!r}")
    headers = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", ce_id.encode()),
        ("ce_type", type_of(type(message)).encode()),
        ("ce_source", source.encode()),
        ("ce_time", when.isoformat().replace("+00:00", "Z").encode()),
        ("content-type", content_type.encode()),
    ]
    return headers, value, ce_id


def header_map(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, bytes]:
    """Return the headers as a dict (the last value of a repeated header wins)."""
    return {k: v for k, v in (headers or ())}


def _text(headers: Mapping[str, bytes], name: str) -> str:
    raw = headers.get(name)
    if raw is None or raw == b"":
        raise UndecodableRecord(f"missing header {name}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UndecodableRecord(f"header {name} is not UTF-8") from exc
    if "\x00" in text:
        raise UndecodableRecord(f"header {name} contains a NUL character")
    return text


def parse_time(raw: str) -> datetime:
    """Return the RFC 3339 timestamp ``raw`` as an aware datetime; raises UndecodableRecord otherwise."""
    match = _RFC3339.match(raw)
    if not match:
        if _RFC3339.match(raw + "Z"):
            raise UndecodableRecord(f"ce_time {raw!r} has no time zone")
        raise UndecodableRecord(f"ce_time {raw!r} is not an RFC 3339 timestamp")
    fraction = (match.group(7) or "")[:7]  # Python keeps microseconds: drop digits beyond them
    zone = "+00:00" if match.group(8) in ("Z", "z") else match.group(8)
    text = f"{'-'.join(match.group(1, 2, 3))}T{':'.join(match.group(4, 5, 6))}{fraction}{zone}"
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:  # e.g. month 13, second 61
        raise UndecodableRecord(f"ce_time {raw!r} is not an RFC 3339 timestamp: {exc}") from exc


def read_attributes(headers: Iterable[tuple[str, bytes]] | None) -> CloudEvent:
    """Return the CloudEvents attributes; raises UndecodableRecord when one is missing or malformed."""
    h = header_map(headers)
    if (version := _text(h, "ce_specversion")) != SPEC_VERSION:
        raise UndecodableRecord(f"unsupported ce_specversion {version!r}")
    time = parse_time(_text(h, "ce_time"))
    content_type = _text(h, "content-type").split(";")[0].strip().lower()
    if content_type not in _CONTENT_TYPES:
        raise UndecodableRecord(f"unsupported content-type {content_type!r}")
    return CloudEvent(
        id=_text(h, "ce_id"),
        type=_text(h, "ce_type"),
        source=_text(h, "ce_source"),
        time=time,
        content_type=content_type,
    )


def decode(
    headers: Iterable[tuple[str, bytes]] | None, value: bytes | None, types: Mapping[str, type[Message]]
) -> tuple[CloudEvent, Message]:
    """Return the attributes and the decoded message; raises UndecodableRecord saying what is wrong."""
    event = read_attributes(headers)
    cls = types.get(event.type)
    if cls is None:
        raise UndecodableRecord(f"unexpected ce_type {event.type!r} (accepted: {', '.join(sorted(types))})")
    if value is None:
        raise UndecodableRecord("record has no value")
    message = cls()
    try:
        if event.content_type == JSON:
            document = json.loads(value.decode("utf-8"))
            if not isinstance(document, dict):
                raise TypeError(f"the JSON body must be an object, not {type(document).__name__}")
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(value)
    except (
        json_format.ParseError,
        json.JSONDecodeError,
        TypeError,
        DecodeError,
        UnicodeDecodeError,
        RecursionError,
    ) as exc:
        raise UndecodableRecord(f"{event.content_type} body does not decode as {event.type}: {exc}") from exc
    if bad := nul_fields(message):
        raise UndecodableRecord(f"NUL character in {', '.join(bad)}: no text can hold one")
    return event, message
