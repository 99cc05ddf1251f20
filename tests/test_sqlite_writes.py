"""SQLite file writes: SQL runs on the event loop's thread, writers of one process take
turns, and another process's write lock is waited for without blocking the loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage import database as database_module
from resetflow.storage.database import Database
from resetflow.storage.sqlite_inline import InlineConnection

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with database.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")
    yield database
    await database.close()


async def _count(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM t"))).scalar_one())


async def test_connections_run_sql_inline(db: Database) -> None:
    async with db.read() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, InlineConnection)
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"


async def test_concurrent_writers_all_commit(db: Database) -> None:
    async def insert(n: int) -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
            await asyncio.sleep(0)  # give the others a chance to interleave, if they could

    await asyncio.gather(*(insert(n) for n in range(100)))
    assert await _count(db) == 100


async def test_a_failing_write_rolls_back_and_the_next_one_proceeds(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
            raise RuntimeError("boom")
    async with db.write() as conn:
        await conn.execute(text("INSERT INTO t (n) VALUES (1)"))  # no unique clash: rolled back
    assert await _count(db) == 1


async def test_another_connections_write_lock_is_waited_for_without_blocking_the_loop(
    db: Database, tmp_path: Path
) -> None:
    """Another process holding the write lock (here: a plain sqlite3 connection) makes our
    write wait, but the event loop keeps serving other tasks meanwhile."""
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (n) VALUES (-1)")
    ticks = 0
    written = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not written.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    async def write() -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
        written.set()

    ticking = asyncio.create_task(ticker())
    writing = asyncio.create_task(write())
    await asyncio.sleep(0.3)
    assert not writing.done()  # still waiting for the other connection's lock
    ticks_while_locked = ticks
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(writing, 5)
    await ticking
    # Blocked in SQLite's busy handler for the whole wait, the loop would not have run the
    # ticker at all; between short busy waits it runs about once per retry (~10 here).
    assert ticks_while_locked >= 4, ticks_while_locked
    assert await _count(db) == 2


async def test_a_write_lock_held_too_long_fails_the_write(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "WRITE_LOCK_TIMEOUT", 0.2)
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="locked"):
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with db.write() as conn:  # the lock is free again, and so is our turn
        await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
    assert await _count(db) == 1


async def test_coalesced_writes_share_one_commit_and_return_their_results(db: Database) -> None:
    commits = 0

    @event.listens_for(db.engine.sync_engine, "commit")
    def count(_conn: object) -> None:
        nonlocal commits
        commits += 1

    async def insert(n: int) -> int:
        async def work(conn: AsyncConnection) -> int:
            await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
            return n * 10

        return await db.write_coalesced(work)

    results = await asyncio.gather(*(insert(n) for n in range(50)))
    assert results == [n * 10 for n in range(50)]
    assert await _count(db) == 50
    assert 1 <= commits <= 2  # all fifty were queued before the first flush took its turn


async def test_a_failing_coalesced_write_rolls_its_batch_back_for_everyone(db: Database) -> None:
    async def insert(n: int) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})

        await db.write_coalesced(work)

    outcomes = await asyncio.gather(*(insert(n) for n in [1, 2, 2, 3]), return_exceptions=True)
    # The duplicate 2 fails the shared transaction: nobody's row was kept, all were told.
    assert all(isinstance(outcome, IntegrityError) for outcome in outcomes)
    assert await _count(db) == 0
    await insert(4)  # the next batch is a new transaction
    assert await _count(db) == 1


async def test_coalesced_writes_wait_for_a_plain_write_in_progress(db: Database) -> None:
    order: list[str] = []

    async def plain() -> None:
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
            await asyncio.sleep(0.05)  # a coalesced write arrives meanwhile
            order.append("plain")

    async def coalesced() -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(text("INSERT INTO t (n) VALUES (2)"))
            order.append("coalesced")

        await asyncio.sleep(0.01)
        await db.write_coalesced(work)

    await asyncio.gather(plain(), coalesced())
    assert order == ["plain", "coalesced"]
    assert await _count(db) == 2
