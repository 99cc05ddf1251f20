"""The SQL engine and its transactions.

``Database.write()`` opens a transaction that will write. On SQLite it starts with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail at once
with "database is locked" when another writer got there first, whereas an immediate one
takes the write lock before it reads anything. Reads use ``Database.read()``, which never
blocks a writer under WAL.

On a SQLite file, SQL runs on the event loop's thread (:mod:`.sqlite_inline`) and the
process's write transactions take turns on an ``asyncio.Lock``: SQLite allows one writer
anyway, and this way a writer of ours never sleeps in SQLite's busy handler while the lock
is free, nor blocks the loop waiting for another of ours. Another process's write lock is
waited for here, asynchronously, for up to ``WRITE_LOCK_TIMEOUT`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from resetflow.storage.batch import close_batch, open_batch
from resetflow.storage.prepared import Prepared, Row
from resetflow.storage.sqlite_inline import (
    BUSY_TIMEOUT_MS,
    execute_direct,
    inline_creator,
    open_sqlite,
    raw_sqlite,
)

_WRITE = "resetflow_write"
# How long a write waits for another process's SQLite write lock before it fails (503).
WRITE_LOCK_TIMEOUT = 30.0

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[Any]]


class Database:
    """An async SQLAlchemy engine with read and write transactions."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = 20,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        sqlite_fast_path: bool = True,
    ) -> None:
        """``pool_size``, ``max_overflow`` and ``pool_timeout`` (seconds a transaction
        waits for a connection before ``sqlalchemy.exc.TimeoutError``, answered 503) shape
        the PostgreSQL pool; SQLite ignores them (one writer, connections are files).

        ``sqlite_fast_path`` (RESETFLOW_SQLITE_FAST_PATH): on a SQLite file, run calls on
        the loop's thread and hot statements straight on ``sqlite3``
        (:mod:`.sqlite_inline`, :mod:`.prepared`, the adapters that lean on aiosqlite's and
        SQLAlchemy's internals); off, everything goes through SQLAlchemy and aiosqlite as
        they ship, at a measured CPU cost (docs/performance.md)."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        options: dict[str, Any] = {"echo": echo}
        path = make_url(url).database if self.is_sqlite else None
        self._inline = (
            sqlite_fast_path and bool(path) and path != ":memory:" and "mode=memory" not in url
        )
        if self._inline:
            options["async_creator"] = inline_creator(str(path))
        elif self.is_sqlite:
            options["connect_args"] = {"timeout": 30}
        else:
            # No pool_pre_ping: it costs a round trip per transaction. A connection that
            # died with the server fails its first statement instead (503), and SQLAlchemy
            # then invalidates the whole pool, so only that one request sees the outage's end.
            options.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                pool_recycle=1800,
            )
        self.engine: AsyncEngine = create_async_engine(url, **options)
        # The same pool, its connections in autocommit while checked out from here
        # (write_batched on PostgreSQL: no BEGIN, no COMMIT).
        self._autocommit = (
            None if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._write_turn = asyncio.Lock() if self.is_sqlite else None
        # SQLite: the one connection every write transaction of this process runs on, kept
        # open between turns (checking a connection out of the pool and resetting it on
        # return cost ~4x the BEGIN and COMMIT themselves). Only the holder of the write
        # turn touches it.
        self._writer: AsyncConnection | None = None
        # SQLite fast path: the connection read_first runs on (opened at first use).
        self._sqlite_path = str(path) if self._inline else ""
        self._reader: sqlite3.Connection | None = None
        self._coalescing: list[tuple[Work, asyncio.Future[Any]]] = []
        self._flush: asyncio.Task[None] | None = None
        self._flushes: set[asyncio.Task[None]] = set()  # strong references while they run
        if self.is_sqlite:
            _configure_sqlite(
                self.engine, busy_timeout_ms=BUSY_TIMEOUT_MS if self._inline else 30_000
            )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def read_first(self, statement: Prepared, params: Mapping[str, Any]) -> Row | None:
        """The first row of one SELECT run on its own: its own snapshot, with no
        transaction around it. For look-ups that no other read has to agree with (a
        session by id, an account by id), asked on every signed-in request.

        On a SQLite file (the fast path) it runs on this process's reader connection,
        kept open: no pool check-out, no BEGIN, no COMMIT through aiosqlite's thread,
        which cost ~10x the look-up itself (docs/performance.md, "whoami"). On
        PostgreSQL it runs on an autocommit connection: one round trip instead of three
        (BEGIN, the SELECT, COMMIT). Anywhere else, in :meth:`read`."""
        if self._inline and statement.runs_on_sqlite(self.engine.dialect, params):
            return statement.first_on_sqlite(self._reader_connection(), self.engine.dialect, params)
        if self._autocommit is not None:
            async with self._autocommit.connect() as conn:
                return await statement.first(conn, params)
        async with self.read() as conn:
            return await statement.first(conn, params)

    def _reader_connection(self) -> sqlite3.Connection:
        """The process's SQLite reader: autocommit (``isolation_level=None``), read-only,
        used synchronously on the loop's thread between two awaits, so never by two
        callers at once. Under WAL it never waits for a writer; SQLite's busy handler
        waits at most ``BUSY_TIMEOUT_MS`` in the rare cases a reader must."""
        if self._reader is None:
            reader = open_sqlite(self._sqlite_path)
            reader.execute("PRAGMA query_only=ON")
            self._reader = reader
        return self._reader

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits when the block ends and rolls back if it raises.

        On SQLite, one at a time per process; do not open another ``write()`` inside one.
        """
        if self._write_turn is None:
            async with self.engine.connect() as conn:
                await conn.execution_options(**{_WRITE: True})
                async with conn.begin():
                    yield conn
            return
        async with self._write_turn, self._sqlite_write() as conn:
            yield conn

    async def write_coalesced(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, postgres_too: bool = False
    ) -> T:
        """Run ``work`` in a write transaction shared with other such calls; return once
        that transaction has committed.

        Calls made while a write is under way queue up and run together in the next
        transaction: one ``BEGIN``/``COMMIT`` for all of them (group commit). The price:
        if one ``work`` raises, the whole batch rolls back and every caller in it gets that
        exception. So this is for small writes that fail only when the database does (a
        session save, a delivery's outcome); a write that may refuse on its own terms
        belongs in :meth:`write`.

        On SQLite, where writers take turns anyway, that is always so. On PostgreSQL a
        shared transaction holds the row locks of every ``work`` until it commits, and two
        processes' batches locking the same rows in different orders would deadlock: so
        there it is :meth:`write` unless ``postgres_too`` says that no two batches can
        touch the same rows (a worker's outcomes for the jobs it leased); then batches go
        one at a time per process.
        """
        if self._write_turn is None and not postgres_too:
            async with self.write() as conn:
                return await work(conn)
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._coalescing.append((work, done))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_coalesced(), name="resetflow-write")
            self._flushes.add(self._flush)
            self._flush.add_done_callback(self._flushes.discard)
        return await done

    async def write_batched(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work``, whose writes all go through :func:`.batch.write` and
        :func:`.batch.notify`, as one atomic write; return once it is committed.

        On PostgreSQL the writes are gathered and sent at the end as one statement, which
        is its own transaction (:mod:`.batch`): ``work``'s reads go out as they come, with
        no BEGIN or COMMIT around them, and nothing is written if ``work`` raises. The
        contract that makes this safe: ``work`` writes nothing any other way (a statement
        run straight on ``conn`` would commit on its own, at once), and needs no result
        of its writes. It reads in READ COMMITTED, as it would in a transaction.

        On SQLite it is :meth:`write_coalesced` (the writes run as they come, in the
        shared transaction).
        """
        if self._autocommit is None:
            return await self.write_coalesced(work)
        async with self._autocommit.connect() as conn:
            gathered = open_batch(conn)
            try:
                result = await work(conn)
                await gathered.send(conn)
            finally:
                close_batch(conn)
        return result

    async def _flush_coalesced(self) -> None:
        if self._write_turn is not None:
            async with self._write_turn:
                # Taken once our turn has come: everything queued while we waited joins
                # in. Calls queued from now on start the next flush.
                batch, self._coalescing = self._coalescing, []
                self._flush = None
                await _run_batch(batch, self._sqlite_write)
            return
        # PostgreSQL: one batch in flight; what queues meanwhile is the next batch.
        while self._coalescing:
            batch, self._coalescing = self._coalescing, []
            await _run_batch(batch, self.write)
        self._flush = None

    @asynccontextmanager
    async def _sqlite_write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction on the writer connection; the caller holds the turn."""
        deadline = time.monotonic() + WRITE_LOCK_TIMEOUT
        while True:
            conn = await self._writer_connection()
            try:
                transaction = await conn.begin()
            except OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    await self._drop_writer()
                    raise
                # Another process writes: give the loop back, try again shortly. (The
                # connection is fine: BEGIN IMMEDIATE failed before starting anything.)
                await asyncio.sleep(random.uniform(0.002, 0.01))  # noqa: S311 - not a secret
                continue
            try:
                yield conn
            except BaseException:
                try:
                    await transaction.rollback()
                except BaseException:
                    await self._drop_writer()  # in an unknown state: a new one next time
                    raise
                raise
            try:
                await transaction.commit()
            except BaseException:
                await self._drop_writer()
                raise
            return

    async def _writer_connection(self) -> AsyncConnection:
        if self._writer is None or self._writer.closed or self._writer.invalidated:
            conn = await self.engine.connect()
            await conn.execution_options(**{_WRITE: True})
            self._writer = conn
        return self._writer

    async def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None:
            # Already failing, or shutting down: if closing fails too, the pool drops it.
            with contextlib.suppress(Exception):
                await conn.close()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        await self._drop_writer()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, instead of the driver.
        if dbapi_connection.isolation_level is not None:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        raw = raw_sqlite(conn.connection.driver_connection)
        if raw is None:
            conn.exec_driver_sql(sql)
        else:
            # Inline SQLite: straight to sqlite3, a statement's worth of SQLAlchemy CPU less
            # per transaction (storage/prepared.py).
            execute_direct(raw, sql)


async def _run_batch(
    batch: list[tuple[Work, asyncio.Future[Any]]],
    transaction: Callable[[], AbstractAsyncContextManager[AsyncConnection]],
) -> None:
    """Run every work of ``batch`` in one transaction and settle each caller's future."""
    results: list[Any] = []
    try:
        async with transaction() as conn:
            for work, _ in batch:
                results.append(await work(conn))
    except Exception as error:
        for _, done in batch:
            if not done.done():
                done.set_exception(error)
        return
    except BaseException:
        for _, done in batch:
            done.cancel()
        raise
    for (_, done), result in zip(batch, results, strict=True):
        if not done.done():
            done.set_result(result)
