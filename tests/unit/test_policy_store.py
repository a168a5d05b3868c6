"""Policy files: refused whole when bad, the previous version kept, reloaded when the file changes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from services.common.errors import FieldViolation, InvalidInput
from services.common.metrics import KitMetrics
from services.common.policy import PolicyStore


@dataclass(frozen=True)
class Policy:
    version: str
    limit: int


def parse(text: str) -> Policy:
    """A tiny parser in the shape of the services' own: 'version limit', refusing what it cannot read."""
    parts = text.split()
    if len(parts) != 2 or not parts[1].isdigit():
        raise InvalidInput.of(FieldViolation("limit", "must be a whole number"))
    return Policy(parts[0], int(parts[1]))


def test_a_good_file_is_loaded_with_its_checksum(tmp_path):
    path = tmp_path / "policy"
    path.write_text("v1 10")
    store = PolicyStore(path, parse, name="test")
    assert store.current == Policy("v1", 10)
    assert store.loaded.version == "v1" and len(store.loaded.sha256) == 64 and store.loaded.text == "v1 10"


def test_a_bad_file_at_start_is_refused_with_the_file_and_the_bad_keys(tmp_path):
    path = tmp_path / "policy"
    path.write_text("v1 lots")
    with pytest.raises(InvalidInput) as refused:
        PolicyStore(path, parse, name="test")
    assert str(path) in refused.value.message and "limit: must be a whole number" in refused.value.message
    assert [v.field for v in refused.value.violations] == ["limit"]
    with pytest.raises(InvalidInput, match="cannot read it"):
        PolicyStore(tmp_path / "missing", parse, name="test")


def test_a_bad_edit_is_refused_and_the_previous_version_stays_in_force(tmp_path):
    path = tmp_path / "policy"
    path.write_text("v1 10")
    metrics = KitMetrics(CollectorRegistry())
    store = PolicyStore(path, parse, name="test", metrics=metrics)
    path.write_text("v2 ten")
    with pytest.raises(InvalidInput):
        store.reload()
    assert store.current == Policy("v1", 10)
    path.write_text("v2 20")
    assert store.reload() is True and store.current == Policy("v2", 20)
    assert store.reload() is False  # unchanged file: nothing to do
    sample = metrics.registry.get_sample_value
    assert sample("recovery_policy_loads_total", {"policy": "test", "outcome": "refused"}) == 1
    assert sample("recovery_policy_loads_total", {"policy": "test", "outcome": "loaded"}) == 2
    assert sample("recovery_policy_info", {"policy": "test", "version": "v2"}) == 1


async def test_watch_picks_up_a_new_version_and_survives_a_bad_one(tmp_path):
    path = tmp_path / "policy"
    path.write_text("v1 10")
    store = PolicyStore(path, parse, name="test")
    watcher = asyncio.create_task(store.watch(interval=0.01))
    try:
        path.write_text("v2 oops")
        await asyncio.sleep(0.1)
        assert store.current.version == "v1" and not watcher.done()
        path.write_text("v3 30")
        for _ in range(500):
            if store.current.version == "v3":
                break
            await asyncio.sleep(0.01)
        assert store.current == Policy("v3", 30)
    finally:
        watcher.cancel()
