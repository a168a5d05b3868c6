"""Session-wide real infrastructure: a Tansu broker and a PostgreSQL server, started once.

Set KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL to run the suite against existing servers instead.
Nothing starts until a test asks for it, so the unit tier needs no infrastructure at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.embedded import EmbeddedKafka, EmbeddedPostgres


@dataclass(frozen=True)
class Stack:
    kafka: str
    database_url: str


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    started = []
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not kafka:
        broker = EmbeddedKafka(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
        kafka = broker.start()
        started.append(broker)
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        postgres = EmbeddedPostgres(postgres_datadir(), durable=False)
        database_url = postgres.start()
        started.append(postgres)
    yield Stack(kafka=kafka, database_url=database_url)
    for part in reversed(started):
        part.stop()
        if isinstance(part, EmbeddedPostgres):
            shutil.rmtree(part.datadir.parent, ignore_errors=True)


def postgres_datadir() -> Path:
    """A fresh directory for a test Postgres, outside pytest's tmp tree (which pytest prunes and keeps 0700)."""
    return Path(tempfile.mkdtemp(prefix="recovery-test-pg-")) / "data"
