"""CloudEvents codec: binary and structured mode, protobuf and proto3 JSON decode alike; every bad record names
its fault."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import StringValue
from recovery.events.v1 import common_pb2, events_pb2

from services.common import cloudevents
from services.common.errors import InvalidInput, UndecodableRecord
from services.common.wire import unknown_enum_numbers

FAILURE_TYPE = "recovery.events.v1.FailureReported"
TYPES = cloudevents.registry(events_pb2.FailureReported, events_pb2.CaseOpened)
WHEN = datetime(2025, 11, 3, 14, 30, 15, 123456, tzinfo=UTC)


def failure() -> events_pb2.FailureReported:
    occurred = Timestamp()
    occurred.FromDatetime(datetime(2025, 11, 2, 8, 15, tzinfo=UTC))
    return events_pb2.FailureReported(
        customer_id="cust-42",
        source=common_pb2.SOURCE_DELIVERY_TRACKING,
        source_event_id="dt-9001",
        reference="order-77",
        category=common_pb2.CATEGORY_LATE_DELIVERY,
        occurred_at=occurred,
        description="Parcel arrived three days late",
        reported_costs=[
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_TAXI,
                amount=common_pb2.Money(amount_minor=2350, currency="EUR"),
                description="taxi to the depot",
                has_receipt=True,
            ),
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_OTHER,
                amount=common_pb2.Money(amount_minor=9_007_199_254_740_993, currency="JPY"),  # > 2**53
            ),
        ],
        stated_impacts=[common_pb2.IMPACT_TIME_LOST, common_pb2.IMPACT_MISSED_IMPORTANT_EVENT],
        impact_details="missed my daughter's graduation",
        customer_request=common_pb2.CustomerRequest(
            remedy_kind=common_pb2.REMEDY_KIND_REFUND,
            amount=common_pb2.Money(amount_minor=499, currency="EUR"),
            text="delivery fee back",
        ),
        avoidability=common_pb2.AVOIDABILITY_AVOIDABLE,
        area=common_pb2.Area(component="checkout", release="2025.11.3", team="parcels", location="VNO"),
        risk_tags=[common_pb2.RISK_TAG_NEW_PRODUCT, common_pb2.RISK_TAG_HIGH_TURNOVER],
        order_value=common_pb2.Money(amount_minor=12999, currency="EUR"),
        customer_value=common_pb2.Money(amount_minor=0, currency="EUR"),
        survey_score=0,
        customer_timezone="Europe/Vilnius",
        preferred_channel=common_pb2.CHANNEL_SMS,
    )


def encoded(content_type: str = cloudevents.PROTOBUF) -> tuple[list[tuple[str, bytes]], bytes]:
    headers, value, _ = cloudevents.encode(
        failure(), source="urn:test:delivery", id="evt-1", time=WHEN, content_type=content_type
    )
    return headers, value


def replace_header(headers: list[tuple[str, bytes]], name: str, value: bytes | None) -> list[tuple[str, bytes]]:
    kept = [(k, v) for k, v in headers if k != name]
    return kept if value is None else [*kept, (name, value)]


def test_type_of_is_the_full_protobuf_name_and_registry_maps_it_to_the_class():
    assert cloudevents.type_of(events_pb2.FailureReported) == FAILURE_TYPE
    assert cloudevents.type_of(StringValue) == "google.protobuf.StringValue"
    assert cloudevents.registry(events_pb2.FailureReported, StringValue) == {
        FAILURE_TYPE: events_pb2.FailureReported,
        "google.protobuf.StringValue": StringValue,
    }
    assert cloudevents.registry() == {}


def test_encode_writes_every_binary_mode_header():
    headers, _, ce_id = cloudevents.encode(failure(), source="urn:test:delivery", id="evt-1", time=WHEN)
    assert ce_id == "evt-1"
    assert dict(headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"evt-1",
        "ce_type": FAILURE_TYPE.encode(),
        "ce_source": b"urn:test:delivery",
        "ce_time": b"2025-11-03T14:30:15.123456Z",
        "content-type": b"application/protobuf",
    }


def test_encode_without_id_or_time_makes_a_fresh_id_and_the_current_time():
    before = datetime.now(UTC)
    headers_a, _, id_a = cloudevents.encode(failure(), source="s")
    _, _, id_b = cloudevents.encode(failure(), source="s")
    assert id_a and id_b and id_a != id_b
    event = cloudevents.read_attributes(headers_a)
    assert event.id == id_a
    assert before <= event.time <= datetime.now(UTC)


def test_encode_converts_the_time_to_utc():
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    headers, _, _ = cloudevents.encode(failure(), source="s", time=local)
    assert dict(headers)["ce_time"] == b"2025-11-03T14:30:15.123456Z"


def test_encode_refuses_an_unsupported_content_type():
    with pytest.raises(ValueError, match="text/plain"):
        cloudevents.encode(failure(), source="s", content_type="text/plain")


def test_protobuf_and_json_encodings_decode_to_equal_messages_and_attributes():
    pb_event, pb_message = cloudevents.decode(*encoded(cloudevents.PROTOBUF), TYPES)
    js_headers, js_value = encoded(cloudevents.JSON)
    js_event, js_message = cloudevents.decode(js_headers, js_value, TYPES)

    assert pb_message == failure()
    assert js_message == pb_message
    assert js_message.HasField("survey_score") and js_message.survey_score == 0  # presence survives JSON
    assert js_message.reported_costs[1].amount.amount_minor == 9_007_199_254_740_993  # no float rounding
    assert (pb_event.content_type, js_event.content_type) == ("application/protobuf", "application/json")
    for event in (pb_event, js_event):
        assert (event.id, event.type, event.source, event.time) == ("evt-1", FAILURE_TYPE, "urn:test:delivery", WHEN)


def test_json_encoding_follows_the_proto3_json_mapping():
    _, value = encoded(cloudevents.JSON)
    body = json.loads(value)
    assert body["customerId"] == "cust-42"
    assert body["category"] == "CATEGORY_LATE_DELIVERY"
    assert body["orderValue"] == {"amountMinor": "12999", "currency": "EUR"}
    assert body["occurredAt"] == "2025-11-02T08:15:00Z"


HAND_WRITTEN_JSON = """{
  "customerId": "cust-42",
  "source": "SOURCE_DELIVERY_TRACKING",
  "sourceEventId": "dt-9001",
  "reference": "order-77",
  "category": "CATEGORY_LATE_DELIVERY",
  "occurredAt": "2025-11-02T10:15:00+02:00",
  "description": "Parcel arrived three days late",
  "reportedCosts": [
    {"kind": "COST_KIND_TAXI", "amount": {"amountMinor": "2350", "currency": "EUR"},
     "description": "taxi to the depot", "hasReceipt": true},
    {"kind": "COST_KIND_OTHER", "amount": {"amountMinor": "9007199254740993", "currency": "JPY"}}
  ],
  "statedImpacts": ["IMPACT_TIME_LOST", "IMPACT_MISSED_IMPORTANT_EVENT"],
  "impactDetails": "missed my daughter's graduation",
  "customerRequest": {"remedyKind": "REMEDY_KIND_REFUND", "amount": {"amountMinor": "499", "currency": "EUR"},
                      "text": "delivery fee back"},
  "avoidability": "AVOIDABILITY_AVOIDABLE",
  "area": {"component": "checkout", "release": "2025.11.3", "team": "parcels", "location": "VNO"},
  "riskTags": ["RISK_TAG_NEW_PRODUCT", "RISK_TAG_HIGH_TURNOVER"],
  "orderValue": {"amountMinor": "12999", "currency": "EUR"},
  "customerValue": {"amountMinor": "0", "currency": "EUR"},
  "surveyScore": 0,
  "customerTimezone": "Europe/Vilnius",
  "preferredChannel": "CHANNEL_SMS",
  "fieldFromANewerPublisher": {"anything": 1}
}"""


def test_json_written_by_another_system_decodes_to_the_same_message():
    headers = replace_header(encoded()[0], "content-type", b"application/json; charset=utf-8")
    event, message = cloudevents.decode(headers, HAND_WRITTEN_JSON.encode(), TYPES)
    assert event.content_type == "application/json"
    assert message == failure()


def test_json_accepts_original_field_names_and_numbers_for_int64():
    headers = replace_header(encoded()[0], "content-type", b"application/json")
    body = b'{"customer_id": "c1", "order_value": {"amount_minor": 12999, "currency": "EUR"}, "category": 1}'
    _, message = cloudevents.decode(headers, body, TYPES)
    assert message == events_pb2.FailureReported(
        customer_id="c1",
        order_value=common_pb2.Money(amount_minor=12999, currency="EUR"),
        category=common_pb2.CATEGORY_LATE_DELIVERY,
    )


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "Application/Protobuf", "APPLICATION/JSON"])
def test_content_type_aliases_and_case_are_accepted(content_type):
    kind = cloudevents.JSON if "json" in content_type.lower() else cloudevents.PROTOBUF
    headers, value = encoded(kind)
    _, message = cloudevents.decode(replace_header(headers, "content-type", content_type.encode()), value, TYPES)
    assert message == failure()


def test_ce_time_with_an_offset_keeps_the_instant():
    headers = replace_header(encoded()[0], "ce_time", b"2025-11-03T16:30:15.123456+02:00")
    assert cloudevents.read_attributes(headers).time == WHEN


def test_header_map_keeps_the_last_value_of_a_repeated_header():
    assert cloudevents.header_map([("a", b"1"), ("b", b"2"), ("a", b"3")]) == {"a": b"3", "b": b"2"}
    assert cloudevents.header_map(None) == {}


REQUIRED = ["ce_specversion", "ce_id", "ce_type", "ce_source", "content-type"]


@pytest.mark.parametrize("value", [None, b""], ids=["absent", "empty"])
def test_without_ce_time_the_time_of_reading_stands_in_and_says_so(value):
    headers, body = encoded()
    before = datetime.now(UTC)
    event, message = cloudevents.decode(replace_header(headers, "ce_time", value), body, TYPES)
    assert event.time_from_receipt and before <= event.time <= datetime.now(UTC)
    assert message == failure()
    assert not cloudevents.decode(headers, body, TYPES)[0].time_from_receipt


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("value", [None, b""], ids=["absent", "empty"])
def test_a_missing_required_header_is_undecodable(name, value):
    headers, body = encoded()
    with pytest.raises(UndecodableRecord, match=f"missing header {name}"):
        cloudevents.decode(replace_header(headers, name, value), body, TYPES)


@pytest.mark.parametrize("name", REQUIRED)
def test_a_header_that_is_not_utf8_is_undecodable(name):
    headers, body = encoded()
    with pytest.raises(UndecodableRecord, match=f"header {name} is not UTF-8"):
        cloudevents.decode(replace_header(headers, name, b"\xff\xfe"), body, TYPES)


def test_no_headers_at_all_is_undecodable():
    with pytest.raises(UndecodableRecord, match="missing header"):
        cloudevents.decode(None, encoded()[1], TYPES)


@pytest.mark.parametrize("version", [b"0.3", b"1", b"2.0", b"1.0 "])
def test_another_specversion_is_undecodable(version):
    headers, body = encoded()
    with pytest.raises(UndecodableRecord, match="unsupported ce_specversion"):
        cloudevents.decode(replace_header(headers, "ce_specversion", version), body, TYPES)


@pytest.mark.parametrize(
    "raw",
    [b"yesterday", b"1762180215", b"2025-13-03T14:30:15Z", b"2025-11-03T25:00:00Z", b"03/11/2025 14:30", b"2025-11-03"],
)
def test_ce_time_that_is_not_a_timestamp_is_undecodable(raw):
    headers, body = encoded()
    with pytest.raises(UndecodableRecord, match="is not an RFC 3339 timestamp"):
        cloudevents.decode(replace_header(headers, "ce_time", raw), body, TYPES)


@pytest.mark.parametrize("raw", [b"2025-11-03T14:30:15", b"2025-11-03T14:30:15.5"])
def test_ce_time_without_a_time_zone_is_undecodable(raw):
    headers, body = encoded()
    with pytest.raises(UndecodableRecord, match="has no time zone"):
        cloudevents.decode(replace_header(headers, "ce_time", raw), body, TYPES)


@pytest.mark.parametrize(
    "raw",
    [b"20251103T143015Z", b"2025-W45-1T14:30:15Z", b"2025-11-03T14Z", b"2025-11-03T14:30Z"],
    ids=["basic-format", "week-date", "hour-only", "no-seconds"],
)
def test_ce_time_in_iso_8601_forms_outside_rfc_3339_is_undecodable(raw):
    headers, body = encoded()
    with pytest.raises(UndecodableRecord):
        cloudevents.decode(replace_header(headers, "ce_time", raw), body, TYPES)


def test_ce_time_with_lower_case_separators_is_rfc_3339():
    headers = replace_header(encoded()[0], "ce_time", b"2025-11-03t14:30:15.123456z")
    assert cloudevents.read_attributes(headers).time == WHEN


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/xml", b"application/cloudevents-batch+json"])
def test_an_unsupported_content_type_is_undecodable(content_type):
    headers, body = encoded()
    with pytest.raises(UndecodableRecord, match="unsupported content-type"):
        cloudevents.decode(replace_header(headers, "content-type", content_type), body, TYPES)


def test_an_unexpected_ce_type_is_undecodable_and_lists_the_accepted_ones():
    headers, body = encoded()
    headers = replace_header(headers, "ce_type", b"recovery.events.v1.SomethingElse")
    with pytest.raises(UndecodableRecord, match="unexpected ce_type") as caught:
        cloudevents.decode(headers, body, TYPES)
    assert "recovery.events.v1.CaseOpened" in str(caught.value)
    assert FAILURE_TYPE in str(caught.value)


def test_a_record_without_a_value_is_undecodable():
    with pytest.raises(UndecodableRecord, match="no value"):
        cloudevents.decode(encoded()[0], None, TYPES)


def test_truncated_protobuf_is_undecodable():
    headers, body = encoded(cloudevents.PROTOBUF)
    with pytest.raises(UndecodableRecord, match=r"does not decode as recovery\.events\.v1\.FailureReported"):
        cloudevents.decode(headers, body[: len(body) // 2], TYPES)


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"garbage", b"\x80", b"\x0a\x05ab"])
def test_protobuf_garbage_is_undecodable(garbage):
    with pytest.raises(UndecodableRecord, match="application/protobuf body does not decode"):
        cloudevents.decode(encoded(cloudevents.PROTOBUF)[0], garbage, TYPES)


def test_a_json_body_sent_as_protobuf_is_undecodable():
    headers = encoded(cloudevents.PROTOBUF)[0]
    with pytest.raises(UndecodableRecord, match="does not decode"):
        cloudevents.decode(headers, HAND_WRITTEN_JSON.encode(), TYPES)


@pytest.mark.parametrize(
    "body",
    [
        b'{"orderValue": {"amountMinor": "abc", "currency": "EUR"}}',
        b'{"orderValue": {"amountMinor": 12.5, "currency": "EUR"}}',
        b'{"orderValue": {"amountMinor": "99999999999999999999", "currency": "EUR"}}',
        b'{"customerId": 42}',
        b'{"occurredAt": "yesterday"}',
        b'{"reportedCosts": {"kind": "COST_KIND_TAXI"}}',
        b'{"customerId": "c1",',
        b"[1, 2]",
        b"null",
        b"",
    ],
    ids=[
        "int64-not-a-number",
        "int64-fraction",
        "int64-out-of-range",
        "string-given-a-number",
        "bad-timestamp",
        "repeated-given-an-object",
        "truncated",
        "array",
        "null",
        "empty",
    ],
)
def test_json_that_does_not_fit_the_message_is_undecodable(body):
    headers = encoded(cloudevents.JSON)[0]
    with pytest.raises(UndecodableRecord, match="application/json body does not decode"):
        cloudevents.decode(headers, body, TYPES)


def test_json_that_is_not_an_object_is_undecodable():
    headers = encoded(cloudevents.JSON)[0]
    with pytest.raises(UndecodableRecord):
        cloudevents.decode(headers, b'"customerId"', TYPES)


def test_json_that_is_not_utf8_is_undecodable():
    headers = encoded(cloudevents.JSON)[0]
    with pytest.raises(UndecodableRecord, match="does not decode"):
        cloudevents.decode(headers, '{"customerId": "Jürgen"}'.encode("latin-1"), TYPES)


def test_deeply_nested_json_is_undecodable_not_a_crash():
    headers = encoded(cloudevents.JSON)[0]
    body = b'{"area": ' * 100_000 + b"{}" + b"}" * 100_000
    with pytest.raises(UndecodableRecord):
        cloudevents.decode(headers, body, TYPES)


def test_undecodable_is_invalid_input_so_the_harness_dead_letters_it():
    with pytest.raises(InvalidInput):
        cloudevents.decode(encoded()[0], None, TYPES)


def test_a_nul_in_a_header_or_a_string_field_is_undecodable_not_a_database_error():
    headers, value = encoded()
    with_nul = [(k, b"evt-1\x00" if k == "ce_id" else v) for k, v in headers]
    with pytest.raises(UndecodableRecord, match="ce_id contains a NUL"):
        cloudevents.decode(with_nul, value, TYPES)
    message = events_pb2.FailureReported(customer_id="cust-1", description="late\x00")
    headers, value, _ = cloudevents.encode(message, source="test")
    with pytest.raises(UndecodableRecord, match="NUL character in description"):
        cloudevents.decode(headers, value, TYPES)


def test_a_nul_is_found_in_every_mode_and_encoding():
    """Decoding skips the field-by-field NUL check when the body cannot hold one: each way in still finds it."""
    message = events_pb2.FailureReported(customer_id="cust-1", reference="ord\x00-1")
    json_headers, json_value, _ = cloudevents.encode(message, source="test", content_type=cloudevents.JSON)
    assert b"\\u0000" in json_value
    base64_data = base64.b64encode(message.SerializeToString()).decode()
    ways = [
        cloudevents.encode(message, source="test")[:2],
        (json_headers, json_value),
        structured(envelope(data=json_format.MessageToDict(message))),
        structured(envelope(datacontenttype="application/protobuf", data=None, data_base64=base64_data)),
    ]
    for headers, value in ways:
        with pytest.raises(UndecodableRecord, match="NUL character in reference"):
            cloudevents.decode(headers, value, TYPES)


def test_a_body_with_zero_bytes_but_no_nul_in_its_text_decodes():
    message = events_pb2.FailureReported(customer_id="cust-1", reported_costs=[common_pb2.CostItem()])  # an empty item
    headers, value, _ = cloudevents.encode(message, source="test")
    assert b"\x00" in value
    assert cloudevents.decode(headers, value, TYPES)[1] == message


# ------------------------------------------------------------------------------------------- structured mode


def envelope(**changes) -> dict:
    base = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "urn:test:delivery",
        "type": FAILURE_TYPE,
        "time": "2025-11-03T14:30:15.123456Z",
        "datacontenttype": "application/json",
        "data": json_format.MessageToDict(failure()),
    }
    return {k: v for k, v in (base | changes).items() if v is not None}


def structured(document: dict, content_type: bytes = b"application/cloudevents+json; charset=utf-8"):
    return [("content-type", content_type)], json.dumps(document).encode()


def test_a_structured_json_event_decodes_like_a_binary_one():
    event, message = cloudevents.decode(*structured(envelope()), TYPES)
    _, binary_message = cloudevents.decode(*encoded(cloudevents.JSON), TYPES)
    assert message == binary_message == failure()
    assert (event.id, event.source, event.type, event.time) == ("evt-1", "urn:test:delivery", FAILURE_TYPE, WHEN)


def test_a_structured_event_may_carry_protobuf_data_in_base64_and_omit_its_time():
    data = base64.b64encode(failure().SerializeToString()).decode()
    document = envelope(datacontenttype="application/protobuf", data=None, data_base64=data, time=None)
    event, message = cloudevents.decode(*structured(document), TYPES)
    assert message == failure() and event.time_from_receipt


def test_a_structured_event_without_a_content_type_for_its_data_is_json():
    event, message = cloudevents.decode(*structured(envelope(datacontenttype=None)), TYPES)
    assert message == failure() and event.content_type == cloudevents.JSON


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": None}, "attribute id missing"),
        ({"source": ""}, "attribute source missing"),
        ({"specversion": "0.3"}, "unsupported specversion"),
        ({"time": "yesterday"}, "not an RFC 3339 timestamp"),
        ({"id": 7}, "attribute id must be a string"),
        ({"data": None}, "neither data nor data_base64"),
        ({"datacontenttype": "application/protobuf"}, "must be in data_base64"),
        ({"data": None, "data_base64": "%%%", "datacontenttype": "application/protobuf"}, "not base64"),
        ({"datacontenttype": "text/csv"}, "unsupported content-type"),
        ({"type": "recovery.events.v1.Nope"}, "unexpected ce_type"),
    ],
)
def test_a_bad_structured_event_is_undecodable_naming_its_fault(changes, reason):
    with pytest.raises(UndecodableRecord, match=reason):
        cloudevents.decode(*structured(envelope(**changes)), TYPES)


@pytest.mark.parametrize("body", [b"\xff", b"[1, 2]", b"not json"])
def test_a_structured_body_that_is_not_a_json_object_is_undecodable(body):
    with pytest.raises(UndecodableRecord, match="application/cloudevents"):
        cloudevents.decode([("content-type", b"application/cloudevents+json")], body, TYPES)


# ------------------------------------------------------------------------------------------ unknown enum values


@pytest.mark.parametrize(
    ("changes", "named", "allowed"),
    [
        ({"source": "SOURCE_WAREHOUSE"}, "source: unknown value 'SOURCE_WAREHOUSE'", "SOURCE_FRONTLINE"),
        ({"source": 99}, "source: unknown value 99", "SOURCE_BILLING"),
        (
            {"reportedCosts": [{"kind": "COST_KIND_TAXI"}, {"kind": "COST_KIND_BOAT"}]},
            "reported_costs[1].kind: unknown value 'COST_KIND_BOAT'",
            "COST_KIND_TOWING",
        ),
    ],
)
def test_an_unknown_enum_name_or_number_in_json_is_named_with_the_allowed_ones(changes, named, allowed):
    document = json_format.MessageToDict(failure()) | changes
    headers, _ = encoded(cloudevents.JSON)
    with pytest.raises(UndecodableRecord) as caught:
        cloudevents.decode(headers, json.dumps(document).encode(), TYPES)
    assert named in str(caught.value) and allowed in str(caught.value)


def test_an_unknown_enum_number_in_protobuf_is_named_with_the_allowed_ones():
    message = failure()
    message.category = 42
    headers, _ = encoded()
    with pytest.raises(UndecodableRecord, match=r"category: unknown value 42 \(one of CATEGORY_UNSPECIFIED"):
        cloudevents.decode(headers, message.SerializeToString(), TYPES)


def test_unknown_fields_are_still_ignored_for_publishers_on_a_newer_contract():
    document = json_format.MessageToDict(failure()) | {"somethingNew": {"x": 1}}
    headers, _ = encoded(cloudevents.JSON)
    assert cloudevents.decode(headers, json.dumps(document).encode(), TYPES)[1] == failure()


def test_unknown_enum_numbers_are_found_at_every_depth_of_a_binary_message():
    message = events_pb2.CaseOpened(
        customer_id="cust-1",
        category=common_pb2.CATEGORY_LATE_DELIVERY,
        reported_costs=[common_pb2.CostItem(kind=common_pb2.COST_KIND_TAXI), common_pb2.CostItem(kind=77)],
        stated_impacts=[common_pb2.IMPACT_TIME_LOST, 55],
        classification=common_pb2.Classification(severity=common_pb2.SeverityAssessment(severity=66)),
    )
    found = unknown_enum_numbers(events_pb2.CaseOpened.FromString(message.SerializeToString()))
    assert sorted(f.split(" (")[0] for f in found) == [
        "classification.severity.severity: unknown value 66",
        "reported_costs[1].kind: unknown value 77",
        "stated_impacts[1]: unknown value 55",
    ]
    assert unknown_enum_numbers(events_pb2.CaseOpened(customer_id="cust-1")) == []
