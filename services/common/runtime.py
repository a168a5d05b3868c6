"""The life of one service process: start the parts in order, serve, and stop them in reverse on SIGTERM.

A service's ``bootstrap.py`` only says what it consists of (a ``ServiceParts``); this module owns the
order that keeps the reliability rules: migrations before anything reads the schema; the outbox relay
before any handler stages events; on shutdown, stop taking work, finish the batch in hand, drain gRPC,
then flush the outbox before the producer and the pool close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.common import migrations, tracing
from services.common.auth import JwtConfig, Rule, TokenVerifier
from services.common.consumer import ConsumerHarness, Subscription
from services.common.db import Database
from services.common.errors import FieldViolation, InvalidInput
from services.common.grpc_server import GrpcServer, GrpcSettings, watch_health
from services.common.kafka import ensure_topics, make_faust_app, make_producer
from services.common.logs import setup_logging
from services.common.metrics import KitMetrics, project_version, register_platform, serve_metrics
from services.common.outbox import OutboxRelay
from services.common.retention import check_retention, keep_pruning
from services.common.settings import KitSettings
from services.common.topics import CATALOGUE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kit:
    """The infrastructure a service's bootstrap wires its handlers to."""

    settings: KitSettings
    db: Database
    registry: CollectorRegistry
    metrics: KitMetrics


@dataclass(frozen=True)
class ServiceParts:
    """What a service consists of: its consumers, its gRPC servicers and its background loops."""

    subscriptions: Sequence[Subscription] = ()
    grpc_register: Sequence[Callable] = ()
    grpc_service_names: Sequence[str] = ()
    grpc_rules: Mapping[str, Rule] = field(default_factory=dict)
    background: Sequence[Callable[[], Awaitable[None]]] = ()


@dataclass(frozen=True)
class Endpoints:
    """Where a running service listens."""

    grpc_port: int | None
    metrics_port: int


def jwt_config(settings: KitSettings) -> JwtConfig:
    """Return the token configuration: HS256 with the shared secret, or RS256/ES256 with a public key file or an
    identity provider's JWKS; issuer and audience checked when set. Raises InvalidInput naming a missing key: no
    secret is built in (the local runner makes its own)."""
    checks = {"issuer": settings.jwt_issuer or None, "audience": settings.jwt_audience or None}
    if settings.jwt_jwks_url:
        return JwtConfig(algorithm=settings.jwt_algorithm, key="", jwks_url=settings.jwt_jwks_url, **checks)
    if settings.jwt_algorithm != "HS256":
        if not settings.jwt_public_key_file:
            raise InvalidInput.of(FieldViolation("JWT_PUBLIC_KEY_FILE", f"required with {settings.jwt_algorithm}"))
        return JwtConfig(algorithm=settings.jwt_algorithm, key=Path(settings.jwt_public_key_file).read_text(), **checks)
    if not settings.jwt_secret:
        why = "required with HS256: set one (make run makes its own), or use RS256/ES256 with a key or a JWKS URL"
        raise InvalidInput.of(FieldViolation("JWT_SECRET", why))
    return JwtConfig(algorithm="HS256", key=settings.jwt_secret, **checks)


def grpc_settings(settings: KitSettings) -> GrpcSettings:
    """Return the gRPC server settings carried by the kit settings."""
    return GrpcSettings(
        host=settings.grpc_host,
        port=settings.grpc_port,
        max_message_bytes=settings.grpc_max_message_bytes,
        deadline_cap_seconds=settings.grpc_deadline_cap_seconds,
        reflection=settings.grpc_reflection,
        tls_cert_file=settings.grpc_tls_cert_file or None,
        tls_key_file=settings.grpc_tls_key_file or None,
        tls_client_ca_file=settings.grpc_tls_client_ca_file or None,
    )


async def run_service(
    settings: KitSettings,
    *,
    build: Callable[[Kit], Awaitable[ServiceParts]],
    migrations_dir: Path | None,
    stop: asyncio.Event,
    on_ready: Callable[[Endpoints], None] | None = None,
) -> None:
    """Run the service until ``stop`` is set, then shut it down gracefully."""
    check_retention(timedelta(days=settings.dedupe_retention_days))  # before anything starts
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set: start the system with `make run`, or point it at a server")
    async with contextlib.AsyncExitStack() as running:
        # Each part registers its own stop as it starts, so a failed start-up and a SIGTERM both stop
        # exactly what was started, in reverse: background loops, gRPC (drained), consumers (the batch
        # in hand finishes), then the outbox is flushed before the producer and the pool close.
        version = settings.build_version or project_version()
        if stop_tracing := tracing.configure(service=settings.service_name, version=version):
            running.callback(stop_tracing)  # the last thing stopped: the spans of the shutdown are exported too
        registry = CollectorRegistry()
        metrics = KitMetrics(registry)
        register_platform(registry)
        metrics.record_build(
            service=settings.service_name, version=version, revision=settings.build_revision or "unknown"
        )
        metrics_server, metrics_port = serve_metrics(registry, host=settings.metrics_host, port=settings.metrics_port)
        running.callback(metrics_server.shutdown)
        await ensure_topics(settings, [t.name for t in CATALOGUE])
        applied = await migrations.migrate(
            settings.database_url, schema=settings.schema, service_migrations=migrations_dir
        )
        if applied:
            log.info("applied migrations %s", ", ".join(applied))
        db = await Database.connect(
            settings.database_url, schema=settings.schema, min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )
        running.push_async_callback(db.close)
        producer = make_producer(settings)
        await producer.start()
        running.push_async_callback(producer.stop)
        relay = OutboxRelay(
            db=db,
            producer=producer,
            metrics=metrics,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            retry_max_seconds=settings.retry_max_seconds,
        )
        running.push_async_callback(_flush, relay)
        running.push_async_callback(_cancel, asyncio.create_task(relay.run(), name="outbox-relay"))
        parts = await build(Kit(settings=settings, db=db, registry=registry, metrics=metrics))

        if parts.subscriptions:
            harness = ConsumerHarness(
                db=db,
                group=settings.service_name,
                subscriptions=parts.subscriptions,
                metrics=metrics,
                retry_max_seconds=settings.retry_max_seconds,
            )
            app = make_faust_app(
                settings, group=settings.service_name, datadir=Path(settings.data_dir) / "faust" / settings.service_name
            )
            harness.attach(app, batch_size=settings.batch_size)
            await app.start()
            running.push_async_callback(app.stop)
            running.push_async_callback(harness.drain)
            running.push_async_callback(_cancel, asyncio.create_task(harness.watch_lag(), name="consumer-lag"))

        server = None
        if parts.grpc_register:
            server = GrpcServer(
                settings=grpc_settings(settings),
                verifier=TokenVerifier(jwt_config(settings)),
                rules=parts.grpc_rules,
                metrics=metrics,
                register=parts.grpc_register,
                service_names=parts.grpc_service_names,
            )
            await server.start()
            running.push_async_callback(server.stop)
            running.push_async_callback(_cancel, asyncio.create_task(watch_health(server, db.ping), name="health"))
        retention = timedelta(days=settings.dedupe_retention_days)
        pruning = keep_pruning(db, metrics, retention=retention, interval=settings.prune_interval_seconds)
        loops = [_watch_pool(db, metrics), pruning, *(loop() for loop in parts.background)]
        for coro in loops:
            running.push_async_callback(_cancel, asyncio.create_task(coro))

        endpoints = Endpoints(grpc_port=server.port if server else None, metrics_port=metrics_port)
        log.info("ready: grpc port %s, metrics port %s", endpoints.grpc_port, endpoints.metrics_port)
        if on_ready:
            on_ready(endpoints)
        await stop.wait()
        log.info("shutting down")
        if server:
            await server.set_serving(False)  # tell load balancers first, while calls in flight finish
    log.info("stopped")


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _flush(relay: OutboxRelay) -> None:
    if not await relay.flush():
        log.warning("outbox not empty at shutdown; the next start publishes the rest")
    await relay.close()


async def _watch_pool(db: Database, metrics: KitMetrics, interval: float = 5.0) -> None:
    while True:
        size, in_use = db.pool_usage()
        metrics.db_pool_size.set(size)
        metrics.db_pool_in_use.set(in_use)
        await asyncio.sleep(interval)


def main(
    settings: KitSettings, *, build: Callable[[Kit], Awaitable[ServiceParts]], migrations_dir: Path | None
) -> None:
    """Run a service as a process: JSON logs, SIGTERM and SIGINT stop it gracefully."""
    setup_logging(service=settings.service_name, level=settings.log_level)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_service(settings, build=build, migrations_dir=migrations_dir, stop=stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run())
