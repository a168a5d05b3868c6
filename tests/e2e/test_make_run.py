"""`make run` as a user runs it: the stack comes up on its embedded default and Ctrl-C stops all of it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys

import asyncpg
import grpc
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from recovery.intake.v1 import intake_pb2, intake_pb2_grpc

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


async def listed_services(port: int) -> set[str]:
    """Return the service names reflection lists on ``port`` (no token: reflection is public)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        replies = [r async for r in stub.ServerReflectionInfo(requests, timeout=10)]
    return {s.name for s in replies[0].list_services_response.service}


async def test_make_run_brings_the_stack_up_and_ctrl_c_stops_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "JWT_SECRET"}}
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
        # Locally the API is discoverable (grpcurl list): reflection is on in the runner, public like health.
        for name, package in (("intake", "recovery.intake.v1"), ("escalation", "recovery.escalation.v1")):
            port = int(re.search(rf"^{name}\s+gRPC 127\.0\.0\.1:(\d+)", text, re.M).group(1))
            assert any(s.startswith(package) for s in await listed_services(port)), name
        # No secret is built in: the runner made one for its data directory, and the token command signs with it.
        secret_file = tmp_path / "data" / "jwt-secret"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        minted = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.common.token", "--sub", "e-1", "--role", "agent", "--team", "care",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        token = (await minted.communicate())[0].decode().strip()
        port = int(re.search(r"^intake\s+gRPC 127\.0\.0\.1:(\d+)", text, re.M).group(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            history = await intake_pb2_grpc.IntakeServiceStub(channel).GetCustomerHistory(
                intake_pb2.GetCustomerHistoryRequest(customer_id="nobody"),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=10,
            )
        assert history.customer_id == "nobody"
        assert "python -m services.common.token" in text  # the runner says how

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
