"""The whole system as `make run` starts it: broker, Postgres and every service as its own process.

Tests drive it only from the outside: Kafka records as other internal systems publish them, gRPC calls
with employees' tokens as the frontline UI makes them, and the output topics as notification systems
read them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.__main__ import READY_LINE, ROOT
from services.common.auth import issue_token
from services.common.settings import KitSettings

_ENDPOINT = re.compile(r"^(\w+)\s+gRPC 127\.0\.0\.1:(\d+)\s+metrics http://127\.0\.0\.1:(\d+)/metrics")


@dataclass
class System:
    """A running system: where its parts listen and how to call them."""

    kafka: str
    database_url: str
    grpc_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    def token(self, *, sub: str, role: str, team: str) -> list[tuple[str, str]]:
        """Return gRPC metadata with a token the services accept for (sub, role, team)."""
        secret = KitSettings().jwt_secret
        token = issue_token(secret_or_private_key=secret, algorithm="HS256", sub=sub, role=role, team=team)
        return [("authorization", f"Bearer {token}")]


async def start_system(data_dir: Path, env: Mapping[str, str] = {}) -> tuple[asyncio.subprocess.Process, System]:
    """Start `python -m services` (what `make run` runs) with free ports; returns it once the system is up."""
    environment = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}}
    environment |= {"DATA_DIR": str(data_dir), "EMBEDDED_KAFKA_PORT": "0", "EMBEDDED_POSTGRES_PORT": "0"}
    for name in ("INTAKE", "ESCALATION", "COMPENSATION", "FOLLOWUP"):
        environment |= {f"{name}_GRPC_PORT": "0", f"{name}_METRICS_PORT": "0"}
    environment |= dict(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    system = System(kafka="", database_url="")
    async with asyncio.timeout(240):
        while True:
            raw = await process.stdout.readline()
            if not raw:
                raise RuntimeError("the system stopped while starting:\n" + "".join(system.output[-30:]))
            line = raw.decode()
            system.output.append(line)
            if line.startswith("kafka "):
                system.kafka = line.split()[1]
            elif line.startswith("postgres "):
                system.database_url = line.split()[1]
            elif match := _ENDPOINT.match(line):
                system.grpc_ports[match[1]] = int(match[2])
                system.metrics_ports[match[1]] = int(match[3])
            elif READY_LINE in line:
                break
    asyncio.get_running_loop().create_task(_keep_reading(process, system))
    return process, system


async def _keep_reading(process: asyncio.subprocess.Process, system: System) -> None:
    while raw := await process.stdout.readline():
        system.output.append(raw.decode())


async def stop_system(process: asyncio.subprocess.Process) -> int:
    """Ctrl-C the runner as a user would and return its exit code."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.wait(), 120)


@pytest.fixture(scope="module")
async def system(tmp_path_factory):
    process, running = await start_system(tmp_path_factory.mktemp("system"))
    try:
        yield running
    finally:
        await stop_system(process)
