"""KitSettings: typed values from the environment, defaults, clear errors, overrides, frozen."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from services.common.errors import InvalidInput
from services.common.settings import KitSettings, env


@dataclass(frozen=True)
class ServiceSettings(KitSettings):
    """A service's own settings, declared the way a service's config.py does."""

    merge_window_hours: int = env("MERGE_WINDOW_HOURS", 48, doc="Hours within which failures merge.")
    policy_file: str | None = env("POLICY_FILE", None, doc="Policy file; unset means the built-in one.")


def test_defaults_when_nothing_is_set():
    settings = KitSettings.from_env({})
    assert settings == KitSettings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.topic_partitions == 6
    assert settings.kafka_enable_idempotence is False
    assert settings.batch_size == 500


def test_values_are_read_and_typed():
    settings = KitSettings.from_env(
        {
            "SERVICE_NAME": "intake",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "TOPIC_PARTITIONS": "12",
            "GRPC_DEADLINE_CAP_SECONDS": "2.5",
            "OUTBOX_POLL_SECONDS": "1",
            "KAFKA_ENABLE_IDEMPOTENCE": "true",
            "UNRELATED_VARIABLE": "ignored",
        }
    )
    assert settings.service_name == "intake"
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.topic_partitions == 12 and type(settings.topic_partitions) is int
    assert settings.grpc_deadline_cap_seconds == 2.5
    assert settings.outbox_poll_seconds == 1.0 and type(settings.outbox_poll_seconds) is float
    assert settings.kafka_enable_idempotence is True
    assert settings.db_pool_max == 10  # not set: default


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "True", "yes", "on", " On "])
def test_true_forms(raw):
    assert KitSettings.from_env({"GRPC_REFLECTION": raw}).grpc_reflection is True


@pytest.mark.parametrize("raw", ["0", "false", "FALSE", "no", "off", ""])
def test_false_forms(raw):
    assert KitSettings.from_env({"GRPC_REFLECTION": raw}).grpc_reflection is False


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("GRPC_REFLECTION", "maybe"),
        ("GRPC_REFLECTION", "2"),
        ("TOPIC_PARTITIONS", "six"),
        ("TOPIC_PARTITIONS", "1.5"),
        ("TOPIC_PARTITIONS", ""),
        ("RETRY_MAX_SECONDS", "ten"),
    ],
)
def test_a_bad_value_raises_invalid_input_naming_the_variable(name, raw):
    with pytest.raises(InvalidInput, match=f"environment variable {name}:") as caught:
        KitSettings.from_env({name: raw})
    assert repr(raw) in str(caught.value)  # the bad value itself


def test_empty_string_is_a_value_for_text_settings():
    assert KitSettings.from_env({"JWT_SECRET": ""}).jwt_secret == ""


def test_overrides_win_over_the_environment_and_defaults():
    settings = KitSettings.from_env({"GRPC_PORT": "5000", "SERVICE_NAME": "intake"}, grpc_port=6000, log_level="DEBUG")
    assert settings.grpc_port == 6000
    assert settings.log_level == "DEBUG"
    assert settings.service_name == "intake"


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("SERVICE_NAME", "from-os-environ")
    monkeypatch.setenv("DB_POOL_MAX", "3")
    settings = KitSettings.from_env()
    assert (settings.service_name, settings.db_pool_max) == ("from-os-environ", 3)


def test_schema_is_db_schema_or_the_service_name_with_underscores():
    assert KitSettings(service_name="intake").schema == "intake"
    assert KitSettings(service_name="follow-up-svc").schema == "follow_up_svc"
    assert KitSettings(service_name="follow-up", db_schema="custom").schema == "custom"
    assert KitSettings.from_env({"SERVICE_NAME": "a-b", "DB_SCHEMA": ""}).schema == "a_b"


def test_reference_lists_every_field_with_its_variable_default_and_meaning():
    rows = KitSettings.reference()
    fields = dataclasses.fields(KitSettings)
    assert len(rows) == len(fields)
    assert [name for name, _, _ in rows] == [f.metadata["env"] for f in fields]
    assert [default for _, default, _ in rows] == [f.default for f in fields]
    names = [name for name, _, _ in rows]
    assert len(set(names)) == len(names)
    assert all(name.isupper() and " " not in name for name in names)
    assert all(doc.strip() for _, _, doc in rows)
    assert ("TOPIC_PARTITIONS", 6, "Partition count of every topic (one count for all).") in rows


def test_every_variable_in_the_reference_is_read_by_from_env():
    for name, default, _ in KitSettings.reference():
        raw = {bool: "true", int: "7", float: "7.5", str: "x"}[type(default)]
        settings = KitSettings.from_env({name: raw})
        field = next(f for f in dataclasses.fields(KitSettings) if f.metadata["env"] == name)
        assert str(getattr(settings, field.name)).lower() in {"true", "7", "7.5", "x"}, name


def test_settings_are_frozen():
    settings = KitSettings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.grpc_port = 1  # type: ignore[misc]


def test_a_service_subclass_reads_its_own_fields_and_lists_them():
    settings = ServiceSettings.from_env({"MERGE_WINDOW_HOURS": "72", "SERVICE_NAME": "intake", "POLICY_FILE": ""})
    assert settings.merge_window_hours == 72
    assert settings.policy_file is None  # empty means unset for an optional text setting
    assert settings.service_name == "intake"
    assert ServiceSettings.from_env({"POLICY_FILE": "/etc/policy.yaml"}).policy_file == "/etc/policy.yaml"
    names = [name for name, _, _ in ServiceSettings.reference()]
    assert names[-2:] == ["MERGE_WINDOW_HOURS", "POLICY_FILE"]
    assert set(names) >= {name for name, _, _ in KitSettings.reference()}
    with pytest.raises(InvalidInput, match="MERGE_WINDOW_HOURS"):
        ServiceSettings.from_env({"MERGE_WINDOW_HOURS": "two days"})
