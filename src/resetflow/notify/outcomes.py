"""The outcomes of one claimed batch, written together.

The worker sends a batch's jobs concurrently. Writing each job's outcome in a transaction
of its own cost three statements and a BEGIN/COMMIT per message, each a round trip to
PostgreSQL (docs/performance.md, "The worker"). Here the outcomes wait for each other,
and one write takes all that are waiting: each kind of row in one statement.

How long one waits: until every job of the batch has either given its outcome or ended
another way (failed, rescheduled, an event delivered: those write on their own), or at
most ``linger`` seconds after it was given, so that one slow send (a provider timing out,
then failover) does not hold the others' outcomes back — a job's outcome must be on disk
well within its lease, or another worker would claim it and send it again. While a
write is under way, what comes in waits for the next one (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# The most an outcome waits for the rest of its batch before it is written anyway.
DEFAULT_LINGER_SECONDS = 0.05


class BatchOutcomes(Generic[T]):
    """Collects the outcomes of ``members`` jobs (by id) and writes them with ``write``.

    Each member calls :meth:`add` (an outcome to write; returns once written, or raises
    what the write raised) at most once, and :meth:`leave` when it is done, whichever
    way (``finally``).
    """

    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        members: int,
        linger: float = DEFAULT_LINGER_SECONDS,
    ) -> None:
        self._write = write
        self._outstanding = members
        self._linger = linger
        self._done: set[str] = set()
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flush: asyncio.Task[None] | None = None
        self.writes = 0  # how many writes ran (tests)

    async def add(self, member: str, outcome: T) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, done))
        self._finished(member)
        await done

    def leave(self, member: str) -> None:
        self._finished(member)

    def _finished(self, member: str) -> None:
        if member not in self._done:
            self._done.add(member)
            self._outstanding -= 1
        if not self._pending:
            return
        if self._outstanding <= 0:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._start_flush)

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._run(), name="resetflow-outcomes")

    async def _run(self) -> None:
        # What arrives while a write is under way goes in the next one, at once.
        while self._pending:
            batch, self._pending = self._pending, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self.writes += 1
            try:
                await self._write([outcome for outcome, _ in batch])
            except Exception as error:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            except BaseException:
                for _, done in batch:
                    done.cancel()
                raise
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        """Write what is still waiting (a member that never left) and wait for it."""
        if self._pending:
            self._start_flush()
        if self._flush is not None:
            with contextlib.suppress(Exception):
                await self._flush
