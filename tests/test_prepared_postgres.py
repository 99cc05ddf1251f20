"""storage/prepared.py on PostgreSQL: on a connection in autocommit (``write_batched``,
/send-token's look-up and its one write) the hot statements go straight to asyncpg; what
they read and write must be exactly what SQLAlchemy's own execution reads and writes, and
their errors SQLAlchemy's. Inside a transaction they must go through SQLAlchemy.

Every scenario runs twice, each time on a fresh database: once as the server runs it
(direct path) and once with the direct path switched off; the two databases must then
hold the same rows, value for value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Float, bindparam, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.models import Channel
from resetflow.audit import AuditEvent, AuditLog
from resetflow.clock import FrozenClock
from resetflow.storage import prepared
from resetflow.storage.codes import CodeRepository
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryRepository, SentJob
from resetflow.storage.migrate import upgrade_async
from resetflow.storage.prepared import Prepared
from resetflow.storage.tables import (
    audit_events,
    delivery_attempts,
    delivery_jobs,
    one_time_codes,
    users,
)
from resetflow.storage.users import DECOY_USER_ID, UserRepository
from tests.support.databases import (
    fresh_postgres_database,
    statements_through_sqlalchemy,
    write_reset_rows,
)

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
ADA, BOB = "a" * 32, "b" * 32
TABLES = (users, one_time_codes, delivery_jobs, delivery_attempts, audit_events)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
def other_postgres_url(postgres_server: str) -> Iterator[str]:
    """A second fresh database (``postgres_url`` is one per test), dropped after it."""
    with fresh_postgres_database(postgres_server) as url:
        yield url


@pytest.fixture
def direct_off(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    def switch_off() -> None:
        monkeypatch.setattr(prepared, "autocommit_asyncpg", lambda _conn: None)

    return switch_off


@pytest.fixture
def sent_straight(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement sent straight to asyncpg from now on."""
    sent: list[str] = []
    straight = prepared.on_asyncpg

    async def traced(conn: AsyncConnection, raw: Any, method: str, sql: str, *args: Any) -> Any:
        sent.append(sql)
        return await straight(conn, raw, method, sql, *args)

    monkeypatch.setattr(prepared, "on_asyncpg", traced)
    return sent


async def _database(url: str) -> Database:
    await upgrade_async(url)
    return Database(url)


async def _run(url: str, scenario: Callable[[Database], Awaitable[Any]]) -> Any:
    db = await _database(url)
    try:
        return await scenario(db)
    finally:
        await db.close()


async def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    db = Database(url)
    try:
        async with db.read() as conn:
            dump = {
                table.name: sorted(map(tuple, await conn.execute(select(table))), key=repr)
                for table in TABLES
            }
    finally:
        await db.close()
    # The decoy account is written by the migration, stamped with its own time.
    dump["users"] = [row for row in dump["users"] if row[0] != DECOY_USER_ID]
    return dump


async def _send_token(db: Database, n: int) -> dict[str, Any]:
    """What /send-token does on PostgreSQL: look-ups, then code, job, audit record and
    wake-up gathered and sent as one statement, all on a connection in autocommit."""
    read: dict[str, Any] = {}

    async def work(conn: AsyncConnection) -> None:
        found = UserRepository(conn)
        read["by_id"] = await found.get(ADA)
        read["no_id"] = await found.get("x" * 32)
        read["by_email"] = await found.by_email("ada@example.com")
        read["by_phone"] = await found.by_phone("+14155550100")
        read["unknown"] = await found.by_email("nobody@example.com")
        read["or_decoy"] = await found.by_contact_or_decoy(email="ada@example.com", phone=None)
        decoy = await found.by_contact_or_decoy(email="nobody@example.com", phone=None)
        assert decoy.created_at.tzinfo is UTC
        # Written by the migration, stamped with its own time: the rest must match.
        read["decoy"] = replace(decoy, created_at=NOW)
        read["by_phone_or_decoy"] = await found.by_contact_or_decoy(
            email=None, phone="+14155550101"
        )
        await write_reset_rows(conn, db, user_id=ADA, n=n, now=NOW)
        jobs = DeliveryRepository(conn)
        await jobs.wake_workers()

    await db.write_batched(work)
    return read


async def _hot_path(db: Database) -> dict[str, Any]:
    """Two /send-token (the second replaces the first's code: the upsert's update
    branch), then the worker's statements on a connection in autocommit too; returns what
    was read, for comparison."""
    async with db.write() as conn:
        for user_id, email, phone in [
            (ADA, "ada@example.com", "+14155550100"),
            (BOB, "bob@example.com", "+14155550101"),
        ]:
            await UserRepository(conn).insert(
                user_id=user_id,
                name=user_id[0],
                email=email,
                phone=phone,
                password_hash="$argon2id$x",
                preference=Channel.EMAIL,
                locale="en",
                now=NOW,
            )
    read: dict[str, Any] = {"first": await _send_token(db, 0), "second": await _send_token(db, 1)}
    async with db.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        jobs = DeliveryRepository(conn)
        claimed = await jobs.claim_due(owner="w1", now=NOW, lease_seconds=60, limit=10)
        read["claimed"] = sorted(claimed, key=lambda job: job.id)
        first, second = read["claimed"]
        await jobs.record_attempt(
            job_id=first.id,
            channel="email",
            provider="smtp",
            destination="a***@example.com",
            status="sent",
            provider_message_id="<m1@example.com>",
            error=None,
            now=NOW,
        )
        read["finished"] = await jobs.finish(
            first.id, owner="w1", status="sent", channel="email", provider="smtp", now=NOW
        )
        read["not_ours"] = await jobs.finish(second.id, owner="w2", status="sent", now=NOW)
        # executemany, both ways: the attempts' inserts and the jobs' updates.
        await jobs.close_sent(
            [SentJob(second.id, "email", "smtp", "a***@example.com", "<m2@example.com>")],
            owner="w1",
            now=NOW,
        )
        await AuditLog(database=db, clock=FrozenClock(NOW)).record_many(
            AuditEvent.CODE_SENT,
            outcome="sent",
            conn=conn,
            entries=[(ADA, {"job": first.id}), (None, {"job": second.id})],
        )
        await jobs.discard(first.id, owner="w1")  # not a decoy's owner any more: no row
        read["after_discard"] = await jobs.claim_due(
            owner="w3", now=NOW + timedelta(hours=1), lease_seconds=60, limit=10
        )
    async with db.read() as conn:
        read["code"] = await CodeRepository(conn).current(user_id=ADA, purpose="reset")
    return read


async def test_the_direct_path_writes_and_reads_what_sqlalchemy_would(
    postgres_url: str,
    other_postgres_url: str,
    direct_off: Callable[[], None],
    sent_straight: list[str],
) -> None:
    direct = await _run(postgres_url, _hot_path)
    assert len(sent_straight) >= 15  # it did run straight on asyncpg
    direct_off()
    sent_straight.clear()
    through_sqlalchemy = await _run(other_postgres_url, _hot_path)
    assert sent_straight == []

    assert direct == through_sqlalchemy
    assert await _dump(postgres_url) == await _dump(other_postgres_url)
    # And what was read is right, not merely the same both ways.
    first = direct["first"]
    assert first["by_id"] is not None and first["by_id"] == first["by_email"]
    assert first["by_id"].id == ADA and first["by_id"].created_at == NOW
    assert first["by_id"].created_at.tzinfo is UTC
    assert first["by_phone"].id == ADA and first["or_decoy"].id == ADA
    assert first["by_phone_or_decoy"].id == BOB
    assert first["decoy"].id == DECOY_USER_ID
    assert first["no_id"] is None and first["unknown"] is None
    assert direct["code"].attempt_hash == "a1" and direct["code"].code_mac == b"\x01" * 32
    assert [job.id for job in direct["claimed"]] == ["j0".ljust(32, "0"), "j1".ljust(32, "0")]
    assert direct["claimed"][0].sealed_payload == b"\x00sealed\xff"
    assert direct["finished"] is True and direct["not_ours"] is False
    assert direct["after_discard"] == []
    rows = await _dump(postgres_url)
    assert len(rows["one_time_codes"]) == 1
    assert len(rows["delivery_jobs"]) == 2 and len(rows["delivery_attempts"]) == 2
    assert len(rows["audit_events"]) == 4  # two requests, two sends


async def test_the_hot_statements_skip_sqlalchemy_execution(postgres_url: str) -> None:
    """The point: in autocommit none of /send-token's statements, nor the worker's
    prepared ones, goes through SQLAlchemy's execution; what is left there is what runs
    in transactions (the users' insert, codes.current) and pg_notify outside a batch."""
    db = await _database(postgres_url)
    executed = statements_through_sqlalchemy(db.engine)

    try:
        await _hot_path(db)
    finally:
        await db.close()
    assert executed == ["INSERT users", "INSERT users", "SELECT one_time_codes"]


async def test_in_a_transaction_the_statements_go_through_sqlalchemy(
    postgres_url: str, sent_straight: list[str]
) -> None:
    """Inside ``db.write()`` (SQLAlchemy begins lazily) nothing goes straight to asyncpg,
    and so the statements are in the transaction: a rollback undoes them. Likewise on a
    connection whose switch to autocommit SQLAlchemy refused (a transaction had begun),
    although the execution option records it."""
    db = await _database(postgres_url)
    try:
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                assert prepared.autocommit_asyncpg(conn) is None
                await _job(conn, "k" * 32)
                raise RuntimeError("roll back")
        async with db.engine.connect() as conn:
            transaction = await conn.begin()
            with pytest.raises(InvalidRequestError):
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            assert conn.sync_connection is not None
            assert conn.sync_connection.get_execution_options()["isolation_level"] == "AUTOCOMMIT"
            assert prepared.autocommit_asyncpg(conn) is None
            await _job(conn, "m" * 32)
            await transaction.rollback()
        assert sent_straight == []
        assert await _jobs(db) == 0

        async def batched(conn: AsyncConnection) -> None:
            assert prepared.autocommit_asyncpg(conn) is not None
            await UserRepository(conn).get(ADA)

        await db.write_batched(batched)
        assert len(sent_straight) == 1
    finally:
        await db.close()


async def test_a_constraint_violation_on_the_direct_path_is_an_integrity_error(
    postgres_url: str, sent_straight: list[str]
) -> None:
    db = await _database(postgres_url)
    try:
        async with _autocommit(db) as conn:
            await _job(conn, "j" * 32)
            with pytest.raises(IntegrityError) as refused:
                await _job(conn, "j" * 32)  # the same primary key again
            assert isinstance(refused.value.orig, asyncpg.UniqueViolationError)
            assert not refused.value.connection_invalidated and not conn.invalidated
            # The connection is fine (no transaction to abort): it goes on.
            await _job(conn, "k" * 32)
        assert len(sent_straight) == 3
        assert await _jobs(db) == 2
    finally:
        await db.close()


async def test_a_connection_lost_during_a_direct_statement_is_invalidated(
    postgres_url: str, sent_straight: list[str]
) -> None:
    """The backend is killed while a statement runs straight on asyncpg: a DBAPIError
    (the web layer's 503), the connection invalidated, and the pool's next connection is
    a new one that works."""
    db = await _database(postgres_url)
    try:
        async with _autocommit(db) as conn:
            pid = await _backend_pid(conn)
            running = asyncio.create_task(_SLEEP.rows(conn, {"seconds": 30}))
            await asyncio.sleep(0.3)
            await _terminate(postgres_url, pid)
            with pytest.raises(DBAPIError) as lost:
                await asyncio.wait_for(running, 10)
            assert lost.value.connection_invalidated and conn.invalidated
        assert sent_straight[-1].startswith("SELECT pg_sleep")
        async with _autocommit(db) as conn:
            assert await _backend_pid(conn) != pid
    finally:
        await db.close()


async def test_a_direct_statement_cancelled_midway_invalidates_its_connection(
    postgres_url: str, sent_straight: list[str]
) -> None:
    """Cancelled while it runs (a client gone, a timeout), the statement leaves the
    connection in an unknown state: invalidated, as SQLAlchemy does with its own."""
    db = await _database(postgres_url)
    try:
        async with _autocommit(db) as conn:
            running = asyncio.create_task(_SLEEP.rows(conn, {"seconds": 30}))
            await asyncio.sleep(0.3)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            assert conn.invalidated
        assert sent_straight[-1].startswith("SELECT pg_sleep")
        async with _autocommit(db) as conn:
            assert await _backend_pid(conn) > 0
    finally:
        await db.close()


async def test_a_connection_killed_while_idle_fails_through_sqlalchemy(
    postgres_url: str, sent_straight: list[str]
) -> None:
    """Killed between statements, asyncpg knows the connection is closed: the statement
    then goes through SQLAlchemy, which fails it without sending it (DBAPIError) and
    invalidates the connection, and the pool with it."""
    db = await _database(postgres_url)
    try:
        async with _autocommit(db) as conn:
            pid = await _backend_pid(conn)
            await _terminate(postgres_url, pid)
            assert conn.sync_connection is not None
            raw = conn.sync_connection.connection.driver_connection
            for _ in range(500):
                if raw.is_closed():
                    break
                await asyncio.sleep(0.01)
            assert prepared.autocommit_asyncpg(conn) is None
            sent_straight.clear()
            with pytest.raises(DBAPIError) as lost:
                await UserRepository(conn).get(ADA)
            assert lost.value.connection_invalidated and conn.invalidated
            assert sent_straight == []
        async with _autocommit(db) as conn:
            assert await _backend_pid(conn) != pid
    finally:
        await db.close()


async def test_one_statement_runs_straight_on_sqlite_and_on_postgresql(
    postgres_url: str, tmp_path: Path, sent_straight: list[str]
) -> None:
    """A Prepared is shared by every database of the process: its compiled form is kept
    per kind of database (SQLite's ``?`` is a syntax error on PostgreSQL)."""
    by_id = Prepared(select(delivery_jobs.c.id).where(delivery_jobs.c.id == bindparam("id")))
    sqlite = await _database(f"sqlite+aiosqlite:///{tmp_path / 'first.db'}")
    try:
        async with sqlite.write() as conn:
            await _job(conn, "j" * 32)
            assert prepared.inline_sqlite(conn) is not None
            assert await by_id.rows(conn, {"id": "j" * 32}) == [{"id": "j" * 32}]
    finally:
        await sqlite.close()
    postgres = await _database(postgres_url)
    try:
        async with _autocommit(postgres) as conn:
            await _job(conn, "j" * 32)
            assert await by_id.rows(conn, {"id": "j" * 32}) == [{"id": "j" * 32}]
    finally:
        await postgres.close()
    assert len(sent_straight) == 2 and "$1" in sent_straight[1]


def _autocommit(db: Database) -> Any:
    return db.engine.execution_options(isolation_level="AUTOCOMMIT").connect()


_PID = Prepared(select(func.pg_backend_pid().label("pid")))
_SLEEP = Prepared(select(func.pg_sleep(bindparam("seconds", type_=Float))))


async def _backend_pid(conn: AsyncConnection) -> int:
    row = await _PID.first(conn, {})
    assert row is not None
    return int(row["pid"])


async def _terminate(url: str, pid: int) -> None:
    admin = await asyncpg.connect(_dsn(url))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def _job(conn: AsyncConnection, job_id: str) -> None:
    await DeliveryRepository(conn).enqueue(
        job_id=job_id,
        user_id=None,
        notification="n",
        locale="en",
        sealed_payload=b"x",
        expires_at=None,
        now=NOW,
    )


async def _jobs(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(delivery_jobs))).one()[0])
