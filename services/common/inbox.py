"""Inbox: which records a consumer has already processed, kept in the transaction of their effect.

A record is identified as CloudEvents identify an event: by its source and its id together (``Identity``).
Two systems that both number their events from 1 send different events; one system re-sending its id sends
the same one.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

Identity = tuple[str, str]  # (ce_source, ce_id)


async def claim(conn: asyncpg.Connection, *, consumer: str, source: str, ce_id: str, topic: str) -> bool:
    """Record the event as processed by ``consumer``; False when it already was (a duplicate: skip it)."""
    return bool(await claim_many(conn, consumer=consumer, events=[(source, ce_id)], topic=topic))


async def claim_many(
    conn: asyncpg.Connection, *, consumer: str, events: Sequence[Identity], topic: str
) -> set[Identity]:
    """Record ``events`` as processed by ``consumer`` in one statement; returns those not processed before.

    An identity repeated inside ``events`` is claimed once: the caller keeps its first record and counts the
    rest as duplicates. A row kept from before identities had a source (``ce_source = ''``) covers its id
    from every source.
    """
    if not events:
        return set()
    rows = await conn.fetch(
        """INSERT INTO inbox (consumer, ce_source, ce_id, topic)
           SELECT $1, b.ce_source, b.ce_id, $4
           FROM (SELECT DISTINCT * FROM unnest($2::text[], $3::text[]) AS u(ce_source, ce_id)) AS b
           WHERE NOT EXISTS (
               SELECT 1 FROM inbox AS legacy
               WHERE legacy.consumer = $1 AND legacy.ce_source = '' AND legacy.ce_id = b.ce_id)
           ON CONFLICT DO NOTHING RETURNING ce_source, ce_id""",
        consumer,
        [source for source, _ in events],
        [ce_id for _, ce_id in events],
        topic,
    )
    return {(row["ce_source"], row["ce_id"]) for row in rows}


async def release(conn: asyncpg.Connection, *, consumer: str, events: Sequence[Identity]) -> None:
    """Forget claims of this transaction for records that were dead-lettered, so a replay of them is processed."""
    if events:
        await conn.execute(
            """DELETE FROM inbox USING unnest($2::text[], $3::text[]) AS u(ce_source, ce_id)
               WHERE inbox.consumer = $1 AND inbox.ce_source = u.ce_source AND inbox.ce_id = u.ce_id""",
            consumer,
            [source for source, _ in events],
            [ce_id for _, ce_id in events],
        )
