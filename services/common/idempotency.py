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

``replay`` takes a transaction-scoped advisory lock on (method, request id), so a retry that arrives
while the first call is still running waits for it and then returns its response. The same id with
different parameters raises :class:`IdempotencyConflict` before anything is done. Because the response
is stored in the transaction of the effect, either both exist or neither does.
"""

from __future__ import annotations

import hashlib

import asyncpg
from google.protobuf.message import Message

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

    Runs in the caller's transaction and holds a lock on (method, request id) until it ends. Raises
    IdempotencyConflict when the id was used with different parameters.
    """
    require_request_id(request_id)
    if not conn.is_in_transaction():
        raise RuntimeError("idempotency.replay() must run inside the transaction that does the work")
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))", method, request_id)
    row = await conn.fetchrow(
        "SELECT fingerprint, response FROM request_log WHERE method = $1 AND request_id = $2", method, request_id
    )
    if row is None:
        return None
    if bytes(row["fingerprint"]) != fingerprint:
        raise IdempotencyConflict(
            f"request id {request_id!r} was already used for {method} with different parameters; "
            "nothing was done (use a new request id for a new request)"
        )
    return bytes(row["response"])


async def remember(
    conn: asyncpg.Connection, *, method: str, request_id: str, fingerprint: bytes, response: bytes
) -> None:
    """Store ``response`` for (method, request id) in the caller's transaction, the one that did the work."""
    await conn.execute(
        "INSERT INTO request_log (method, request_id, fingerprint, response) VALUES ($1, $2, $3, $4)",
        method,
        request_id,
        fingerprint,
        response,
    )
