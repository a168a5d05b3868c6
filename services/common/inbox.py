"""Inbox: which records a consumer has already processed, kept in the transaction of their effect."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def claim(conn: asyncpg.Connection, *, consumer: str, ce_id: str, topic: str) -> bool:
    """Record ``ce_id`` as processed by ``consumer``; False when it already was (a duplicate: skip it)."""
    return bool(await claim_many(conn, consumer=consumer, ce_ids=[ce_id], topic=topic))


async def claim_many(conn: asyncpg.Connection, *, consumer: str, ce_ids: Sequence[str], topic: str) -> set[str]:
    """Record ``ce_ids`` as processed by ``consumer`` in one statement; returns those not processed before.

    An id repeated inside ``ce_ids`` is claimed once: the caller keeps its first record and counts the rest
    as duplicates.
    """
    if not ce_ids:
        return set()
    rows = await conn.fetch(
        """INSERT INTO inbox (consumer, ce_id, topic)
           SELECT $1, ce_id, $3 FROM (SELECT DISTINCT unnest($2::text[]) AS ce_id) AS batch
           ON CONFLICT DO NOTHING RETURNING ce_id""",
        consumer,
        list(ce_ids),
        topic,
    )
    return {row["ce_id"] for row in rows}


async def release(conn: asyncpg.Connection, *, consumer: str, ce_ids: Sequence[str]) -> None:
    """Forget claims of this transaction for records that were dead-lettered, so a replay of them is processed."""
    if ce_ids:
        await conn.execute("DELETE FROM inbox WHERE consumer = $1 AND ce_id = ANY($2::text[])", consumer, list(ce_ids))
