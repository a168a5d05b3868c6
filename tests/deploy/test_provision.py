"""The deployment's one-shot tasks against a real PostgreSQL and a real broker: the roles SQL, migrations as each
service's owner, the runtime grants, topic creation from the catalogue, the init container's wait, and every
service starting as its least-privileged runtime role, healthy by the image's health check."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.common import migrations
from services.common.db import Database
from services.common.embedded import EmbeddedKafka, free_port
from services.common.provision import SERVICES, schema_ready, service_migrations
from services.common.settings import KitSettings
from services.common.topics import CATALOGUE
from tests.deploy.manifests import DEPLOY, ROOT
from tests.support.running import TEST_JWT_SECRET

pytestmark = pytest.mark.integration

SQL = DEPLOY / "k8s" / "base" / "sql"
ROLES = [f"{s}_{kind}" for s in SERVICES for kind in ("owner", "app")]


def password(role: str) -> str:
    return f"pw-{role}-{PASSWORD_SALT}"


PASSWORD_SALT = uuid.uuid4().hex[:8]


def url_as(url: str, user: str | None = None, *, database: str | None = None, with_password: bool = True) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if user:
        netloc = f"{user}:{quote(password(user))}@{netloc}" if with_password else f"{user}@{netloc}"
    else:
        netloc = parts.netloc
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path))


def provision(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m services.common.provision ...` as the Jobs do."""
    return subprocess.run(
        [sys.executable, "-m", "services.common.provision", *args],
        env=os.environ | {"LOG_LEVEL": "INFO"} | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
async def database(stack):
    """A fresh database on the test server, with the roles removed again afterwards."""
    name = f"recovery_deploy_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    yield url_as(stack.database_url, database=name)
    admin = await asyncpg.connect(stack.database_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        for role in ROLES:
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def provisioned(database):
    """The database after the migration Job: roles (as the administrator), then each schema as its owner."""
    passwords = {
        f"{s.upper()}_DB_{k.upper()}_PASSWORD": password(f"{s}_{k}") for s in SERVICES for k in ("owner", "app")
    }
    for _ in range(2):  # idempotent: every deployment runs it again
        result = provision("roles", "--sql", str(SQL / "roles.sql"), env={"DATABASE_URL": database} | passwords)
        assert result.returncode == 0, result.stderr
    # Before any migration the runtime role's wait reports what is missing.
    app = KitSettings(service_name="intake", database_url=url_as(database, "intake_app"))
    assert "not migrated" in await schema_ready(app)

    async def migrate(service: str) -> subprocess.CompletedProcess:
        env = {
            "SERVICE_NAME": service,
            "DATABASE_URL": url_as(database, f"{service}_owner", with_password=False),
            "PGPASSWORD": password(f"{service}_owner"),
        }
        return await asyncio.to_thread(provision, "migrate", "--grants", str(SQL / "grants.sql"), env=env)

    for _ in range(2):
        results = await asyncio.gather(*(migrate(s) for s in SERVICES))
        for service, result in zip(SERVICES, results, strict=True):
            assert result.returncode == 0, f"{service}: {result.stderr}"
    assert "nothing new" in results[0].stderr
    return database


async def test_the_roles_have_no_attribute_beyond_login(provisioned):
    conn = await asyncpg.connect(url_as(provisioned, "intake_app"))
    try:
        rows = await conn.fetch(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
            "FROM pg_roles WHERE rolname = ANY($1::text[])",
            ROLES,
        )
    finally:
        await conn.close()
    assert {r["rolname"] for r in rows} == set(ROLES)
    assert all(r["rolcanlogin"] and not any(r[k] for k in list(r.keys())[1:6]) for r in rows)


async def test_each_schema_and_its_tables_belong_to_the_services_owner_role(provisioned):
    conn = await asyncpg.connect(url_as(provisioned, "intake_owner"))
    try:
        for service in SERVICES:
            owner = await conn.fetchval("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", service)
            assert owner == f"{service}_owner"
            table_owners = await conn.fetch("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = $1", service)
            assert [r["tableowner"] for r in table_owners] == [f"{service}_owner"]
    finally:
        await conn.close()


@pytest.mark.parametrize("service", SERVICES)
async def test_the_runtime_role_passes_the_start_up_check_and_works_its_own_tables_only(provisioned, service):
    url = url_as(provisioned, f"{service}_app")
    # What every service runs as it starts: the migration check (nothing to apply) and the pool.
    assert await migrations.migrate(url, schema=service, service_migrations=service_migrations(service)) == []
    assert await schema_ready(KitSettings(service_name=service, database_url=url)) is None
    db = await Database.connect(url, schema=service, max_size=2)
    try:
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO outbox (topic, key, value, header_keys, header_values, ce_id) "
                "VALUES ('t', NULL, '\\x00', '{}', '{}', 'x')"
            )
            await conn.execute("DELETE FROM outbox WHERE ce_id = 'x'")
        forbidden = [
            "INSERT INTO schema_migrations (version, checksum) VALUES ('x', 'x')",
            "DELETE FROM schema_migrations",
            "DROP TABLE outbox",
            "ALTER TABLE outbox ADD COLUMN extra int",
            "TRUNCATE outbox",
            *(f"SELECT * FROM {other}.outbox" for other in SERVICES if other != service),
        ]
        if service == "escalation":
            forbidden += ["UPDATE audit_log SET reason = ''", "DELETE FROM audit_log"]
        for sql in forbidden:
            async with db.pool.acquire() as conn:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(sql)
    finally:
        await db.close()


# --------------------------------------------------------------------------------------- with a broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker of this module's own: the catalogue's real topic names must not meet other tests' shapes."""
    kafka = EmbeddedKafka(log_path=tmp_path_factory.mktemp("tansu-deploy") / "tansu.log")
    yield kafka.start()
    kafka.stop()


def kafka_env(bootstrap: str, partitions: int = 3) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TOPIC_PARTITIONS": str(partitions), "TOPIC_REPLICATION": "1"}


async def partition_counts(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in CATALOGUE])
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}


async def test_the_topics_task_creates_the_catalogue_once_and_refuses_a_wrong_shape(broker):
    for _ in range(2):
        result = await asyncio.to_thread(provision, "topics", "--min-insync-replicas", "1", env=kafka_env(broker))
        assert result.returncode == 0, result.stderr
    assert await partition_counts(broker) == {t.name: 3 for t in CATALOGUE}
    assert f"0 created, {len(CATALOGUE)} already there" in result.stderr
    wrong = await asyncio.to_thread(provision, "topics", env=kafka_env(broker, partitions=4))
    assert wrong.returncode == 1 and "TOPIC_PARTITIONS=4" in wrong.stderr
    unsafe = await asyncio.to_thread(provision, "topics", "--min-insync-replicas", "2", env=kafka_env(broker))
    assert unsafe.returncode == 1 and "min.insync.replicas 2" in unsafe.stderr


def spawn(service: str, env: dict[str, str], log) -> subprocess.Popen:
    """Start a service with the command the image runs (python -m services.<name>)."""
    command = [sys.executable, "-m", f"services.{service}"]
    return subprocess.Popen(command, env=os.environ | env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)


async def test_every_service_starts_as_its_runtime_role_and_reports_serving(provisioned, broker, tmp_path):
    created = await asyncio.to_thread(provision, "topics", env=kafka_env(broker))
    assert created.returncode == 0, created.stderr
    children = {}
    logs = []
    try:
        for service in SERVICES:
            env = kafka_env(broker) | {
                "SERVICE_NAME": service,
                "DATABASE_URL": url_as(provisioned, f"{service}_app", with_password=False),
                "PGPASSWORD": password(f"{service}_app"),
                "GRPC_PORT": str(free_port()),
                "METRICS_PORT": str(free_port()),
                "DATA_DIR": str(tmp_path / service),
                "JWT_SECRET": TEST_JWT_SECRET,  # the k8s overlays give RS256 keys; no secret is built in
            }
            # The init container first: the schema is migrated and the topics exist.
            waited = await asyncio.to_thread(provision, "wait", "--timeout", "30", env=env)
            assert waited.returncode == 0, waited.stderr
            logs.append((tmp_path / f"{service}.log").open("w"))
            children[service] = (spawn(service, env, logs[-1]), env)
        deadline = time.monotonic() + 120
        waiting = set(SERVICES)
        while waiting and time.monotonic() < deadline:
            for service in sorted(waiting):
                process, env = children[service]
                assert process.poll() is None, (tmp_path / f"{service}.log").read_text()[-3000:]
                check = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "services.common.healthcheck", "--timeout", "1"],
                    env=os.environ | env,
                    capture_output=True,
                    text=True,
                )
                if check.returncode == 0:
                    waiting.discard(service)
            await asyncio.sleep(0.5)
        assert not waiting, {s: (tmp_path / f"{s}.log").read_text()[-3000:] for s in waiting}
    finally:
        for process, _env in children.values():
            process.send_signal(signal.SIGTERM)
        for service, (process, _env) in children.items():
            try:
                assert await asyncio.to_thread(process.wait, 60) == 0, (tmp_path / f"{service}.log").read_text()[-3000:]
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        for log in logs:
            log.close()
