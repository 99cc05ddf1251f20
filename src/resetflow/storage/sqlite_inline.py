"""aiosqlite connections that run SQLite calls on the event loop's own thread.

aiosqlite runs every call (cursor, execute, fetch, commit) in a thread of its own and
wakes the event loop for each result. A ``/send-token`` makes ~30 such calls; each hop
(queue, thread switch, ``call_soon_threadsafe``, the loop's self-pipe) cost more CPU than
the SQLite work itself, which is tens of microseconds on a local WAL file
(docs/performance.md). Here the same calls run inline: SQLAlchemy's aiosqlite dialect
and aiosqlite's API stay as they are; only where a call executes changes.

That is safe only because nothing can make SQLite wait on the loop's thread:

- within the process, :class:`~resetflow.storage.database.Database` lets one write
  transaction run at a time (an ``asyncio.Lock``), so no connection of ours ever waits
  for another of ours; under WAL, readers never wait for the writer;
- another process (a ``resetflow worker``, a CLI command, a second web process) may hold
  the write lock: SQLite's busy handler waits at most ``BUSY_TIMEOUT_MS`` on the loop,
  then ``Database.write()`` gives the loop back and tries ``BEGIN IMMEDIATE`` again.

aiosqlite's worker thread still exists (it opens the connection and serves the few calls
SQLAlchemy's dialect queues to it directly), hence ``check_same_thread=False``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite
from sqlalchemy.exc import DBAPIError

# How long SQLite may block the event loop waiting for another process's write lock.
BUSY_TIMEOUT_MS = 20


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection whose calls run at once, in the caller's thread."""

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        if fn == self._connection.commit:
            # COMMIT goes to aiosqlite's thread, as before: it is the one call that does
            # real I/O (the WAL write, and now and then a checkpoint), and sqlite3 lets go
            # of the GIL meanwhile, so the loop serves requests on the other core. Nothing
            # else touches this connection until it returns: it is the write turn's holder
            # that waits for it.
            return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
        return fn(*args, **kwargs)

    @property
    def raw_connection(self) -> sqlite3.Connection | None:
        """The ``sqlite3`` connection itself, for statements run without SQLAlchemy
        (:mod:`resetflow.storage.prepared`); ``None`` once closed."""
        return self._connection if self._running else None


def raw_sqlite(driver_connection: Any) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under a driver connection whose calls run inline
    (:class:`InlineConnection`), else ``None``."""
    if isinstance(driver_connection, InlineConnection):
        return driver_connection.raw_connection
    return None


def execute_direct(
    raw: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()
) -> tuple[int, list[Any]]:
    """Run ``sql`` on ``raw``; its row count and every row it returned.

    SQLite's errors are raised as SQLAlchemy raises them (a "database is locked" is
    ``sqlalchemy.exc.OperationalError``), so that callers and the web layer's 503 handler
    see one kind of database error whichever path ran the SQL."""
    try:
        cursor = raw.execute(sql, args)
        rows = cursor.fetchall()
        return cursor.rowcount, rows
    except sqlite3.Error as error:
        raise DBAPIError.instance(sql, args, error, sqlite3.Error) from error


def open_sqlite(path: str) -> sqlite3.Connection:
    """A ``sqlite3`` connection to ``path`` for calls on the loop's thread: busy waits of
    at most ``BUSY_TIMEOUT_MS``; ``isolation_level=None``, so no implicit transactions
    (SQLAlchemy's "begin" event issues BEGIN [IMMEDIATE] itself; a bare statement is its
    own transaction); usable from aiosqlite's thread too."""
    return sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )


def inline_creator(path: str) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine`` opening ``path`` inline."""

    async def create() -> aiosqlite.Connection:
        return await InlineConnection(lambda: open_sqlite(path), iter_chunk_size=64)

    return create
