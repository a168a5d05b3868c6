"""Idempotent RPCs: the same client request id with the same parameters gets the same stored response.

Every mutating RPC's request carries ``request_id`` (the client's idempotency key). A handler runs, in
one transaction::

    request_id = require_request_id(request.request_id)
    digest = fingerprint(request)
    async with db.transaction() as conn:
        stored = await replay(conn, method=METHOD, request_id=request_id, fingerprint=digest)
        if stored is not None:
            return Response.FromString(stored)        # a retry: nothing is done again
        response = ...                                 # do the work (state change, outbox rows)
        await remember(conn, method=METHOD, request_id=request_id, fingerprint=digest,
                       response=response.SerializeToString())
    return response

``replay`` claims (method, request id) with one statement: it inserts the request's row without a response,
or, when the id is known, reads the stored response. A retry that arrives while the first call is still
running waits on the claimed row until that transaction ends, then returns its response (or, if it rolled
back, claims the id itself). The same id with different parameters raises :class:`IdempotencyConflict`
before anything is done. Because the claim and the response are written in the transaction of the effect,
either all exist or none does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg
from google.protobuf.message import Message

from services.common.db import columns
from services.common.errors import FieldViolation, IdempotencyConflict, InvalidInput

MAX_REQUEST_ID_LENGTH = 128


def require_request_id(request_id: str) -> str:
    """Return ``request_id``; raises InvalidInput when it is empty or longer than 128 characters."""
    if not request_id:
        raise InvalidInput.of(FieldViolation("request_id", "required: a client-chosen idempotency key"))
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidInput.of(
            FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters, got {len(request_id)}")
        )
    return request_id


def fingerprint(request: Message) -> bytes:
    """Return the SHA-256 of the request's deterministic serialisation without its ``request_id``."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


async def replay(conn: asyncpg.Connection, *, method: str, request_id: str, fingerprint: bytes) -> bytes | None:
    """Return the stored response of an earlier call with this id, or None when the id is new.

    Runs in the caller's transaction and claims (method, request id) until it ends: one statement for a new
    id, two for a retry. Raises IdempotencyConflict when the id was used with different parameters.
    """
    require_request_id(request_id)
    if not conn.is_in_transaction():
        raise RuntimeError("idempotency.replay() must run inside the transaction that does the work")
    claimed = await conn.fetchval(
        """INSERT INTO request_log (method, request_id, fingerprint) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""",
        method,
        request_id,
        fingerprint,
    )
    if claimed:
        return None
    # A new statement, so a new snapshot: it sees the row of the transaction the claim waited for.
    row = await conn.fetchrow(
        "SELECT fingerprint, response FROM request_log WHERE method = $1 AND request_id = $2", method, request_id
    )
    answer = _stored(row, method=method, request_id=request_id, fingerprint=fingerprint)
    if isinstance(answer, IdempotencyConflict):
        raise answer
    return answer


async def remember(
    conn: asyncpg.Connection, *, method: str, request_id: str, fingerprint: bytes, response: bytes
) -> None:
    """Store ``response`` for the (method, request id) that ``replay`` claimed in this same transaction."""
    status = await conn.execute(
        """UPDATE request_log SET response = $4
           WHERE method = $1 AND request_id = $2 AND fingerprint = $3 AND response IS NULL""",
        method,
        request_id,
        fingerprint,
        response,
    )
    if status != "UPDATE 1":
        raise RuntimeError(
            f"idempotency.remember() for {method} {request_id!r} found no claim: "
            "call replay() first, in this transaction"
        )


async def replay_many(
    conn: asyncpg.Connection, *, method: str, claims: Sequence[tuple[str, bytes]]
) -> list[bytes | IdempotencyConflict | None]:
    """``replay`` for (request id, fingerprint) claims of distinct ids: per claim, the stored response, the
    conflict, or None when the id is new and now claimed. One statement when every id is new, two otherwise.

    The ids are claimed in their sorted order, so two groups sharing ids queue instead of deadlocking.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("idempotency.replay_many() must run inside the transaction that does the work")
    ordered = sorted(claims)
    claimed = {
        row["request_id"]
        for row in await conn.fetch(
            """INSERT INTO request_log (method, request_id, fingerprint)
               SELECT $1, c.request_id, c.fingerprint
               FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS c(request_id, fingerprint, ord)
               ORDER BY ord
               ON CONFLICT DO NOTHING RETURNING request_id""",
            method,
            *columns(ordered, 2),
        )
    }
    known = [request_id for request_id, _ in claims if request_id not in claimed]
    stored = {}
    if known:
        rows = await conn.fetch(
            "SELECT request_id, fingerprint, response FROM request_log WHERE method = $1 AND request_id = ANY($2)",
            method,
            known,
        )
        stored = {row["request_id"]: row for row in rows}
    return [
        None
        if request_id in claimed
        else _stored(stored.get(request_id), method=method, request_id=request_id, fingerprint=digest)
        for request_id, digest in claims
    ]


async def remember_many(
    conn: asyncpg.Connection, *, method: str, responses: Sequence[tuple[str, bytes, bytes]]
) -> None:
    """``remember`` for (request id, fingerprint, response) of ids ``replay_many`` claimed here, in one statement."""
    if not responses:
        return
    status = await conn.execute(
        """UPDATE request_log r SET response = u.response
           FROM unnest($2::text[], $3::bytea[], $4::bytea[]) AS u(request_id, fingerprint, response)
           WHERE r.method = $1 AND r.request_id = u.request_id AND r.request_id = ANY($2::text[])
             AND r.fingerprint = u.fingerprint AND r.response IS NULL""",
        method,
        *columns(responses, 3),
    )
    if status != f"UPDATE {len(responses)}":
        raise RuntimeError(f"idempotency.remember_many() for {method} found {status} of {len(responses)} claims")


async def release_many(conn: asyncpg.Connection, *, method: str, request_ids: Sequence[str]) -> None:
    """Give back claims of this transaction whose calls were refused: their ids did nothing, so are still new."""
    if request_ids:
        await conn.execute(
            "DELETE FROM request_log WHERE method = $1 AND request_id = ANY($2::text[]) AND response IS NULL",
            method,
            list(request_ids),
        )


def _stored(
    row: asyncpg.Record | None, *, method: str, request_id: str, fingerprint: bytes
) -> bytes | IdempotencyConflict:
    """Return the response stored for a known id, or the conflict when it was used with other parameters."""
    if row is not None and bytes(row["fingerprint"]) != fingerprint:
        return IdempotencyConflict(
            f"request id {request_id!r} was already used for {method} with different parameters; "
            "nothing was done (use a new request id for a new request)"
        )
    if row is None or row["response"] is None:
        raise RuntimeError(f"request id {request_id!r} for {method} was committed without a response")
    return bytes(row["response"])
