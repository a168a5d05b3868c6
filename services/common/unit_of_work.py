"""The unit of work: one transaction, the events it stages, and what runs once it has committed.

Handlers get a ``UnitOfWork`` instead of a bare connection. They read and write through typed repositories
(``uow.repository(Kind)``, or a repository module's functions on ``uow.conn``), stage outgoing records with
``uow.stage()`` (written to the outbox in one statement when the transaction ends) and register
``uow.after_commit()`` hooks for what must only happen for committed work (metrics). A block that raises
rolls back, stages nothing and runs no hook.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg

from services.common import outbox
from services.common.db import Database
from services.common.outbox import OutgoingRecord

log = logging.getLogger(__name__)
R = TypeVar("R")


class UnitOfWork:
    """A transaction in progress: its connection, the records to stage and the after-commit hooks."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._staged: list[OutgoingRecord] = []
        self._after_commit: list[Callable[[], None]] = []
        self._repositories: dict[Callable, object] = {}

    def repository(self, kind: Callable[[asyncpg.Connection], R]) -> R:
        """Return the ``kind`` repository on this transaction's connection (one per kind per unit of work).

        The seam of the unit tests: a fake unit of work answers with an in-memory repository instead.
        """
        if kind not in self._repositories:
            self._repositories[kind] = kind(self.conn)
        return self._repositories[kind]  # type: ignore[return-value]

    def stage(self, *records: OutgoingRecord) -> None:
        """Queue ``records`` for the outbox; they are written with the transaction, in this order."""
        self._staged.extend(records)

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` once the transaction has committed (never for rolled-back work)."""
        self._after_commit.append(hook)

    @property
    def staged(self) -> tuple[OutgoingRecord, ...]:
        """The records staged and not yet written (what a unit test of a handler looks at)."""
        return tuple(self._staged)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: if the block raises, its writes, staged records and hooks are all undone."""
        staged, hooks = len(self._staged), len(self._after_commit)
        try:
            async with self.conn.transaction():
                yield
                await self.flush()  # inside the savepoint, so its records go if it is undone
        except BaseException:
            del self._staged[staged:]
            del self._after_commit[hooks:]
            raise

    async def flush(self) -> None:
        """Write the staged records to the outbox now, in one statement (keeps their order before later SQL)."""
        records, self._staged = self._staged, []
        await outbox.stage_many(self.conn, records)

    def _committed(self) -> None:
        hooks, self._after_commit = self._after_commit, []
        for hook in hooks:
            try:
                hook()
            except Exception:  # a metric that fails must not turn committed work into an error
                log.exception("after-commit hook failed")


@asynccontextmanager
async def unit_of_work(db: Database) -> AsyncIterator[UnitOfWork]:
    """Yield a unit of work in a transaction; commits (staged records included) if the block returns."""
    async with db.pool.acquire() as conn:
        uow = UnitOfWork(conn)
        async with conn.transaction():
            yield uow
            await uow.flush()
        uow._committed()
