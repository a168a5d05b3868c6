"""``python -m services.common.provision``: the one-shot tasks a deployment runs around the services.

The Jobs and init containers in ``deploy/k8s`` and the one-shot containers in ``deploy/compose`` run these
with the same image and the same environment variables as the services (``KAFKA_*``, ``TOPIC_*``,
``DATABASE_URL``, ``SERVICE_NAME``, libpq's ``PG*``)::

    topics [--min-insync-replicas N]      create every catalogue topic that is missing, with TOPIC_PARTITIONS
                                          partitions, TOPIC_REPLICATION replicas and min.insync.replicas N;
                                          fail if an existing one has another partition count
    roles --sql FILE                      as a database administrator: run the roles SQL (one owner and one
                                          runtime login role per service); the passwords come from
                                          <SERVICE>_DB_OWNER_PASSWORD and <SERVICE>_DB_APP_PASSWORD
    migrate --grants FILE [--app-role R]  as SERVICE_NAME's owner role: apply its migrations, then run the
                                          grants SQL giving its runtime role (default <service>_app) its rights
    wait [--timeout S]                    as the runtime role (an init container): wait until the schema is
                                          migrated and every topic exists with TOPIC_PARTITIONS partitions

Every task is idempotent, so a deployment runs all of them every time. ``topics``, ``roles`` and ``migrate``
retry while Kafka or Postgres is unreachable or the login role does not exist yet (``--wait-seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from services.common import migrations
from services.common.db import check_schema_name, is_transient
from services.common.kafka import client_options, topic_configs
from services.common.logs import setup_logging
from services.common.settings import KitSettings
from services.common.topics import CATALOGUE

log = logging.getLogger("services.common.provision")

SERVICES_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("intake", "escalation", "compensation", "followup")


class ProvisionError(RuntimeError):
    """A task found something it must not paper over (a wrong partition count, an edited migration)."""


# ------------------------------------------------------------------------------------------------ topics


@dataclass(frozen=True)
class TopicReport:
    """What ``create_topics`` did."""

    created: tuple[str, ...]
    existing: tuple[str, ...]


async def create_topics(settings: KitSettings, names: Iterable[str], *, min_insync_replicas: int) -> TopicReport:
    """Create the missing topics; raises ProvisionError when an existing one has another partition count."""
    if not 1 <= min_insync_replicas <= settings.topic_replication:
        raise ProvisionError(
            f"min.insync.replicas {min_insync_replicas} must be between 1 and TOPIC_REPLICATION "
            f"{settings.topic_replication}: with acks=all a larger value refuses every write"
        )
    names = list(names)
    admin = AIOKafkaAdminClient(**client_options(settings), client_id=f"{settings.service_name}-provision")
    await admin.start()
    try:
        present = set(await admin.list_topics())
        missing = [n for n in names if n not in present]
        if missing:
            configs = {"min.insync.replicas": str(min_insync_replicas)}
            shape = (settings.topic_partitions, settings.topic_replication)
            response = await admin.create_topics(
                [NewTopic(n, *shape, topic_configs=configs | topic_configs(n)) for n in missing]
            )
            for name, code, *message in response.topic_errors:
                if code and code != TopicAlreadyExistsError.errno:  # another run created it meanwhile: fine
                    raise for_code(code)(f"creating {name}: {message[0] if message else ''}")
        await _check_partitions(admin, names, settings.topic_partitions)
    finally:
        await admin.close()
    return TopicReport(created=tuple(missing), existing=tuple(n for n in names if n in present))


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int | None]:
    """Return each topic's partition count, None for a topic the broker does not know."""
    counts: dict[str, int | None] = dict.fromkeys(names)
    for entry in await admin.describe_topics(names):
        if not entry["error_code"]:
            counts[entry["topic"]] = len(entry["partitions"])
    return counts


async def _check_partitions(admin: AIOKafkaAdminClient, names: list[str], partitions: int) -> None:
    counts = await _partition_counts(admin, names)
    wrong = {name: count for name, count in counts.items() if count != partitions}
    if wrong:
        # Every topic shares one partition count so one customer's events land on the same partition number
        # everywhere; adding partitions later re-maps keys, so this is for a person to decide, not a Job.
        listed = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items(), key=str))
        raise ProvisionError(f"topics must have TOPIC_PARTITIONS={partitions} partitions: {listed}")


async def topics_ready(settings: KitSettings, names: Iterable[str]) -> str | None:
    """Return None when every topic exists with TOPIC_PARTITIONS partitions, else what is missing."""
    names = list(names)
    admin = AIOKafkaAdminClient(**client_options(settings), client_id=f"{settings.service_name}-wait")
    await admin.start()
    try:
        counts = await _partition_counts(admin, names)
    finally:
        await admin.close()
    absent = [n for n, c in counts.items() if c is None]
    if absent:
        return f"{len(absent)} topics missing (first: {absent[0]})"
    wrong = [n for n, c in counts.items() if c != settings.topic_partitions]
    if wrong:
        return f"{len(wrong)} topics without {settings.topic_partitions} partitions (first: {wrong[0]})"
    return None


# -------------------------------------------------------------------------------------------- database


def password_settings(environ: Mapping[str, str], services: Sequence[str] = SERVICES) -> dict[str, str]:
    """Return the roles SQL's settings (``recovery.<service>_<owner|app>_password``) read from ``environ``."""
    found = {}
    for service in services:
        for kind in ("owner", "app"):
            variable = f"{service.upper()}_DB_{kind.upper()}_PASSWORD"
            if environ.get(variable):
                found[f"recovery.{service}_{kind}_password"] = environ[variable]
    return found


async def run_sql(url: str, sql: str, *, settings: Mapping[str, str]) -> None:
    """Run ``sql`` on ``url`` in one transaction, with the custom settings (``recovery.*``) set for it."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for name, value in settings.items():
                await conn.execute("SELECT set_config($1, $2, true)", name, value)
            await conn.execute(sql)
    finally:
        await conn.close()


def service_migrations(service: str) -> Path:
    """Return the migrations folder of ``service``; raises ProvisionError for an unknown service."""
    if service not in SERVICES:
        raise ProvisionError(f"SERVICE_NAME must be one of {', '.join(SERVICES)}, not {service!r}")
    return SERVICES_ROOT / service / "migrations"


async def migrate_and_grant(settings: KitSettings, *, grants_sql: str, app_role: str) -> list[str]:
    """Apply the service's migrations as the connecting (owner) role, then grant ``app_role`` its rights."""
    schema = check_schema_name(settings.schema)
    applied = await migrations.migrate(
        settings.database_url, schema=schema, service_migrations=service_migrations(settings.service_name)
    )
    await run_sql(
        settings.database_url, grants_sql, settings={"recovery.schema": schema, "recovery.app_role": app_role}
    )
    return applied


async def schema_ready(settings: KitSettings) -> str | None:
    """Return None when every migration of the service is recorded with its checksum, else what is missing.

    Raises ProvisionError when a recorded migration has another checksum (the service would refuse to start).
    """
    schema = check_schema_name(settings.schema)
    wanted = migrations.discover(
        ("kit", migrations.KIT_MIGRATIONS), (schema, service_migrations(settings.service_name))
    )
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(f"SELECT version, checksum FROM {schema}.schema_migrations")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return f"schema {schema} is not migrated yet"
    except asyncpg.InsufficientPrivilegeError:
        return f"no grants on {schema} yet (the migration Job grants them)"
    finally:
        await conn.close()
    done = {r["version"]: r["checksum"] for r in rows}
    for migration in wanted:
        if migration.version not in done:
            return f"migration {migration.version} not applied yet"
        if done[migration.version] != migration.checksum:
            raise ProvisionError(f"{schema}: applied migration {migration.version} differs from this image's")
    return None


# ------------------------------------------------------------------------------------------ retrying


def _retryable(exc: BaseException) -> bool:
    """True for an outage or a not-yet-created login: worth waiting for, unlike a wrong setting."""
    not_yet = (KafkaConnectionError, asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)
    return isinstance(exc, not_yet) or is_transient(exc)


async def _retrying(what: str, attempt: Callable[[], Awaitable], *, wait_seconds: float):
    deadline = time.monotonic() + wait_seconds
    delay = 1.0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not _retryable(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: %s: %s; retrying in %.0fs", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)


async def wait_until_ready(
    settings: KitSettings, *, timeout: float, poll: float = 2.0, topics: Iterable[str] | None = None
) -> bool:
    """Return True once the schema is migrated and the topics exist; False when ``timeout`` passes first."""
    names = [t.name for t in CATALOGUE] if topics is None else list(topics)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            waiting = await schema_ready(settings) or await topics_ready(settings, names)
        except Exception as exc:
            if not _retryable(exc):  # ProvisionError included: a wrong partition count or an edited migration
                raise
            waiting = f"{type(exc).__name__}: {exc}"
        if waiting is None:
            log.info("%s: schema migrated and %d topics present", settings.service_name, len(names))
            return True
        if waiting != last:
            log.info("%s: waiting: %s", settings.service_name, waiting)
            last = waiting
        if time.monotonic() + poll > deadline:
            log.error("%s: still waiting after %.0fs: %s", settings.service_name, timeout, waiting)
            return False
        await asyncio.sleep(poll)


# ------------------------------------------------------------------------------------------------ main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.common.provision", description=__doc__.split("\n")[0])
    tasks = parser.add_subparsers(dest="task", required=True)
    topics = tasks.add_parser("topics", help="create the catalogue's topics")
    topics.add_argument("--min-insync-replicas", type=int, default=1)
    roles = tasks.add_parser("roles", help="create or update the services' login roles")
    roles.add_argument("--sql", type=Path, required=True)
    migrate = tasks.add_parser("migrate", help="migrate SERVICE_NAME's schema and grant its runtime role")
    migrate.add_argument("--grants", type=Path, required=True)
    migrate.add_argument("--app-role", default="")
    wait = tasks.add_parser("wait", help="wait until the schema is migrated and the topics exist")
    wait.add_argument("--timeout", type=float, default=600.0)
    for sub in (topics, roles, migrate):
        sub.add_argument("--wait-seconds", type=float, default=300.0, help="how long to retry an outage")
    return parser


async def _run(args: argparse.Namespace, settings: KitSettings, environ: Mapping[str, str]) -> int:
    if args.task == "topics":
        report = await _retrying(
            "topics",
            lambda: create_topics(settings, [t.name for t in CATALOGUE], min_insync_replicas=args.min_insync_replicas),
            wait_seconds=args.wait_seconds,
        )
        log.info(
            "topics: %d created, %d already there; %d partitions, replication %d, min.insync.replicas %d",
            len(report.created),
            len(report.existing),
            settings.topic_partitions,
            settings.topic_replication,
            args.min_insync_replicas,
        )
        return 0
    if args.task == "roles":
        sql = args.sql.read_text()
        values = password_settings(environ)
        await _retrying(
            "roles", lambda: run_sql(settings.database_url, sql, settings=values), wait_seconds=args.wait_seconds
        )
        log.info("roles: %d passwords set", len(values))
        return 0
    if args.task == "migrate":
        grants = args.grants.read_text()
        app_role = args.app_role or f"{settings.service_name}_app"
        applied = await _retrying(
            "migrate",
            lambda: migrate_and_grant(settings, grants_sql=grants, app_role=app_role),
            wait_seconds=args.wait_seconds,
        )
        log.info("%s: applied %s; %s granted", settings.schema, ", ".join(applied) or "nothing new", app_role)
        return 0
    return 0 if await wait_until_ready(settings, timeout=args.timeout) else 1


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one task; returns the process exit code."""
    environ = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    settings = KitSettings.from_env(environ)
    setup_logging(service=f"{settings.service_name}-provision", level=settings.log_level)
    if args.task != "topics" and not settings.database_url:
        log.error("DATABASE_URL is not set")
        return 2
    try:
        return asyncio.run(_run(args, settings, environ))
    except (ProvisionError, migrations.MigrationError) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
