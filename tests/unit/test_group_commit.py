"""Group commit without infrastructure: calls that wait together are handled together, each with its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.common.group_commit import GroupCommit


class Refused(Exception):
    """A call's own error, as the set answers it."""


class Handler:
    """A set-based handler that records its groups and can be held open, fail, or refuse calls."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.alone: list[str] = []
        self.started = asyncio.Event()  # a group is being handled
        self.release = asyncio.Event()
        self.release.set()
        self.fail_with: Exception | None = None

    async def many(self, calls: Sequence[str]) -> list[str | Exception]:
        self.groups.append(list(calls))
        self.started.set()
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [Refused(call) if call.startswith("bad") else call.upper() for call in calls]

    async def one(self, call: str) -> str:
        self.alone.append(call)
        if call.startswith("poison"):
            raise ValueError(f"{call} breaks the set")
        return call.upper()


def commit(handler: Handler, max_size: int = 64) -> GroupCommit[str, str]:
    return GroupCommit(handler.many, handler.one, key=lambda call: call.split("#")[0], max_size=max_size)


async def test_a_call_at_idle_is_handled_at_once_and_alone() -> None:
    handler = Handler()
    assert await commit(handler).submit("a") == "A"
    assert handler.groups == [["a"]]


async def test_calls_arriving_while_a_group_runs_form_the_next_group_each_with_its_own_answer() -> None:
    handler = Handler()
    group = commit(handler)
    handler.release.clear()
    first = asyncio.create_task(group.submit("a"))
    await handler.started.wait()  # the first group is open: the next calls wait
    rest = [asyncio.create_task(group.submit(call)) for call in ("b", "c", "d")]
    await asyncio.sleep(0)
    handler.release.set()
    assert await asyncio.gather(first, *rest) == ["A", "B", "C", "D"]
    assert handler.groups == [["a"], ["b", "c", "d"]]


async def test_a_refused_call_gets_its_own_error_and_its_neighbours_their_answers() -> None:
    handler = Handler()
    group = commit(handler)
    handler.release.clear()
    calls = [asyncio.create_task(group.submit(call)) for call in ("a", "bad", "c")]
    await handler.started.wait()
    handler.release.set()
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert answers[0] == "A" and answers[2] == "C" and isinstance(answers[1], Refused)
    assert handler.alone == []


async def test_a_set_that_fails_unexpectedly_is_redone_call_by_call_so_the_poison_fails_alone() -> None:
    handler = Handler()
    handler.fail_with = ValueError("the set broke")
    group = commit(handler)
    handler.release.clear()
    calls = [asyncio.create_task(group.submit(call)) for call in ("a", "poison", "c")]
    await handler.started.wait()
    handler.release.set()
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert answers[0] == "A" and answers[2] == "C"
    assert isinstance(answers[1], ValueError) and "poison breaks the set" in str(answers[1])
    assert handler.alone == ["a", "poison", "c"]


async def test_an_outage_fails_the_groups_calls_without_redoing_them() -> None:
    handler = Handler()
    handler.fail_with = ConnectionRefusedError("database down")
    group = commit(handler)
    answers = await asyncio.gather(group.submit("a"), group.submit("b"), return_exceptions=True)
    assert all(isinstance(answer, ConnectionRefusedError) for answer in answers)
    assert handler.alone == []


async def test_two_calls_of_one_key_are_never_in_one_group_and_keep_their_order() -> None:
    handler = Handler()
    group = commit(handler)
    handler.release.clear()
    first = asyncio.create_task(group.submit("x"))
    await handler.started.wait()
    later = [asyncio.create_task(group.submit(call)) for call in ("r#1", "s", "r#2", "t")]
    await asyncio.sleep(0)
    handler.release.set()
    await asyncio.gather(first, *later)
    assert handler.groups == [["x"], ["r#1", "s", "t"], ["r#2"]]


async def test_a_group_holds_at_most_max_size_calls() -> None:
    handler = Handler()
    group = commit(handler, max_size=2)
    handler.release.clear()
    first = asyncio.create_task(group.submit("a"))
    await handler.started.wait()
    later = [asyncio.create_task(group.submit(call)) for call in ("b", "c", "d", "e", "f")]
    await asyncio.sleep(0)
    handler.release.set()
    await asyncio.gather(first, *later)
    assert handler.groups == [["a"], ["b", "c"], ["d", "e"], ["f"]]


async def test_a_caller_that_gave_up_does_not_stop_its_group() -> None:
    handler = Handler()
    group = commit(handler)
    handler.release.clear()
    first = asyncio.create_task(group.submit("a"))
    await handler.started.wait()
    impatient = asyncio.create_task(group.submit("b"))
    patient = asyncio.create_task(group.submit("c"))
    await asyncio.sleep(0)
    impatient.cancel()
    handler.release.set()
    assert await first == "A" and await patient == "C"
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_calls_whose_callers_all_gave_up_make_no_group() -> None:
    handler = Handler()
    group = commit(handler)
    handler.release.clear()
    first = asyncio.create_task(group.submit("a"))
    await handler.started.wait()
    gone = [asyncio.create_task(group.submit(call)) for call in ("b", "c")]
    await asyncio.sleep(0)
    for task in gone:
        task.cancel()
    handler.release.set()
    assert await first == "A"
    assert handler.groups == [["a"]]
