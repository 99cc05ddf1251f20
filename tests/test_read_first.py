"""``Database.read_first``: one look-up read on its own, as the session check and whoami
ask on every signed-in request (storage/database.py).

It must read what a ``read()`` transaction reads, see every write committed before it
(by this process or another), never write, and on the SQLite fast path take no pool
connection and no transaction at all; on PostgreSQL no BEGIN or COMMIT. Each test that
can runs once per database (the ``database_url`` fixture), plus the SQLite file with the
fast path off and in-memory SQLite, where it falls back to ``read()``.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from resetflow.storage.database import Database
from resetflow.storage.migrate import upgrade_async
from resetflow.storage.sessions.base import SessionRecord
from resetflow.storage.sessions.sql import SqlSessionStore
from resetflow.storage.users import _BY_ID, UserRepository, read_user
from tests.support.databases import insert_ada

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
ADA = "a" * 32


async def _insert_ada(db: Database) -> None:
    async with db.write() as conn:
        await insert_ada(conn, user_id=ADA, now=NOW)


async def test_read_first_reads_what_a_read_transaction_reads(database_url: str) -> None:
    db = Database(database_url)
    try:
        await _insert_ada(db)
        async with db.read() as conn:
            in_transaction = await UserRepository(conn).get(ADA)
        assert in_transaction is not None
        assert await read_user(db, ADA) == in_transaction
        assert await read_user(db, "x" * 32) is None
        sessions = SqlSessionStore(database=db)
        record = SessionRecord(
            user_id=ADA,
            data={"csrf": "t"},
            created_at=NOW,
            expires_at=NOW + timedelta(hours=1),
            last_seen_at=NOW,
        )
        await sessions.save("s" * 64, record)
        assert await sessions.load("s" * 64, now=NOW) == record
        assert await sessions.load("s" * 64, now=NOW + timedelta(hours=2)) is None
    finally:
        await db.close()


async def test_read_first_sees_what_another_connection_committed_just_before(
    database_url: str,
) -> None:
    """No snapshot outlives its statement: a session ended elsewhere (R24, R27: sign-out,
    a reset in another process) is gone for the very next look-up."""
    writer, reader = Database(database_url), Database(database_url)
    try:
        await _insert_ada(writer)
        assert await read_user(reader, ADA) is not None
        async with writer.write() as conn:
            await conn.execute(text("UPDATE users SET name = 'Grace' WHERE id = :id"), {"id": ADA})
        user = await read_user(reader, ADA)
        assert user is not None and user.name == "Grace"
        async with writer.write() as conn:
            await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": ADA})
        assert await read_user(reader, ADA) is None
    finally:
        await writer.close()
        await reader.close()


async def test_read_first_on_postgresql_sends_no_begin_or_commit(postgres_url: str) -> None:
    await upgrade_async(postgres_url)
    db = Database(postgres_url)
    try:
        await _insert_ada(db)
        # On an autocommit connection SQLAlchemy starts no transaction on the driver
        # (asyncpg sends no BEGIN, no COMMIT): the look-up is one round trip.
        levels: list[Any] = []
        event.listen(
            db.engine.sync_engine,
            "engine_connect",
            lambda conn: levels.append(conn.get_execution_options().get("isolation_level")),
        )
        assert await read_user(db, ADA) is not None
        assert levels == ["AUTOCOMMIT"]
    finally:
        await db.close()


async def _sqlite_file(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'read.db'}"
    await upgrade_async(url)
    return url


async def test_read_first_on_a_sqlite_file_takes_no_pool_connection_nor_transaction(
    tmp_path: Path,
) -> None:
    db = Database(await _sqlite_file(tmp_path))
    checkouts: list[Any] = []
    begins: list[Any] = []
    try:
        await _insert_ada(db)
        event.listen(db.engine.sync_engine, "checkout", lambda *a: checkouts.append(a))
        event.listen(db.engine.sync_engine, "begin", lambda conn: begins.append(conn))
        for _ in range(3):
            assert await read_user(db, ADA) is not None
            assert await SqlSessionStore(database=db).load("s" * 64, now=NOW) is None
        assert checkouts == [] and begins == []
        # The pool's own path still works beside it, on the same file.
        async with db.read() as conn:
            assert await UserRepository(conn).get(ADA) is not None
        assert len(checkouts) == 1
    finally:
        await db.close()


async def test_the_sqlite_reader_cannot_write(tmp_path: Path) -> None:
    db = Database(await _sqlite_file(tmp_path))
    try:
        await _insert_ada(db)
        assert await read_user(db, ADA) is not None  # opens the reader
        reader = db._reader_connection()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("DELETE FROM users")
        assert await read_user(db, ADA) is not None
    finally:
        await db.close()


async def test_close_closes_the_sqlite_reader(tmp_path: Path) -> None:
    db = Database(await _sqlite_file(tmp_path))
    await _insert_ada(db)
    assert await read_user(db, ADA) is not None
    reader = db._reader_connection()
    await db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        reader.execute("SELECT 1")


@pytest.mark.parametrize("where", ["fast path off", "in memory"])
async def test_without_the_fast_path_read_first_is_a_read_transaction(
    tmp_path: Path, where: str
) -> None:
    if where == "fast path off":
        db = Database(await _sqlite_file(tmp_path), sqlite_fast_path=False)
    else:
        db = Database("sqlite+aiosqlite:///:memory:")
        async with db.engine.begin() as conn:
            from resetflow.storage.tables import metadata

            await conn.run_sync(metadata.create_all)
    begins: list[Any] = []
    try:
        await _insert_ada(db)
        event.listen(db.engine.sync_engine, "begin", lambda conn: begins.append(conn))
        assert await read_user(db, ADA) is not None
        assert len(begins) == 1
        assert db._reader is None
    finally:
        await db.close()


async def test_errors_on_the_reader_are_sqlalchemys(tmp_path: Path) -> None:
    """A broken look-up surfaces as SQLAlchemy's error, which the web layer answers 503."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    db = Database(url)  # never migrated: no tables
    try:
        with pytest.raises(DBAPIError):
            await db.read_first(_BY_ID, {"id": ADA})
    finally:
        await db.close()
