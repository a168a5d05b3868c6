"""Durable timers: a loop that fires due rows, claimed in Postgres, never an in-memory sleep.

Each service keeps its business delays (SLA deadlines, follow-ups days later) as rows with a due time.
Its ``fire_due(conn, now, limit)`` claims up to ``limit`` rows due at ``now`` with
``FOR UPDATE SKIP LOCKED``, applies their effect (state change plus outbox rows) and marks them done, all
in the transaction this loop opens; it returns the due times it fired. So timers survive restarts (rows),
fire once (the mark commits with the effect), and N replicas share the work (skip locked rows).
A timer that came due while every replica was down fires on the first round after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg

from services.common.db import Database, is_transient
from services.common.metrics import KitMetrics

log = logging.getLogger(__name__)

FireDue = Callable[[asyncpg.Connection, datetime, int], Awaitable[Sequence[datetime]]]


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


class Scheduler:
    """Repeatedly runs ``fire_due`` in a transaction; a full batch means more are due, so no sleep."""

    def __init__(
        self,
        *,
        name: str,
        db: Database,
        fire_due: FireDue,
        metrics: KitMetrics,
        poll_seconds: float = 0.5,
        batch_size: int = 100,
        retry_max_seconds: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.name = name
        self._db = db
        self._fire_due = fire_due
        self._metrics = metrics
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._retry_max_seconds = retry_max_seconds
        self._clock = clock

    async def run(self) -> None:
        """Fire due rows until cancelled; failures roll back, back off and retry (nothing is skipped)."""
        delay = self._poll_seconds
        while True:
            try:
                fired = await self.run_once()
                delay = self._poll_seconds
                if fired < self._batch_size:
                    await asyncio.sleep(self._poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._metrics.scheduler_failures.labels(scheduler=self.name).inc()
                log.warning(
                    "scheduler %s round rolled back (%s: %s); retrying in %.2fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=not is_transient(exc),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_seconds)

    async def run_once(self) -> int:
        """Fire one batch of due rows in one transaction; returns how many fired."""
        now = self._clock()
        async with self._db.transaction() as conn:
            due_times = await self._fire_due(conn, now, self._batch_size)
        # Observed after commit: a rolled-back round fired nothing.
        for due_at in due_times:
            self._metrics.scheduler_lateness.labels(scheduler=self.name).observe(
                max(0.0, (now - due_at).total_seconds())
            )
        if due_times:
            self._metrics.scheduler_fired.labels(scheduler=self.name).inc(len(due_times))
        return len(due_times)
