"""Group commit: concurrent calls of one RPC handled together, in one unit of work.

While a group is being handled, the calls that arrive wait; when it is done, everything waiting (up to
``max_size``) is the next group. At idle a call is handled at once and alone: no timer trades latency for
size. Under load the groups grow by themselves, and what a transaction costs whatever its size (its round
trips, its commit) is shared by the calls in it: the consumers' natural batching, for requests.

Each call gets its own answer. A call the set refuses gets its own error; when the set-based handling fails on
something unexpected, the group is redone call by call, so one bad call never fails its neighbours. An outage
(``is_transient``) fails the group's calls with it: each client retries its own call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from services.common.db import is_transient

log = logging.getLogger(__name__)

C = TypeVar("C")  # a call, as the handling needs it
R = TypeVar("R")  # its answer


class GroupCommit(Generic[C, R]):
    """Hands calls to ``apply_many`` in groups; ``apply_one`` handles a call alone (the fallback).

    ``apply_many`` returns one answer or exception per call, in order. ``key`` names what two calls in one group
    must not share (a request id: the second is a retry of the first, answered by the next group).
    """

    def __init__(
        self,
        apply_many: Callable[[Sequence[C]], Awaitable[Sequence[R | Exception]]],
        apply_one: Callable[[C], Awaitable[R]],
        *,
        key: Callable[[C], Hashable],
        max_size: int = 64,
    ) -> None:
        self._apply_many = apply_many
        self._apply_one = apply_one
        self._key = key
        self._max_size = max_size
        self._waiting: list[tuple[C, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, call: C) -> R:
        """Return ``call``'s answer once its group is done; raises its error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((call, future))
        if self._worker is None or self._worker.done():
            # A context of its own: nothing of the first caller's (its principal, its span) leaks into the others'.
            self._worker = asyncio.create_task(self._run(), context=contextvars.Context())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            group = self._next_group()
            if not group:  # every waiting caller gave up: nothing to do
                continue
            try:
                answers = await self._answers([call for call, _ in group])
            except BaseException as exc:  # cancelled (shutting down) or broken: no call waits forever
                for _, future in [*group, *self._waiting]:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("shutting down"))
                self._waiting.clear()
                raise
            for (_, future), answer in zip(group, answers, strict=True):
                if future.done():  # the caller gave up (a deadline); its work stands, a retry gets its answer
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    def _next_group(self) -> list[tuple[C, asyncio.Future[R]]]:
        """Take the waiting calls, oldest first, up to ``max_size``; a call sharing a key stays for the next."""
        group, later, keys = [], [], set()
        for item in self._waiting:
            key = self._key(item[0])
            if len(group) < self._max_size and key not in keys and not item[1].done():
                group.append(item)
                keys.add(key)
            elif not item[1].done():
                later.append(item)
        self._waiting = later
        return group

    async def _answers(self, calls: Sequence[C]) -> list[R | Exception]:
        try:
            return list(await self._apply_many(calls))
        except Exception as exc:
            if is_transient(exc):
                return [exc] * len(calls)
            log.warning(
                "set-based handling of %d calls failed (%s: %s); redoing them one by one",
                len(calls),
                type(exc).__name__,
                exc,
            )
        return [await self._one(call) for call in calls]

    async def _one(self, call: C) -> R | Exception:
        try:
            return await self._apply_one(call)
        except Exception as exc:
            return exc
