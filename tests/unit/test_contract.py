"""The published contract cannot drift: the committed AsyncAPI document and JSON Schemas are what the code
generates, every schema is valid, and the JSON the system itself writes (and the README's example) fits it."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from google.protobuf import json_format
from recovery.events.v1 import common_pb2, events_pb2

from services.common import contract
from services.common.topics import CATALOGUE
from services.common.wire import time_to_proto
from tests.unit.test_cloudevents import failure

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("gen_contract", ROOT / "scripts" / "gen_contract.py")
gen_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_contract)


def schema_of(name: str) -> dict:
    return json.loads((gen_contract.OUT / "schemas" / f"{name}.schema.json").read_text())


@pytest.mark.parametrize("path", sorted(gen_contract.rendered()), ids=lambda p: p.name)
def test_the_committed_contract_is_what_the_code_generates(path: Path):
    expected = gen_contract.rendered()[path]
    assert path.exists(), f"{path.relative_to(ROOT)} is missing: run `make contract`"
    assert path.read_text() == expected, f"{path.relative_to(ROOT)} drifted from the code: run `make contract`"


def test_no_stale_schema_lies_beside_the_generated_ones():
    committed = set((gen_contract.OUT / "schemas").glob("*.json"))
    assert committed == {p for p in gen_contract.rendered() if p.suffix == ".json"}


def test_every_topic_is_a_channel_and_every_event_has_a_valid_schema():
    document = yaml.safe_load((gen_contract.OUT / "asyncapi.yaml").read_text())
    assert document["asyncapi"] == "3.0.0"
    assert {c["address"] for c in document["channels"].values()} == {t.name for t in CATALOGUE}
    for name in contract.event_messages():
        jsonschema.Draft7Validator.check_schema(schema_of(name))


def valid(name: str, document: dict) -> None:
    jsonschema.validate(document, schema_of(name), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def test_what_the_system_writes_as_json_fits_the_schema():
    valid("recovery.events.v1.FailureReported", json_format.MessageToDict(failure()))
    opened = events_pb2.CaseOpened(
        case_id="c-1",
        customer_id="cust-1",
        source=common_pb2.SOURCE_OTHER_SYSTEM,
        opened_at=time_to_proto(failure().occurred_at.ToDatetime().astimezone()),
        source_events=[common_pb2.SourceEvent(source_event_id="e-1", failure_id="f-1")],
        order_value=common_pb2.Money(amount_minor=10**12, currency="EUR"),
        incident_id="flight-LO123",
    )
    valid("recovery.events.v1.CaseOpened", json_format.MessageToDict(opened))


def test_the_readme_publishing_example_fits_and_a_wrong_enum_does_not():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"failure = (\{.*?\n\})", readme, re.S).group(1)
    example = ast.literal_eval(block)  # a Python dict literal in the README
    valid("recovery.events.v1.FailureReported", example)
    with pytest.raises(jsonschema.ValidationError, match="SOURCE_WAREHOUSE"):
        valid("recovery.events.v1.FailureReported", example | {"source": "SOURCE_WAREHOUSE"})
