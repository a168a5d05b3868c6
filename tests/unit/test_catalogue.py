"""The README's tables say what the code does: the topic catalogue and the configuration reference."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import recovery.events.v1.events_pb2 as events_pb2
from google.protobuf import descriptor_pool

from services.__main__ import existing_services
from services.common.settings import KitSettings
from services.common.topics import CATALOGUE

README = Path(__file__).resolve().parents[2] / "README.md"


def table(name: str) -> list[list[str]]:
    text = README.read_text()
    body = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S).group(1)
    rows = [line for line in body.strip().splitlines() if line.startswith("|")][2:]  # skip header, rule
    return [[cell.strip().strip("`") for cell in row.strip("|").split(" | ")] for row in rows]


def test_readme_topic_table_is_the_code_catalogue():
    expected = [
        [
            t.name,
            ", ".join(t.producers),
            ", ".join(t.consumers),
            t.key,
            t.message or "the original record, untouched",
            t.meaning,
        ]
        for t in CATALOGUE
    ]
    assert table("topics") == expected


def test_every_topic_follows_the_naming_rule_and_names_a_real_message():
    pool = descriptor_pool.Default()
    for t in CATALOGUE:
        assert re.fullmatch(r"recovery\.[a-z]+(-[a-z]+)*\.v\d+", t.name), t.name
        if t.message:
            message = pool.FindMessageTypeByName(t.message)
            assert message.fields_by_name["customer_id"].number == 1, f"{t.message}: field 1 must be customer_id"


def test_every_event_message_has_a_topic():
    carried = {t.message for t in CATALOGUE}
    declared = {m.full_name for m in events_pb2.DESCRIPTOR.message_types_by_name.values()}
    assert declared <= carried, f"events without a topic: {sorted(declared - carried)}"


def test_readme_configuration_table_is_the_settings_reference():
    expected = [[name, str(default), doc] for name, default, doc in KitSettings.reference()]
    assert table("config") == expected


def service_settings() -> dict[str, type[KitSettings]]:
    """Return each built service's settings class (the KitSettings subclass in its config.py)."""
    found = {}
    for name in existing_services():
        module = importlib.import_module(f"services.{name}.config")
        classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, KitSettings)]
        [found[name]] = [c for c in classes if c is not KitSettings]
    return found


def test_readme_has_each_services_own_settings():
    shared = {name for name, _, _ in KitSettings.reference()}
    for service, settings in service_settings().items():
        own = [[name, str(default), doc] for name, default, doc in settings.reference() if name not in shared]
        assert table(f"config-{service}") == own, service
