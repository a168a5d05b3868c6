"""The whole system as `make run` starts it: broker, Postgres and every service as its own process.

Used by the end-to-end tests and the demo; both drive it only from the outside.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.__main__ import READY_LINE, ROOT
from services.common.auth import issue_token
from services.common.token import local_secret
from services.escalation.config import DEFAULT_POLICY as ESCALATION_POLICY

_ENDPOINT = re.compile(r"^(\w+)\s+gRPC 127\.0\.0\.1:(\d+)\s+metrics http://127\.0\.0\.1:(\d+)/metrics")


LINE_LIMIT = 4 * 1024 * 1024  # the runner's longest output line the reader takes whole
KEPT_LINES = 10_000


@dataclass
class System:
    """A running system: where its parts listen and how to call them."""

    kafka: str
    database_url: str
    grpc_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    jwt_secret: str = ""  # the runner's own (it makes one per data directory), read once it is up

    def token(self, *, sub: str, role: str, team: str) -> list[tuple[str, str]]:
        """Return gRPC metadata with a token the services accept for (sub, role, team)."""
        token = issue_token(secret_or_private_key=self.jwt_secret, algorithm="HS256", sub=sub, role=role, team=team)
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
        limit=LINE_LIMIT,
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
    system.jwt_secret = local_secret(environment)  # what `python -m services.common.token` signs with too
    return process, system


async def _keep_reading(process: asyncio.subprocess.Process, system: System) -> None:
    """Drain the runner's output for as long as it runs (a pipe nobody reads would stall the services), keeping
    the most recent lines for failure messages."""
    while True:
        try:
            raw = await process.stdout.readline()
        except ValueError:  # a line longer than LINE_LIMIT: skip it, keep draining
            continue
        if not raw:
            return
        system.output.append(raw.decode(errors="replace"))
        if len(system.output) > 2 * KEPT_LINES:
            del system.output[:KEPT_LINES]


async def stop_system(process: asyncio.subprocess.Process) -> int:
    """Ctrl-C the runner as a user would and return its exit code."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.wait(), 120)


@asynccontextmanager
async def running_system(data_dir: Path, env: Mapping[str, str] = {}) -> AsyncIterator[System]:
    """Yield a started system; stops it as a user would (Ctrl-C) on exit."""
    process, system = await start_system(data_dir, env)
    try:
        yield system
    finally:
        await stop_system(process)


# Follow-up delays shortened by configuration (the policy's hours and days become seconds).
FOLLOWUP_DELAYS = "satisfaction_check=3,check_in=6,personal_note=2,corrective_action_notice=1,progress_update=3"
# Moderate recoverable cases must be acknowledged within this, so a test can watch the deadline pass.
ACK_DEADLINE_SECONDS = 15


def escalation_policy(directory: Path) -> Path:
    """Write the shipped empowerment policy with a 24/7 calendar and a short moderate acknowledgement."""
    text = ESCALATION_POLICY.read_text()
    text = text.replace('version = "', 'version = "e2e-', 1)
    shipped = '[sla.acknowledge.recoverable]\nminor = "8h"\nmoderate = "4h"'
    assert shipped in text, "the shipped policy changed: update the e2e policy"
    text = text.replace(shipped, f'[sla.acknowledge.recoverable]\nminor = "8h"\nmoderate = "{ACK_DEADLINE_SECONDS}s"')
    calendar = text.index("[calendar]")
    hours = "\n".join(f'{day} = ["00:00-24:00"]' for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    text = text[:calendar] + f'[calendar]\ntimezone = "UTC"\nholidays = []\n[calendar.hours]\n{hours}\n'
    path = directory / "escalation-policy.toml"
    path.write_text(text)
    return path


def short_clocks(directory: Path) -> dict[str, str]:
    """Return the environment that makes a running system's clocks watchable: seconds instead of days."""
    return {"FOLLOWUP_DELAY_OVERRIDES": FOLLOWUP_DELAYS, "ESCALATION_POLICY_PATH": str(escalation_policy(directory))}
