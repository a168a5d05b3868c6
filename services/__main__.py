"""``python -m services`` (``make run``): the whole system on one machine.

Starts a Tansu broker and an embedded PostgreSQL (data under ``.data/``) unless
``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` name existing ones, creates the catalogue's topics,
starts each service as its own process (each applies its own migrations as it starts, as in production),
waits until every service's gRPC health reports SERVING, prints where everything listens, and on Ctrl-C
or SIGTERM stops the services gracefully, then the broker and the database.
If a service dies on its own, the rest are stopped too and the exit code says so.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from services.common.kafka import ensure_topics
from services.common.settings import KitSettings
from services.common.token import SECRET_FILE
from services.common.topics import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("intake", "escalation", "compensation", "followup")
# Stable local ports, so the frontline UI and scrapers can be pointed at them; 0 in the env picks free ones.
DEFAULT_GRPC_PORTS = {"intake": 50051, "escalation": 50052, "compensation": 50053, "followup": 50054}
DEFAULT_METRICS_PORTS = {"intake": 9101, "escalation": 9102, "compensation": 9103, "followup": 9104}
READY_LINE = "The system is up. Press Ctrl-C to stop it."


@dataclass
class Child:
    """A running service process and where it listens."""

    name: str
    process: subprocess.Popen
    grpc_port: int
    metrics_port: int


def existing_services() -> list[str]:
    """Return the services that have an entrypoint (``services/<name>/__main__.py``)."""
    return [name for name in SERVICES if (ROOT / "services" / name / "__main__.py").exists()]


TOKEN_HINT = "signed with this data directory's secret; roles: agent, senior_agent, team_lead, manager, director"


def local_jwt_secret(data_dir: Path) -> str:
    """Return ``JWT_SECRET`` when set, else this data directory's own secret, made once (kept, so tokens survive a
    restart) and readable by its owner only. No secret is built into the code: outside this runner one is given."""
    if os.environ.get("JWT_SECRET"):
        return os.environ["JWT_SECRET"]
    path = data_dir / SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _port(variable: str, default: int) -> int:
    port = int(os.environ.get(variable, default))
    return port or free_port()


def _say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    """Run the system until interrupted; returns the process exit code."""
    stopping = False

    def request_stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    data_dir = Path(os.environ.get("DATA_DIR", ROOT / ".data")).absolute()
    embedded: list = []
    children: list[Child] = []
    exit_code = 0
    try:
        kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not kafka:
            data_dir.mkdir(parents=True, exist_ok=True)
            broker = EmbeddedKafka(port=_port("EMBEDDED_KAFKA_PORT", 9092), log_path=data_dir / "tansu.log")
            kafka = broker.start()
            embedded.append(broker)
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(data_dir / "postgres", port=_port("EMBEDDED_POSTGRES_PORT", 0))
            embedded.append(postgres)
            database_url = postgres.start()
        settings = KitSettings.from_env(
            kafka_bootstrap_servers=kafka,
            database_url=database_url,
            data_dir=str(data_dir),
            jwt_secret=local_jwt_secret(data_dir),
        )
        asyncio.run(ensure_topics(settings, [t.name for t in CATALOGUE]))
        names = existing_services()
        for name in names:
            children.append(_spawn(name, settings))
        if not _wait_until_serving(children, stopping=lambda: stopping):
            exit_code = 1
            return exit_code

        _say(f"kafka      {kafka}   ({len(CATALOGUE)} topics, {settings.topic_partitions} partitions each)")
        _say(f"postgres   {_without_password(database_url)}")
        for child in children:
            _say(
                f"{child.name:<12} gRPC 127.0.0.1:{child.grpc_port}   "
                f"metrics http://127.0.0.1:{child.metrics_port}/metrics   pid {child.process.pid}"
            )
        _say(f"tokens     python -m services.common.token --sub e-1 --role agent --team front-desk   ({TOKEN_HINT})")
        missing = [name for name in SERVICES if name not in names]
        if missing:
            _say(f"not built yet: {', '.join(missing)}")
        _say(READY_LINE)

        while not stopping:
            dead = [c for c in children if c.process.poll() is not None]
            if dead:
                for child in dead:
                    _say(f"{child.name} exited with code {child.process.returncode}; stopping everything")
                exit_code = 1
                break
            time.sleep(0.2)
    finally:
        _stop_children(children)
        for part in reversed(embedded):
            part.stop()
        _say("stopped")
    return exit_code


def _without_password(url: str) -> str:
    """Return ``url`` with its password masked: what `make run` prints may end up in a terminal log."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _spawn(name: str, settings: KitSettings) -> Child:
    grpc_port = _port(f"{name.upper()}_GRPC_PORT", DEFAULT_GRPC_PORTS[name])
    metrics_port = _port(f"{name.upper()}_METRICS_PORT", DEFAULT_METRICS_PORTS[name])
    env = os.environ | {
        "SERVICE_NAME": name,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "DATA_DIR": settings.data_dir,
        "GRPC_PORT": str(grpc_port),
        "METRICS_PORT": str(metrics_port),
        "JWT_SECRET": settings.jwt_secret,
        # Locally the API is discoverable (grpcurl list, UIs' explorers); production leaves it off.
        "GRPC_REFLECTION": os.environ.get("GRPC_REFLECTION", "true"),
    }
    process = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env, cwd=ROOT)
    return Child(name=name, process=process, grpc_port=grpc_port, metrics_port=metrics_port)


def _serving(port: int) -> bool:
    """True when the gRPC health service on ``port`` reports SERVING."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _wait_until_serving(children: list[Child], *, stopping, timeout: float = 180.0) -> bool:
    """Wait until every service reports SERVING; False when one exits, Ctrl-C comes or ``timeout`` passes."""
    waiting = list(children)
    deadline = time.monotonic() + timeout
    while waiting:
        if stopping():
            return False
        for child in list(waiting):
            if child.process.poll() is not None:
                _say(f"{child.name} exited with code {child.process.returncode} while starting")
                return False
            if _serving(child.grpc_port):
                waiting.remove(child)
        if time.monotonic() > deadline:
            _say(f"not serving after {timeout:.0f}s: {', '.join(c.name for c in waiting)}")
            return False
        time.sleep(0.2)
    return True


def _stop_children(children: list[Child], grace: float = 30.0) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{child.name} did not stop within {grace:.0f}s; killing it")
            child.process.kill()
            child.process.wait()


if __name__ == "__main__":
    sys.exit(main())
