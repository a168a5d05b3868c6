"""Idempotent RPCs on a real Postgres: replay, conflict, and two concurrent calls with one request id."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from recovery.events.v1 import common_pb2
from recovery.intake.v1 import intake_pb2

from services.common.db import Database
from services.common.errors import IdempotencyConflict, InvalidInput
from services.common.idempotency import fingerprint, release_many, remember, remember_many, replay, replay_many
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration

METHOD = "/recovery.intake.v1.IntakeService/ReportFailure"


@pytest.fixture
async def effects(db):
    """A stand-in for the state a handler changes."""
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE effects (request_id text NOT NULL, customer_id text NOT NULL)")
    return db


def new_request(request_id: str, customer_id: str = "cust-42") -> intake_pb2.ReportFailureRequest:
    return intake_pb2.ReportFailureRequest(
        request_id=request_id,
        customer_id=customer_id,
        category=common_pb2.CATEGORY_LATE_DELIVERY,
        order_value=common_pb2.Money(amount_minor=12999, currency="EUR"),
    )


async def report_failure(db: Database, request: intake_pb2.ReportFailureRequest) -> intake_pb2.ReportFailureResponse:
    """A handler following the module's flow: replay, do the work, remember, in one transaction."""
    digest = fingerprint(request)
    async with db.transaction() as conn:
        stored = await replay(conn, method=METHOD, request_id=request.request_id, fingerprint=digest)
        if stored is not None:
            return intake_pb2.ReportFailureResponse.FromString(stored)
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", request.request_id, request.customer_id)
        response = intake_pb2.ReportFailureResponse(failure_id=f"f-{uuid.uuid4().hex}", case_id="case-1")
        await remember(
            conn,
            method=METHOD,
            request_id=request.request_id,
            fingerprint=digest,
            response=response.SerializeToString(),
        )
        return response


async def effect_count(db: Database) -> int:
    return await db.pool.fetchval("SELECT count(*) FROM effects")


async def test_a_new_request_id_is_not_replayed_and_remember_stores_the_response(db):
    request_id = f"req-{uuid.uuid4().hex}"
    digest = fingerprint(new_request(request_id))
    async with db.transaction() as conn:
        assert await replay(conn, method=METHOD, request_id=request_id, fingerprint=digest) is None
        await remember(conn, method=METHOD, request_id=request_id, fingerprint=digest, response=b"\x00stored\xff")
    row = await db.pool.fetchrow("SELECT * FROM request_log WHERE request_id = $1", request_id)
    assert (row["method"], bytes(row["fingerprint"]), bytes(row["response"])) == (METHOD, digest, b"\x00stored\xff")


async def test_a_retry_with_the_same_parameters_gets_the_stored_response_and_does_nothing(effects):
    request_id = f"req-{uuid.uuid4().hex}"
    first = await report_failure(effects, new_request(request_id))
    again = await report_failure(effects, new_request(request_id))
    assert again == first
    assert await effect_count(effects) == 1


async def test_the_same_id_for_another_method_is_a_different_request(db):
    request_id = f"req-{uuid.uuid4().hex}"
    digest = fingerprint(new_request(request_id))
    async with db.transaction() as conn:
        assert await replay(conn, method=METHOD, request_id=request_id, fingerprint=digest) is None
        await remember(conn, method=METHOD, request_id=request_id, fingerprint=digest, response=b"one")
    async with db.transaction() as conn:
        assert await replay(conn, method="/other.Service/Method", request_id=request_id, fingerprint=b"x") is None


async def test_the_same_id_with_other_parameters_is_a_conflict_and_changes_nothing(effects):
    request_id = f"req-{uuid.uuid4().hex}"
    first = await report_failure(effects, new_request(request_id, customer_id="cust-42"))

    with pytest.raises(IdempotencyConflict, match=f"request id '{request_id}' was already used for {METHOD}"):
        await report_failure(effects, new_request(request_id, customer_id="cust-43"))

    assert await effect_count(effects) == 1
    rows = await effects.pool.fetch("SELECT response FROM request_log WHERE request_id = $1", request_id)
    assert [intake_pb2.ReportFailureResponse.FromString(r["response"]) for r in rows] == [first]


async def test_remember_without_a_claim_in_its_transaction_is_a_programming_error(db):
    request_id = f"req-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError, match="found no claim: call replay"):
        async with db.transaction() as conn:
            await remember(conn, method=METHOD, request_id=request_id, fingerprint=b"x", response=b"r")
    assert await db.pool.fetchval("SELECT count(*) FROM request_log WHERE request_id = $1", request_id) == 0


async def test_nothing_is_remembered_when_the_work_rolls_back(effects):
    request_id = f"req-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError, match="work failed"):
        async with effects.transaction() as conn:
            digest = fingerprint(new_request(request_id))
            assert await replay(conn, method=METHOD, request_id=request_id, fingerprint=digest) is None
            await remember(conn, method=METHOD, request_id=request_id, fingerprint=digest, response=b"r")
            raise RuntimeError("work failed")
    assert await effects.pool.fetchval("SELECT count(*) FROM request_log WHERE request_id = $1", request_id) == 0
    await report_failure(effects, new_request(request_id))  # the retry does the work
    assert await effect_count(effects) == 1


async def test_two_concurrent_calls_with_one_new_id_do_the_work_once(effects):
    request_id = f"req-{uuid.uuid4().hex}"
    request = new_request(request_id)
    digest = fingerprint(request)
    first_has_lock = asyncio.Event()
    second_is_waiting = asyncio.Event()
    second_pid: list[int] = []

    async def first_call() -> bytes:
        async with effects.transaction() as conn:
            assert await replay(conn, method=METHOD, request_id=request_id, fingerprint=digest) is None
            first_has_lock.set()
            await second_is_waiting.wait()
            await conn.execute("INSERT INTO effects VALUES ($1, $2)", request_id, request.customer_id)
            response = intake_pb2.ReportFailureResponse(failure_id="f-first", case_id="case-1").SerializeToString()
            await remember(conn, method=METHOD, request_id=request_id, fingerprint=digest, response=response)
            return response

    async def second_call() -> bytes | None:
        await first_has_lock.wait()
        async with effects.transaction() as conn:
            second_pid.append(conn.get_server_pid())
            return await replay(conn, method=METHOD, request_id=request_id, fingerprint=digest)

    async def waiting_for_the_first() -> bool:
        # The second call's claim waits on the first call's claimed row (its transaction's lock).
        if not second_pid:
            return False
        return await effects.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)", second_pid[0]
        )

    first = asyncio.create_task(first_call())
    second = asyncio.create_task(second_call())
    try:
        await eventually(waiting_for_the_first, timeout=10)
        assert not second.done()
        second_is_waiting.set()
        first_response, second_response = await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
    finally:
        second_is_waiting.set()
        await asyncio.gather(first, second, return_exceptions=True)

    assert second_response == first_response
    assert intake_pb2.ReportFailureResponse.FromString(second_response).failure_id == "f-first"
    assert await effect_count(effects) == 1


async def test_replay_outside_a_transaction_is_a_programming_error(db):
    async with db.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await replay(conn, method=METHOD, request_id="req-1", fingerprint=b"x")


async def test_replay_refuses_an_empty_request_id(db):
    async with db.transaction() as conn:
        with pytest.raises(InvalidInput, match="request_id"):
            await replay(conn, method=METHOD, request_id="", fingerprint=b"x")


# ------------------------------------------------------------------------------- a group of calls at once


async def test_a_group_claims_new_ids_replays_known_ones_and_names_a_conflict_in_one_pass(db):
    known, changed, new = (f"req-{uuid.uuid4().hex}" for _ in range(3))
    async with db.transaction() as conn:
        for request_id in (known, changed):
            await replay(conn, method=METHOD, request_id=request_id, fingerprint=b"before")
            await remember(conn, method=METHOD, request_id=request_id, fingerprint=b"before", response=b"was")
    async with db.transaction() as conn:
        claims = [(new, b"new"), (known, b"before"), (changed, b"other")]
        new_answer, known_answer, conflict = await replay_many(conn, method=METHOD, claims=claims)
        assert new_answer is None and known_answer == b"was"
        assert isinstance(conflict, IdempotencyConflict) and changed in str(conflict)
        await remember_many(conn, method=METHOD, responses=[(new, b"new", b"now")])
    assert await db.pool.fetchval("SELECT response FROM request_log WHERE request_id = $1", new) == b"now"


async def test_a_refused_call_of_a_group_gives_its_id_back_and_the_others_keep_theirs(db):
    refused, accepted = f"req-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex}"
    async with db.transaction() as conn:
        await replay_many(conn, method=METHOD, claims=[(refused, b"a"), (accepted, b"b")])
        await release_many(conn, method=METHOD, request_ids=[refused])
        await remember_many(conn, method=METHOD, responses=[(accepted, b"b", b"done")])
    stored = await db.pool.fetch(
        "SELECT request_id, response FROM request_log WHERE request_id = ANY($1)", [refused, accepted]
    )
    assert [(r["request_id"], r["response"]) for r in stored] == [(accepted, b"done")]


async def test_remember_many_for_an_id_not_claimed_here_is_a_programming_error(db):
    with pytest.raises(RuntimeError, match="found UPDATE 0 of 1 claims"):
        async with db.transaction() as conn:
            await remember_many(conn, method=METHOD, responses=[(f"req-{uuid.uuid4().hex}", b"x", b"r")])
