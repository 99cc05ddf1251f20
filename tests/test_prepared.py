"""storage/prepared.py: the hot statements run straight on sqlite3 write and read exactly
what SQLAlchemy's own execution would, raise the same errors, and really skip SQLAlchemy.

Every scenario runs twice on fresh SQLite files: once as the server runs it (direct
path) and once with the direct path switched off (every statement through
``conn.execute``); the two files must then hold the same rows, value for value.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage import prepared
from resetflow.storage.codes import CodeRepository
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.migrate import upgrade_async
from resetflow.storage.prepared import Prepared
from resetflow.storage.sessions.base import SessionRecord
from resetflow.storage.sessions.sql import SqlSessionStore
from resetflow.storage.tables import delivery_jobs
from resetflow.storage.users import DECOY_USER_ID, UserRepository
from tests.support.databases import (
    insert_ada,
    statements_through_sqlalchemy,
    write_reset_rows,
)

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
TABLES = ("users", "one_time_codes", "delivery_jobs", "delivery_attempts", "audit_events")


async def _migrated(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(url)
    return url


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        dump = {t: sorted(conn.execute(f"SELECT * FROM {t}"), key=repr) for t in TABLES}
        # The decoy account is written by the migration, stamped with its own time.
        dump["users"] = [row for row in dump["users"] if row[0] != DECOY_USER_ID]
        dump["sessions"] = sorted(conn.execute("SELECT * FROM sessions"), key=repr)
        return dump
    finally:
        conn.close()


async def _hot_path(db: Database) -> dict[str, Any]:
    """What /send-token, the session middleware and the worker do, statement by
    statement; returns what was read back, for comparison."""
    read: dict[str, Any] = {}
    async with db.write() as conn:
        await insert_ada(conn, user_id="u" * 32, now=NOW)
        users = UserRepository(conn)
        read["by_id"] = await users.get("u" * 32)
        read["no_id"] = await users.get("x" * 32)
        read["by_email"] = await users.by_email("ada@example.com")
        read["by_phone"] = await users.by_phone("+14155550100")
        read["unknown"] = await users.by_email("nobody@example.com")
        # The second replaces the first code (the upsert's update branch); two jobs.
        for n in range(2):
            await write_reset_rows(conn, db, user_id="u" * 32, n=n, now=NOW)
        read["code"] = await CodeRepository(conn).current(user_id="u" * 32, purpose="reset")
    async with db.write() as conn:
        jobs = DeliveryRepository(conn)
        claimed = await jobs.claim_due(owner="w1", now=NOW, lease_seconds=60, limit=10)
        read["claimed"] = sorted(job.id for job in claimed)
        await jobs.record_attempt(
            job_id=claimed[0].id,
            channel="email",
            provider="smtp",
            destination="a***@example.com",
            status="sent",
            provider_message_id="<m1@example.com>",
            error=None,
            now=NOW,
        )
        read["finished"] = await jobs.finish(
            claimed[0].id, owner="w1", status="sent", channel="email", provider="smtp", now=NOW
        )
        read["not_ours"] = await jobs.finish(claimed[1].id, owner="w2", status="sent", now=NOW)
        await jobs.discard(claimed[1].id, owner="w1")
    sessions = SqlSessionStore(database=db)
    record = SessionRecord(
        user_id=None, data={"csrf": "t", "reset": {"n": 1}}, created_at=NOW, expires_at=NOW
    )
    await sessions.save("s" * 64, record)
    record.expires_at = NOW + timedelta(hours=1)
    await sessions.save("s" * 64, record)  # the upsert's update branch
    read["session"] = await sessions.load("s" * 64, now=NOW)
    read["expired"] = await sessions.load("s" * 64, now=NOW + timedelta(hours=2))
    return read


@pytest.fixture
def direct_off(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    def switch_off() -> None:
        monkeypatch.setattr(prepared, "inline_sqlite", lambda _conn: None)

    return switch_off


async def _run(path: Path, scenario: Callable[[Database], Awaitable[Any]]) -> Any:
    db = Database(await _migrated(path))
    try:
        return await scenario(db)
    finally:
        await db.close()


async def test_the_direct_path_writes_and_reads_what_sqlalchemy_would(
    tmp_path: Path, direct_off: Callable[[], None]
) -> None:
    direct = await _run(tmp_path / "direct.db", _hot_path)
    direct_off()
    through_sqlalchemy = await _run(tmp_path / "sqlalchemy.db", _hot_path)

    assert direct == through_sqlalchemy
    assert _dump(tmp_path / "direct.db") == _dump(tmp_path / "sqlalchemy.db")
    # And what was read is right, not merely the same both ways.
    assert direct["by_email"] is not None and direct["by_email"] == direct["by_phone"]
    assert direct["by_email"].created_at == NOW and direct["by_email"].created_at.tzinfo
    assert direct["unknown"] is None
    assert direct["code"].attempt_hash == "a1" and direct["code"].code_mac == b"\x01" * 32
    assert direct["claimed"] == ["j0".ljust(32, "0"), "j1".ljust(32, "0")]
    assert direct["finished"] is True and direct["not_ours"] is False
    assert direct["session"].data == {"csrf": "t", "reset": {"n": 1}}
    assert direct["session"].expires_at == NOW + timedelta(hours=1)
    assert direct["expired"] is None
    rows = _dump(tmp_path / "direct.db")
    assert len(rows["delivery_jobs"]) == 1  # j2 discarded by its lease holder
    assert len(rows["one_time_codes"]) == 1 and len(rows["audit_events"]) == 2


async def test_the_hot_statements_skip_sqlalchemy_execution(tmp_path: Path) -> None:
    """The point of the module: on an inline SQLite file none of the hot path's
    statements (nor BEGIN) goes through SQLAlchemy's execution; only the claim's IN (…)
    statements, which SQLAlchemy renders per call, still do."""
    db = Database(await _migrated(tmp_path / "count.db"))
    executed = statements_through_sqlalchemy(db.engine)

    try:
        await _hot_path(db)
    finally:
        await db.close()
    # Neither the insert of a user nor codes.current() is a hot statement.
    assert executed == ["INSERT users", "SELECT one_time_codes"]


@pytest.mark.parametrize("returning", [True, False])
async def test_the_claim_leases_the_due_jobs_with_or_without_returning(
    tmp_path: Path, returning: bool
) -> None:
    """One UPDATE … RETURNING where the database has it (SQLite 3.35+, PostgreSQL);
    three statements on an older SQLite. Both lease the same jobs, oldest first."""
    db = Database(await _migrated(tmp_path / "claim.db"))
    db.engine.sync_engine.dialect.update_returning = returning
    try:
        async with db.write() as conn:
            await _jobs(conn, ["a" * 32, "b" * 32, "c" * 32])
            await DeliveryRepository(conn).enqueue(
                job_id="later".ljust(32, "0"),
                user_id=None,
                notification="n",
                locale="en",
                sealed_payload=b"x",
                expires_at=None,
                now=NOW + timedelta(minutes=5),  # not due yet
            )
        async with db.write() as conn:
            jobs = DeliveryRepository(conn)
            first = await jobs.claim_due(owner="w1", now=NOW, lease_seconds=60, limit=2)
            second = await jobs.claim_due(owner="w2", now=NOW, lease_seconds=60, limit=2)
            third = await jobs.claim_due(owner="w3", now=NOW, lease_seconds=60, limit=2)
            # The first lease runs out: its jobs are due again, to another worker.
            expired = await jobs.claim_due(
                owner="w4", now=NOW + timedelta(seconds=61), lease_seconds=60, limit=10
            )
        assert len(first) == 2 and len(second) == 1 and third == []
        assert {j.id for j in first + second} == {"a" * 32, "b" * 32, "c" * 32}
        assert all(j.status == "sending" for j in first + second)
        assert all(j.next_attempt_at == NOW for j in first + second)
        assert sorted(j.id for j in expired) == sorted(j.id for j in first + second)
    finally:
        await db.close()


async def test_errors_on_the_direct_path_are_sqlalchemys(tmp_path: Path) -> None:
    """A constraint violation raises IntegrityError as through SQLAlchemy (the web layer
    maps SQLAlchemy's database errors), and a missing parameter is refused by
    SQLAlchemy, not sent to SQLite as NULL."""
    db = Database(await _migrated(tmp_path / "errors.db"))
    try:
        insert_job = Prepared(delivery_jobs.insert())
        values = {
            "id": "j" * 32,
            "notification": "n",
            "locale": "en",
            "status": "queued",
            "next_attempt_at": NOW,
            "created_at": NOW,
            "updated_at": NOW,
        }
        async with db.write() as conn:
            assert prepared.inline_sqlite(conn) is not None
            assert await insert_job.execute(conn, values) == 1
        with pytest.raises(IntegrityError):
            async with db.write() as conn:
                await insert_job.execute(conn, values)  # the same primary key again
        by_id = Prepared(select(delivery_jobs.c.id).where(delivery_jobs.c.id == bindparam("id")))
        async with db.read() as conn:
            with pytest.raises(StatementError):
                await by_id.rows(conn, {})
            assert await by_id.rows(conn, {"id": "j" * 32}) == [{"id": "j" * 32}]
    finally:
        await db.close()


async def test_statements_rendered_per_call_go_through_sqlalchemy(tmp_path: Path) -> None:
    """IN (…) lists are rendered per execution, which only SQLAlchemy does: such a
    statement falls back to ``conn.execute`` and still returns the right rows."""
    db = Database(await _migrated(tmp_path / "fallback.db"))
    try:
        async with db.write() as conn:
            await _jobs(conn, ["a" * 32, "b" * 32, "c" * 32])
        wanted = Prepared(
            select(delivery_jobs.c.id)
            .where(delivery_jobs.c.id.in_(["a" * 32, "c" * 32]))
            .order_by(delivery_jobs.c.id)
        )
        async with db.read() as conn:
            assert await wanted.rows(conn, {}) == [{"id": "a" * 32}, {"id": "c" * 32}]
        assert wanted._forms == {("sqlite", "aiosqlite", ()): None}
    finally:
        await db.close()


async def _jobs(conn: AsyncConnection, ids: list[str]) -> None:
    for job_id in ids:
        await DeliveryRepository(conn).enqueue(
            job_id=job_id,
            user_id=None,
            notification="n",
            locale="en",
            sealed_payload=b"x",
            expires_at=None,
            now=NOW,
        )
