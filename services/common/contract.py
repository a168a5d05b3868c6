"""The published contract, generated from the code: an AsyncAPI 3 document of every topic (from the topic
catalogue) and a JSON Schema of every event's proto3 JSON form (from the protobuf descriptors), for the teams
that publish JSON. ``scripts/gen_contract.py`` writes them under ``proto/published/``; a test regenerates them
and fails when the committed files drift from the code.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import symbol_database
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from recovery.events.v1 import events_pb2  # noqa: F401  (registers the event messages looked up by name)

from services.common.topics import CATALOGUE, Topic

SERVICES = frozenset({"intake", "escalation", "compensation", "followup"})
JSON_SCHEMA = "http://json-schema.org/draft-07/schema#"  # the draft AsyncAPI 3 names for payloads
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_INT32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}
# Well-known types have a JSON form of their own in the proto3 JSON mapping.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d{1,9})?s$"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.Int32Value": {"type": "integer"},
    "google.protobuf.Int64Value": {"type": ["integer", "string"], "pattern": r"^-?\d+$"},
}
# CloudEvents binary-mode headers every record carries (structured mode puts them in the envelope instead).
HEADERS = {
    "type": "object",
    "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "content-type"],
    "properties": {
        "ce_specversion": {"const": "1.0"},
        "ce_id": {"type": "string", "minLength": 1, "description": "Unique per event together with ce_source."},
        "ce_source": {"type": "string", "minLength": 1, "description": "The publishing system."},
        "ce_type": {"type": "string", "description": "The message's full protobuf name."},
        "ce_time": {"type": "string", "format": "date-time", "description": "Optional (RFC 3339)."},
        "content-type": {
            "type": "string",
            "enum": ["application/json", "application/protobuf", "application/cloudevents+json"],
            "description": "Parameters (e.g. '; charset=utf-8') are allowed.",
        },
    },
}


def _field(field: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value, defs)}
    single = _single(field, defs)
    return {"type": "array", "items": single} if field.is_repeated else single


def _single(field: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_ref(field.message_type, defs)
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        return {"enum": [*names, *(v.number for v in field.enum_type.values)], "description": "a name or number"}
    if field.type == FieldDescriptor.TYPE_STRING:
        return {"type": "string"}
    if field.type == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if field.type in _INT32:
        return {"type": "integer"}
    if field.type in _INT64:
        return {"type": ["integer", "string"], "pattern": r"^-?\d+$", "description": "64-bit: a string in JSON"}
    if field.type == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "number"}  # float, double


def message_ref(descriptor: Descriptor, defs: dict[str, Any]) -> dict[str, Any]:
    """Return a reference to ``descriptor``'s schema, adding it (and what it uses) to ``defs``."""
    name = descriptor.full_name
    if name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[name])
    if name not in defs:
        defs[name] = {}  # placed first: a message that contains itself refers to itself
        defs[name] = {
            "type": "object",
            # Unknown fields are ignored by the consumers (a publisher on a newer contract).
            "additionalProperties": True,
            "properties": {f.json_name: _field(f, defs) for f in descriptor.fields},
        }
    return {"$ref": f"#/definitions/{name}"}


def json_schema(message_name: str) -> dict[str, Any]:
    """Return the JSON Schema (draft-07) of one event's proto3 JSON form; field names as the mapping emits them
    (lowerCamelCase; the proto names are accepted too)."""
    descriptor = symbol_database.Default().pool.FindMessageTypeByName(message_name)
    defs: dict[str, Any] = {}
    root = message_ref(descriptor, defs)
    return {
        "$schema": JSON_SCHEMA,
        "$id": f"{message_name}.schema.json",
        "title": message_name,
        **root,
        "definitions": defs,
    }


def _short(topic: Topic) -> str:
    return topic.message.rsplit(".", 1)[-1] if topic.message else "DeadLetter"


def asyncapi() -> dict[str, Any]:
    """Return the AsyncAPI 3.0 document of the system: a channel per topic, what it sends and receives."""
    channels, operations, messages = {}, {}, {}
    for topic in CATALOGUE:
        short = _short(topic)
        channel_id = short[0].lower() + short[1:]
        message: dict[str, Any] = {
            "name": short,
            "title": topic.message or "a dead-lettered record",
            "summary": topic.meaning,
            "contentType": "application/protobuf",
            "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
            "bindings": {"kafka": {"key": {"type": "string", "description": topic.key}}},
        }
        if topic.message:
            message["payload"] = {
                "schemaFormat": "application/schema+json;version=draft-07",
                "schema": {"$ref": f"schemas/{topic.message}.schema.json"},
            }
        messages[short] = message
        channels[channel_id] = {
            "address": topic.name,
            "description": f"{topic.meaning} Producers: {', '.join(topic.producers)}. "
            f"Consumers: {', '.join(topic.consumers) or 'none'}.",
            "messages": {short: {"$ref": f"#/components/messages/{short}"}},
        }
        for action, parties in (("send", topic.producers), ("receive", topic.consumers)):
            if SERVICES & set(parties):
                operations[f"{action}{short}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel_id}"},
                    "summary": f"{', '.join(sorted(SERVICES & set(parties)))} {action}s {topic.name}",
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Service recovery events",
            "version": "1",
            "description": "Every Kafka topic of the service-recovery backend. Records are CloudEvents (binary "
            "mode, or structured mode with content-type application/cloudevents+json), keyed as each message "
            "says; an event is unique by ce_source and ce_id. Generated from services/common/topics.py and the "
            "protobuf descriptors by scripts/gen_contract.py.",
        },
        "defaultContentType": "application/protobuf",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "make run's broker"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": {"CloudEventsHeaders": HEADERS}},
    }


def event_messages() -> list[str]:
    """Return the full names of every event message the catalogue carries."""
    return sorted({t.message for t in CATALOGUE if t.message})
