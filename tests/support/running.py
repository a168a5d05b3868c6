"""Run a product service in-process on the real broker and Postgres, the way its process would run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from services.common.auth import issue_token
from services.common.runtime import Endpoints, Kit, ServiceParts, run_service
from services.common.settings import KitSettings


@asynccontextmanager
async def running_service(
    settings: KitSettings,
    *,
    build: Callable[[Kit], Awaitable[ServiceParts]],
    migrations_dir: Path | None,
    start_timeout: float = 90.0,
) -> AsyncIterator[Endpoints]:
    """Yield the endpoints of the service once it is ready; stops it gracefully on exit."""
    stop = asyncio.Event()
    ready: asyncio.Future[Endpoints] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_service(settings, build=build, migrations_dir=migrations_dir, stop=stop, on_ready=ready.set_result)
    )
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=start_timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises the start-up error
            raise RuntimeError("service stopped before it was ready")
        if ready not in done:
            raise TimeoutError(f"service not ready after {start_timeout}s")
        yield ready.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


# What the services under test verify tokens with (no secret is built in; every test stack names its own).
TEST_JWT_SECRET = "tests-only-hs256-secret-of-at-least-32-bytes"


def bearer(settings: KitSettings, *, sub: str, role: str, team: str = "") -> list[tuple[str, str]]:
    """Return call metadata carrying a valid token for (sub, role, team)."""
    token = issue_token(secret_or_private_key=settings.jwt_secret, algorithm="HS256", sub=sub, role=role, team=team)
    return [("authorization", f"Bearer {token}")]


@asynccontextmanager
async def channel(port: int) -> AsyncIterator[grpc.aio.Channel]:
    """Yield an insecure channel to the service on 127.0.0.1:``port``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
