"""Pruning what a service only needs to remember for a while, so its tables do not grow for ever.

The inbox remembers which records a consumer applied (a redelivery is a duplicate); the request log the stored
answer of each idempotent RPC (a client's retry gets it again). Both only matter while a redelivery or a retry
can still come: a row older than ``DEDUPE_RETENTION_DAYS`` goes. That retention must outlast every consumed
topic's (``check_retention``, at start): otherwise a record the broker still holds could be applied twice.
Rows go in small batches, each its own transaction, so pruning never holds long locks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from services.common.db import Database, is_transient
from services.common.errors import FieldViolation, InvalidInput
from services.common.metrics import KitMetrics
from services.common.scheduler import utcnow
from services.common.topics import longest_input_retention

log = logging.getLogger(__name__)

# (table, the column that says when a row was written); the indexes of kit migration 0004 serve the scans.
PRUNED = (("inbox", "processed_at"), ("request_log", "created_at"))
BATCH = 5_000


def check_retention(retention: timedelta, *, variable: str = "DEDUPE_RETENTION_DAYS") -> None:
    """Return when ``retention`` outlasts every consumed topic's; raises InvalidInput naming the setting."""
    topics = longest_input_retention()
    if retention <= topics:
        raise InvalidInput.of(
            FieldViolation(
                variable,
                f"{retention.days} days must exceed the longest topic retention ({topics.days} days): a record the "
                "broker still holds could otherwise be applied twice",
            )
        )


async def prune(db: Database, *, older_than: datetime, batch: int = BATCH) -> dict[str, int]:
    """Delete inbox and request-log rows written before ``older_than``; returns how many went, per table."""
    pruned = {}
    for table, column in PRUNED:
        total = 0
        while True:
            async with db.transaction() as conn:
                gone = await conn.fetchval(
                    f"""WITH gone AS (
                            DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                                SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))
                            RETURNING 1)
                        SELECT count(*) FROM gone""",
                    older_than,
                    batch,
                )
            total += gone
            if gone < batch:
                break
        pruned[table] = total
    return pruned


async def keep_pruning(
    db: Database,
    metrics: KitMetrics,
    *,
    retention: timedelta,
    interval: float,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Never returns: prunes every ``interval`` seconds until cancelled (an outage waits for the next round)."""
    while True:
        try:
            for table, n in (await prune(db, older_than=clock() - retention)).items():
                metrics.pruned.labels(table=table).inc(n)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pruning failed (%s: %s); next round in %.0fs", type(exc).__name__, exc, interval,
                        exc_info=not is_transient(exc))  # fmt: skip
        await asyncio.sleep(interval)
