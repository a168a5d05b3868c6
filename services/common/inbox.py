"""Inbox: which records a consumer has already processed, kept in the transaction of their effect."""

from __future__ import annotations

import asyncpg


async def claim(conn: asyncpg.Connection, *, consumer: str, ce_id: str, topic: str) -> bool:
    """Record ``ce_id`` as processed by ``consumer``; False when it already was (a duplicate: skip it)."""
    return bool(
        await conn.fetchval(
            """INSERT INTO inbox (consumer, ce_id, topic) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING true""",
            consumer,
            ce_id,
            topic,
        )
    )
