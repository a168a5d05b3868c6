"""CloudEvents Kafka binding: binary mode (attributes in ``ce_*`` headers, the event message as the value)
and structured mode (``content-type: application/cloudevents+json``, the whole envelope in the value).

The data is the protobuf message itself, as ``application/protobuf`` or as the proto3 JSON mapping
(``application/json``), each with or without parameters (``; charset=utf-8``), so other internal systems
can publish either; in structured mode JSON data is the envelope's ``data`` and protobuf data its
``data_base64``. ``ce_type`` is the message's full protobuf name (``recovery.events.v1.FailureReported``),
which is also how a consumer finds the class to decode into. ``time`` is optional, as CloudEvents has it:
without one, the time the record was read stands in, and the event says so (``time_from_receipt``).
This system publishes in binary mode only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from services.common.errors import UndecodableRecord
from services.common.wire import nul_fields, unknown_enum_names, unknown_enum_numbers

SPEC_VERSION = "1.0"
PROTOBUF = "application/protobuf"
JSON = "application/json"
STRUCTURED_JSON = "application/cloudevents+json"
_CONTENT_TYPES = {PROTOBUF, "application/x-protobuf", JSON}
_REQUIRED = ("specversion", "id", "source", "type")

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
    time_from_receipt: bool = False  # no ``time`` was given: ``time`` is when the record was read


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


def media_type(raw: str) -> str:
    """Return a content type without its parameters, lower case ("application/json; charset=utf-8" -> json)."""
    return raw.split(";")[0].strip().lower()


def _event(*, id: str, type: str, source: str, time: str | None, content_type: str) -> CloudEvent:
    if content_type not in _CONTENT_TYPES:
        raise UndecodableRecord(
            f"unsupported content-type {content_type!r} (accepted: {', '.join(sorted(_CONTENT_TYPES))})"
        )
    if time is None:
        return CloudEvent(id, type, source, datetime.now(UTC), content_type, time_from_receipt=True)
    return CloudEvent(id, type, source, parse_time(time), content_type)


def read_attributes(headers: Iterable[tuple[str, bytes]] | None) -> CloudEvent:
    """Return the binary-mode attributes; raises UndecodableRecord when one is missing or malformed."""
    h = header_map(headers)
    if (version := _text(h, "ce_specversion")) != SPEC_VERSION:
        raise UndecodableRecord(f"unsupported ce_specversion {version!r}")
    return _event(
        id=_text(h, "ce_id"),
        type=_text(h, "ce_type"),
        source=_text(h, "ce_source"),
        time=_text(h, "ce_time") if h.get("ce_time") else None,
        content_type=media_type(_text(h, "content-type")),
    )


def read_envelope(value: bytes | None) -> tuple[CloudEvent, bytes]:
    """Return the attributes of a structured-mode record and its data as bytes in the data's content type."""
    if value is None:
        raise UndecodableRecord("record has no value")
    try:
        envelope = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UndecodableRecord(f"{STRUCTURED_JSON} body is not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise UndecodableRecord(f"{STRUCTURED_JSON} body must be an object, not {type(envelope).__name__}")
    for name in (*_REQUIRED, "time", "datacontenttype"):
        value_ = envelope.get(name)
        if value_ is not None and (not isinstance(value_, str) or "\x00" in value_):
            raise UndecodableRecord(f"envelope attribute {name} must be a string without NUL, got {value_!r}")
    missing = [name for name in _REQUIRED if not envelope.get(name)]
    if missing:
        raise UndecodableRecord(f"envelope attribute {', '.join(missing)} missing")
    if envelope["specversion"] != SPEC_VERSION:
        raise UndecodableRecord(f"unsupported specversion {envelope['specversion']!r}")
    content_type = media_type(envelope.get("datacontenttype") or JSON)
    event = _event(
        id=envelope["id"],
        type=envelope["type"],
        source=envelope["source"],
        time=envelope.get("time"),
        content_type=content_type,
    )
    if "data_base64" in envelope:
        try:
            data = base64.b64decode(envelope["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise UndecodableRecord(f"envelope data_base64 is not base64: {exc}") from exc
    elif "data" in envelope:
        if content_type != JSON:
            raise UndecodableRecord(f"envelope data for {content_type} must be in data_base64")
        data = json.dumps(envelope["data"]).encode()
    else:
        raise UndecodableRecord("envelope has neither data nor data_base64")
    return event, data


def structured(headers: Iterable[tuple[str, bytes]] | None) -> bool:
    """True when the record is in structured mode (its content type is the CloudEvents JSON envelope)."""
    raw = header_map(headers).get("content-type")
    if not raw:
        return False
    return media_type(raw.decode("utf-8", "replace")) == STRUCTURED_JSON


def _may_hold_nul(value: bytes, content_type: str) -> bool:
    """False when no text field of the body can hold a NUL, so the field-by-field check can be skipped.

    A NUL in a protobuf string is a zero byte in its UTF-8; in JSON it can only be the escape ``\\u0000`` (the
    parser refuses a raw control character in a string). Most records hold neither, and the check, which visits
    every text field, was one of the costliest steps of decoding.
    """
    return b"\\u0000" in value if content_type == JSON else b"\x00" in value


def decode(
    headers: Iterable[tuple[str, bytes]] | None, value: bytes | None, types: Mapping[str, type[Message]]
) -> tuple[CloudEvent, Message]:
    """Return the attributes and the decoded message, in either mode; raises UndecodableRecord saying what is
    wrong."""
    if structured(headers):
        event, value = read_envelope(value)
    else:
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
            if unknown := unknown_enum_names(document, cls.DESCRIPTOR):
                raise UndecodableRecord(f"{event.type}: {'; '.join(unknown)}")
            # Unknown fields are ignored (a publisher on a newer contract); unknown enum values are not (above).
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
    if _may_hold_nul(value, event.content_type) and (bad := nul_fields(message)):
        raise UndecodableRecord(f"NUL character in {', '.join(bad)}: no text can hold one")
    if event.content_type != JSON and (unknown := unknown_enum_numbers(message)):
        raise UndecodableRecord(f"{event.type}: {'; '.join(unknown)}")
    return event, message
