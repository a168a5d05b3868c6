"""The whole system as `make run` starts it, driven only from the outside.

Tests publish Kafka records as other internal systems do, call gRPC with employees' tokens as the
frontline UI does, and read the output topics as notification systems do. One system serves the whole
session; each test uses its own customers, so tests do not see each other's cases.
"""

from __future__ import annotations

import pytest

from tests.support.outside import Outside
from tests.support.system import ACK_DEADLINE_SECONDS, System, running_system, short_clocks, start_system, stop_system

__all__ = ["ACK_DEADLINE_SECONDS", "System", "start_system", "stop_system"]


@pytest.fixture(scope="session")
async def system(tmp_path_factory):
    directory = tmp_path_factory.mktemp("system")
    async with running_system(directory, short_clocks(directory)) as running:
        yield running


@pytest.fixture(scope="session")
async def outside(system):
    async with Outside(system) as world:
        yield world
