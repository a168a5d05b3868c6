"""`make run` as a user runs it: the stack comes up on its embedded default and Ctrl-C stops all of it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.__main__ import READY_LINE, ROOT
from services.common.topics import CATALOGUE

pytestmark = pytest.mark.e2e


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> None:
    while True:
        line = (await stream.readline()).decode()
        assert line, f"make run ended before '{marker}':\n{''.join(seen[-20:])}"
        seen.append(line)
        if marker in line:
            return


async def test_make_run_brings_the_stack_up_and_ctrl_c_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}}
    env |= {"DATA_DIR": str(tmp_path / "data"), "EMBEDDED_KAFKA_PORT": "0", "EMBEDDED_POSTGRES_PORT": "0"}
    for name in ("INTAKE", "ESCALATION", "COMPENSATION", "FOLLOWUP"):
        env |= {f"{name}_GRPC_PORT": "0", f"{name}_METRICS_PORT": "0"}
    make = await asyncio.create_subprocess_exec(
        "make",
        "--no-print-directory",
        "run",
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output: list[str] = []
    try:
        await asyncio.wait_for(read_until(make.stdout, READY_LINE, output), 180)
        text = "".join(output)
        kafka = re.search(r"^kafka\s+(\S+)", text, re.M).group(1)
        database_url = re.search(r"^postgres\s+(\S+)", text, re.M).group(1)

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            assert {t.name for t in CATALOGUE} <= set(await admin.list_topics())
        finally:
            await admin.close()
        conn = await asyncpg.connect(database_url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()  # data lives under DATA_DIR

        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        await asyncio.wait_for(read_until(make.stdout, "stopped", output), 90)
        await asyncio.wait_for(make.wait(), 30)
    finally:
        if make.returncode is None:
            os.killpg(make.pid, signal.SIGKILL)
            await make.wait()
    kafka_port = int(kafka.rsplit(":", 1)[1])
    postgres_port = int(re.search(r":(\d+)/", database_url).group(1))
    assert not listening(kafka_port) and not listening(postgres_port)
