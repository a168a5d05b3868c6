"""Consumer rules without infrastructure: the record key contract and transient-error recognition."""

from __future__ import annotations

import asyncpg
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from recovery.events.v1 import events_pb2

from services.common import db
from services.common.consumer import check_key
from services.common.db import is_transient
from services.common.deadletter import RawRecord
from services.common.errors import UndecodableRecord


def keyed(key: bytes | None) -> RawRecord:
    return RawRecord(topic="recovery.case-opened.v1", partition=0, offset=7, key=key, value=b"", headers=())


def test_key_equal_to_customer_id_passes():
    check_key(keyed(b"cust-42"), events_pb2.CaseOpened(customer_id="cust-42", case_id="case-1"))
    check_key(keyed("Žemaitė-7".encode()), events_pb2.FailureReported(customer_id="Žemaitė-7"))


@pytest.mark.parametrize("key", [b"cust-43", b"CUST-42", b"cust-42 ", b"\xffcust-42"])
def test_key_other_than_customer_id_is_refused(key):
    with pytest.raises(UndecodableRecord, match="is not the message's customer_id 'cust-42'"):
        check_key(keyed(key), events_pb2.CaseOpened(customer_id="cust-42"))


@pytest.mark.parametrize("key", [None, b""], ids=["none", "empty"])
def test_missing_key_is_refused(key):
    with pytest.raises(UndecodableRecord, match="record has no key"):
        check_key(keyed(key), events_pb2.CaseOpened(customer_id="cust-42"))


def test_a_key_with_an_empty_customer_id_is_refused():
    with pytest.raises(UndecodableRecord, match="customer_id ''"):
        check_key(keyed(b"cust-42"), events_pb2.CaseOpened())


@pytest.mark.parametrize("key", [None, b"", b"anything"])
def test_messages_without_customer_id_pass_whatever_the_key(key):
    check_key(keyed(key), StringValue(value="no customer here"))


class WithSqlstate(Exception):
    def __init__(self, sqlstate: object) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "exc",
    [
        OSError("network unreachable"),
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionFailureError("x"),
        asyncpg.exceptions.ConnectionDoesNotExistError("x"),
        asyncpg.exceptions.ClientCannotConnectError("x"),
        asyncpg.exceptions.SerializationError("x"),
        asyncpg.exceptions.DeadlockDetectedError("x"),
        asyncpg.exceptions.AdminShutdownError("x"),
        asyncpg.exceptions.CannotConnectNowError("x"),
        asyncpg.exceptions.TooManyConnectionsError("x"),
        asyncpg.InterfaceError("connection is closed"),
        WithSqlstate("40001"),
        WithSqlstate("57P01"),
        WithSqlstate("53300"),
        WithSqlstate("08006"),
    ],
    ids=lambda exc: f"{type(exc).__name__}-{getattr(exc, 'sqlstate', '')}",
)
def test_outages_are_transient(exc):
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.UniqueViolationError("x"),
        asyncpg.exceptions.InvalidTextRepresentationError("x"),
        asyncpg.exceptions.UndefinedTableError("x"),
        asyncpg.exceptions.CheckViolationError("x"),
        asyncpg.exceptions.NumericValueOutOfRangeError("x"),
        asyncpg.exceptions.DataError("invalid input for query argument $1"),
        WithSqlstate("23505"),
        WithSqlstate("22P02"),
        WithSqlstate("42P01"),
        WithSqlstate(None),
        WithSqlstate(40001),
        ValueError("bad"),
        KeyError("customer_id"),
        UndecodableRecord("missing header ce_id"),
        RuntimeError("bug"),
    ],
    ids=lambda exc: f"{type(exc).__name__}-{getattr(exc, 'sqlstate', '')}",
)
def test_errors_in_the_work_itself_are_not_transient(exc):
    assert not is_transient(exc)


def test_asyncpg_exception_classes_carry_their_sqlstate():
    assert asyncpg.exceptions.SerializationError("x").sqlstate == "40001"
    assert asyncpg.exceptions.AdminShutdownError("x").sqlstate == "57P01"
    assert asyncpg.exceptions.UniqueViolationError("x").sqlstate == "23505"
    assert issubclass(asyncpg.exceptions.ConnectionFailureError, asyncpg.PostgresConnectionError)


# ------------------------------------------------------------------------------------ set-based statements


def test_columns_turn_rows_into_the_arrays_of_one_unnest() -> None:
    assert db.columns([("a", 1), ("b", 2), ("c", 3)], 2) == [["a", "b", "c"], [1, 2, 3]]
    assert db.columns([], 3) == [[], [], []]  # an empty set still gives every parameter its (empty) array


def test_columns_refuse_rows_of_different_widths() -> None:
    with pytest.raises(ValueError):
        db.columns([("a", 1), ("b",)], 2)


def test_last_per_key_keeps_each_keys_last_write_in_the_order_of_the_last_writes() -> None:
    rows = [("c1", "open"), ("c2", "open"), ("c1", "resolved"), ("c3", "open")]
    assert db.last_per_key(rows, key=lambda row: row[0]) == [("c2", "open"), ("c1", "resolved"), ("c3", "open")]
