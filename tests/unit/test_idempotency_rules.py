"""Idempotency rules without a database: request id validation and request fingerprints."""

from __future__ import annotations

import hashlib

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from recovery.events.v1 import common_pb2
from recovery.intake.v1 import intake_pb2

from services.common.errors import FieldViolation, InvalidInput
from services.common.idempotency import MAX_REQUEST_ID_LENGTH, fingerprint, require_request_id


def request(request_id: str = "req-1", **changes) -> intake_pb2.ReportFailureRequest:
    fields = {
        "customer_id": "cust-42",
        "reference": "order-77",
        "category": common_pb2.CATEGORY_LATE_DELIVERY,
        "description": "late",
        "reported_costs": [
            common_pb2.CostItem(
                kind=common_pb2.COST_KIND_TAXI, amount=common_pb2.Money(amount_minor=2350, currency="EUR")
            )
        ],
        "stated_impacts": [common_pb2.IMPACT_TIME_LOST],
    }
    fields.update(changes)
    return intake_pb2.ReportFailureRequest(request_id=request_id, **fields)


@pytest.mark.parametrize("request_id", ["r", "8b6f0c1e-1c1e-4d4f-9f7a-3f3e2a1b0c9d", "x" * MAX_REQUEST_ID_LENGTH])
def test_a_present_request_id_of_at_most_128_characters_is_returned(request_id):
    assert require_request_id(request_id) == request_id


def test_an_empty_request_id_is_refused_as_a_field_violation():
    with pytest.raises(InvalidInput) as caught:
        require_request_id("")
    assert [v.field for v in caught.value.violations] == ["request_id"]
    assert isinstance(caught.value.violations[0], FieldViolation)
    assert caught.value.message.startswith("request_id: ")


@pytest.mark.parametrize("length", [MAX_REQUEST_ID_LENGTH + 1, 10_000])
def test_a_request_id_longer_than_128_characters_is_refused(length):
    with pytest.raises(InvalidInput, match="at most 128 characters") as caught:
        require_request_id("r" * length)
    assert [v.field for v in caught.value.violations] == ["request_id"]


def test_the_limit_counts_characters_not_bytes():
    assert require_request_id("ž" * MAX_REQUEST_ID_LENGTH) == "ž" * MAX_REQUEST_ID_LENGTH


def test_fingerprint_ignores_the_request_id_and_does_not_change_the_request():
    first = request("req-1")
    assert fingerprint(first) == fingerprint(request("req-2"))
    assert first.request_id == "req-1"
    assert first == request("req-1")


def test_fingerprint_is_the_sha256_of_the_deterministic_serialisation():
    expected = hashlib.sha256(request("").SerializeToString(deterministic=True)).digest()
    assert fingerprint(request("req-1")) == expected
    assert len(expected) == 32


@pytest.mark.parametrize(
    "changes",
    [
        {"customer_id": "cust-43"},
        {"description": "late!"},
        {"category": common_pb2.CATEGORY_BILLING_ERROR},
        {"stated_impacts": [common_pb2.IMPACT_TIME_LOST, common_pb2.IMPACT_SAFETY]},
        {"reported_costs": []},
        {"order_value": common_pb2.Money(amount_minor=0, currency="")},  # set-but-empty differs from unset
    ],
    ids=["customer", "description", "category", "impacts", "costs", "presence"],
)
def test_any_other_parameter_changes_the_fingerprint(changes):
    assert fingerprint(request("req-1", **changes)) != fingerprint(request("req-1"))


def test_fingerprint_of_a_message_without_request_id_covers_all_of_it():
    assert fingerprint(StringValue(value="a")) == hashlib.sha256(StringValue(value="a").SerializeToString()).digest()
    assert fingerprint(StringValue(value="a")) != fingerprint(StringValue(value="b"))
