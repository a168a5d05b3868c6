"""One intake service per test module, on the session's real broker and Postgres, with a test policy."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.runtime import Endpoints
from services.intake import bootstrap
from services.intake.config import DEFAULT_POLICY, IntakeSettings
from tests.integration.conftest import new_id, now, service_settings
from tests.integration.conftest import publish as shared_publish
from tests.support.running import running_service

__all__ = ["new_id", "now"]  # re-exported: the intake tests take them from here

# Hot spots in 10-minute windows against the 6 before, so a test can lay out windows in the recent past.
TEST_POLICY = (
    DEFAULT_POLICY.read_text()
    .replace("window_minutes = 60", "window_minutes = 10")
    .replace("baseline_windows = 24", "baseline_windows = 6")
)


@dataclass(frozen=True)
class Intake:
    settings: IntakeSettings
    endpoints: Endpoints


def intake_settings(stack, tmp: Path, **changes) -> IntakeSettings:
    own = {"policy_reload_seconds": 0.2, "hotspot_poll_seconds": 0.2}
    return service_settings(IntakeSettings, stack, tmp, policy_text=TEST_POLICY, **(own | changes))


@pytest.fixture(scope="module")
async def intake(stack, tmp_path_factory):
    settings = intake_settings(stack, tmp_path_factory.mktemp("intake"))
    async with running_service(settings, build=bootstrap.build, migrations_dir=bootstrap.MIGRATIONS) as endpoints:
        yield Intake(settings=settings, endpoints=endpoints)


publish = functools.partial(shared_publish, source="delivery-tracking")


async def read_events(bootstrap: str, topic: str, message_class, *, key: str, count: int, settle: float = 0.0):
    """Return the messages keyed ``key`` on ``topic`` once ``count`` arrived (and ``settle`` s more passed)."""
    from tests.integration.conftest import read_topic

    def mine(records):
        return [r for r in records if r.key == key.encode()]

    records = await read_topic(bootstrap, topic, until=lambda rs: len(mine(rs)) >= count, settle=settle, timeout=40)
    return [message_class.FromString(r.value) for r in mine(records)]


def metric(intake: Intake, name: str, **labels: str) -> float:
    """Return the value of one sample scraped from the running service's metrics endpoint (0 when absent)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{intake.endpoints.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
