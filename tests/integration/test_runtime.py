"""The service runtime: start order, health, metrics, consuming and publishing, graceful stop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import cloudevents
from services.common.auth import issue_token
from services.common.kafka import ensure_topics
from services.common.runtime import Endpoints, run_service
from tests.integration.conftest import read_topic
from tests.support import echo_service

pytestmark = pytest.mark.integration


@pytest.fixture
async def echo_topics(settings, monkeypatch):
    names = {
        "ECHO_INPUT_TOPIC": f"test.{uuid.uuid4().hex[:8]}.in",
        "ECHO_OUTPUT_TOPIC": f"test.{uuid.uuid4().hex[:8]}.out",
    }
    await ensure_topics(settings, names.values())
    for k, v in names.items():
        monkeypatch.setenv(k, v)
    return names


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status


async def test_a_service_consumes_publishes_serves_and_stops_gracefully(settings, echo_topics, producer, tmp_path):
    settings = dataclasses.replace(settings, data_dir=str(tmp_path))
    stop = asyncio.Event()
    ready: asyncio.Future[Endpoints] = asyncio.get_running_loop().create_future()
    running = asyncio.create_task(
        run_service(
            settings,
            build=echo_service.build,
            migrations_dir=echo_service.MIGRATIONS,
            stop=stop,
            on_ready=ready.set_result,
        )
    )
    try:
        endpoints = await asyncio.wait_for(asyncio.shield(ready), 60)
        assert await health(endpoints.grpc_port) == health_pb2.HealthCheckResponse.SERVING
        token = issue_token(secret_or_private_key=settings.jwt_secret, algorithm="HS256", sub="e1", role="agent")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{endpoints.grpc_port}") as channel:
            say = channel.unary_unary(
                echo_service.SAY,
                request_serializer=StringValue.SerializeToString,
                response_deserializer=StringValue.FromString,
            )
            reply = await say(StringValue(value="hi"), metadata=[("authorization", f"Bearer {token}")], timeout=5)
        assert reply.value == "echo: hi"

        headers, value, _ = cloudevents.encode(StringValue(value="hello"), source="test")
        await producer.send_and_wait(echo_topics["ECHO_INPUT_TOPIC"], value, key=b"c-1", headers=headers)
        echoed = await read_topic(
            settings.kafka_bootstrap_servers, echo_topics["ECHO_OUTPUT_TOPIC"], until=lambda rs: len(rs) >= 1
        )
        assert StringValue.FromString(echoed[0].value).value == "hello"
        assert echoed[0].key == b"c-1"
        text = scrape(endpoints.metrics_port)
        assert "recovery_outbox_backlog" in text
        assert 'recovery_grpc_server_handled_total{code="OK",method="/test.v1.Echo/Say"} 1.0' in text
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)  # returns only after the graceful shutdown finished
    with pytest.raises(grpc.aio.AioRpcError):
        await health(endpoints.grpc_port)


async def test_sigterm_stops_a_service_process_cleanly(settings, echo_topics, tmp_path):
    env = os.environ | {
        "SERVICE_NAME": settings.service_name,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "TOPIC_PARTITIONS": str(settings.topic_partitions),
        "DATA_DIR": str(tmp_path),
        "JWT_SECRET": settings.jwt_secret,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.echo_service", env=env, stderr=subprocess.PIPE
    )
    lines = []

    async def wait_for(word: str) -> dict:
        while True:
            raw = await process.stderr.readline()
            assert raw, f"service exited before '{word}': {lines[-5:]}"
            line = json.loads(raw)
            lines.append(line)
            if line["message"].startswith(word):
                return line

    try:
        await asyncio.wait_for(wait_for("ready"), 60)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(wait_for("stopped"), 60)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert all(line["service"] == settings.service_name for line in lines)
