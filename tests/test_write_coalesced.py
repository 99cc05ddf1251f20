"""Group commit (Database.write_coalesced) on SQLite and PostgreSQL: concurrent small
writes share one transaction where that is safe, and a failure fails its whole batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage.database import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.write() as conn:
        await conn.exec_driver_sql("CREATE TABLE scratch (n INTEGER NOT NULL UNIQUE)")
    yield database
    await database.close()


def _count_commits(db: Database) -> list[int]:
    commits = [0]

    @event.listens_for(db.engine.sync_engine, "commit")
    def count(_conn: object) -> None:
        commits[0] += 1

    return commits


async def _insert(db: Database, n: int, *, postgres_too: bool) -> int:
    async def work(conn: AsyncConnection) -> int:
        await conn.execute(text("INSERT INTO scratch (n) VALUES (:n)"), {"n": n})
        return -n

    return await db.write_coalesced(work, postgres_too=postgres_too)


async def _rows(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM scratch"))).scalar_one())


async def test_concurrent_writes_share_a_transaction_where_allowed(db: Database) -> None:
    commits = _count_commits(db)
    results = await asyncio.gather(*(_insert(db, n, postgres_too=True) for n in range(40)))
    # The first flush may start before the others queued; everything else joins the next.
    assert 1 <= commits[0] <= 2
    assert results == [-n for n in range(40)]
    assert await _rows(db) == 40


async def test_on_postgresql_writes_stay_apart_unless_allowed(db: Database) -> None:
    commits = _count_commits(db)
    await asyncio.gather(*(_insert(db, n, postgres_too=False) for n in range(20)))
    if db.is_sqlite:
        assert commits[0] <= 2  # SQLite writers take turns anyway: always shared
    else:
        assert commits[0] == 20  # lock-order safety is the caller's to vouch for
    assert await _rows(db) == 20


async def test_a_failure_fails_the_whole_batch_and_the_next_batch_is_new(db: Database) -> None:
    outcomes = await asyncio.gather(
        *(_insert(db, n, postgres_too=True) for n in [1, 2, 2, 3]), return_exceptions=True
    )
    assert all(isinstance(outcome, IntegrityError) for outcome in outcomes)
    assert await _rows(db) == 0
    assert await _insert(db, 4, postgres_too=True) == -4
    assert await _rows(db) == 1
