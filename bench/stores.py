"""Stores for the benchmarks: a fresh SQLite file or PostgreSQL database per run, users
inserted straight into it (one precomputed Argon2id hash, a verified email), and the
delivery-job queries the load benchmark checks delivery with."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import BenchError
from bench.sink import CODE, Message

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
PASSWORD = "bench password, never used to sign in"
EMAIL_DOMAIN = "example.com"


@dataclass
class PgDatabase:
    admin_url: str
    name: str
    created: bool = False

    def connect_args(self) -> dict[str, Any]:
        from sqlalchemy.engine import make_url

        url = make_url(self.admin_url)
        return {
            "host": url.host or "127.0.0.1",
            "port": url.port or 5432,
            "user": url.username or "postgres",
            "password": url.password,
            "database": url.database or "postgres",
        }

    @property
    def url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.admin_url).set(database=self.name).render_as_string(False)

    async def execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(**self.connect_args(), timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create(self) -> None:
        asyncio.run(self.execute(f'CREATE DATABASE "{self.name}"'))
        self.created = True

    def drop(self) -> None:
        if self.created:
            # FORCE (PostgreSQL 13+) ends connections a killed server may have left behind.
            asyncio.run(self.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.created = False


# The server -----------------------------------------------------------------------------

JOBS_SQL = (
    "SELECT user_id, count(*), sum(CASE WHEN status = 'sent' THEN 1 ELSE 0 END) "
    "FROM delivery_jobs WHERE notification = 'password-reset-token' AND user_id IS NOT NULL "
    "GROUP BY user_id"
)
PENDING_SQL = (
    "SELECT count(*) FROM delivery_jobs WHERE user_id IS NOT NULL "
    "AND status IN ('queued', 'sending')"
)
STATUS_SQL = "SELECT status, count(*) FROM delivery_jobs GROUP BY status"
USER_COLUMNS = [
    "id",
    "name",
    "email",
    "phone",
    "password_hash",
    "preference",
    "locale",
    "email_verified_at",
    "phone_verified_at",
    "code_failures",
    "created_at",
    "updated_at",
]


class SqliteStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "resetflow.db"

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path.resolve()}"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def insert_users(self, ids: list[str], emails: list[str], password_hash: str) -> None:
        now = datetime.now(UTC)
        # SQLAlchemy's SQLite DateTime format; UtcDateTime stores UTC without a zone.
        stamp = now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        columns, marks = ", ".join(USER_COLUMNS), ", ".join("?" * len(USER_COLUMNS))
        sql = f"INSERT INTO users ({columns}) VALUES ({marks})"  # noqa: S608 (no input)
        conn = self._connect()
        try:
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN")
            conn.executemany(
                sql,
                ((*row, stamp, None, 0, stamp, stamp) for row in _rows(ids, emails, password_hash)),
            )
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        # synchronous=OFF left the whole file (~250 MB at 1M users) in the page cache,
        # unwritten: the server's first checkpoint would fsync it, a stall of the load
        # measured afterwards that belongs to this set-up. Written out here instead.
        with self.path.open("rb+") as written:
            os.fsync(written.fileno())

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return list(conn.execute(sql))
        finally:
            conn.close()

    def mailbox_messages(self) -> list[Message]:
        # The dev mailbox's table kept its first name (resetflow/storage/tables.py).
        rows = self.query("SELECT recipient, text, created_at FROM dev_outbox")
        out = []
        for recipient, text, created in rows:
            at = datetime.fromisoformat(created).replace(tzinfo=UTC).timestamp()
            found = CODE.search(text)
            out.append(Message(at, recipient.lower(), found.group(1) if found else None))
        return out

    def cleanup(self) -> None:
        pass


def _rows(ids: list[str], emails: list[str], password_hash: str) -> Iterator[tuple[Any, ...]]:
    for user_id, address in zip(ids, emails, strict=True):
        yield (user_id, "Bench User", address, None, password_hash, "email", "en")


class PgStore:
    def __init__(self, admin_url: str, name: str, redis_url: str, prefix: str) -> None:
        self.db = PgDatabase(admin_url, name)
        self.redis_url = redis_url
        self.prefix = prefix

    @property
    def url(self) -> str:
        return self.db.url

    def create(self) -> None:
        self.db.create()

    def _run(self, coro_fn: Any) -> Any:
        async def go() -> Any:
            import asyncpg

            conn = await asyncpg.connect(**self.db.connect_args() | {"database": self.db.name})
            try:
                return await coro_fn(conn)
            finally:
                await conn.close()

        return asyncio.run(go())

    def insert_users(self, ids: list[str], emails: list[str], password_hash: str) -> None:
        now = datetime.now(UTC)

        async def copy(conn: Any) -> None:
            batch: list[tuple[Any, ...]] = []
            for row in _rows(ids, emails, password_hash):
                batch.append((*row, now, None, 0, now, now))
                if len(batch) == 100_000:
                    await conn.copy_records_to_table("users", records=batch, columns=USER_COLUMNS)
                    batch = []
            if batch:
                await conn.copy_records_to_table("users", records=batch, columns=USER_COLUMNS)
            # Fresh statistics and a checkpoint, so that neither happens during the load.
            await conn.execute("VACUUM ANALYZE users")
            await conn.execute("CHECKPOINT")

        self._run(copy)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        async def fetch(conn: Any) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.fetch(sql)]

        return list(self._run(fetch))

    def mailbox_messages(self) -> list[Message]:
        raise BenchError("the dev mailbox run is SQLite only")

    def cleanup(self) -> None:
        try:
            self.db.drop()
        except Exception as error:
            print(f"bench: could not drop database {self.db.name}: {error}", file=sys.stderr)
        try:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            try:
                keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
            finally:
                client.close()
        except Exception as error:
            print(f"bench: could not delete Redis keys {self.prefix}:*: {error}", file=sys.stderr)


Store = SqliteStore | PgStore


def preflight_postgres(database_url: str, redis_url: str) -> None:
    """PostgreSQL and Redis must answer before any PostgreSQL run starts."""
    try:
        asyncio.run(PgDatabase(database_url, "unused").execute("SELECT 1"))
    except Exception as error:
        raise BenchError(
            f"PostgreSQL at {database_url} does not answer ({type(error).__name__}: "
            f"{error}); start it, pass --database-url, or run --stores sqlite"
        ) from None
    try:
        import redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        raise BenchError(
            f"Redis at {redis_url} does not answer ({type(error).__name__}: {error}); "
            "start it, pass --redis-url, or run --stores sqlite"
        ) from None


def hash_password(password: str = PASSWORD) -> str:
    """One Argon2id hash (resetflow's parameters) shared by every inserted user."""
    from resetflow.accounts.passwords import PasswordHasher

    return asyncio.run(PasswordHasher().hash(password))


def new_address(prefix: str) -> str:
    # Known and unknown addresses have the same shape and length.
    return f"{prefix}-{secrets.token_hex(8)}@{EMAIL_DOMAIN}"


async def create_accounts(database_url: str, emails: list[str]) -> list[str]:
    """Insert users with a verified email directly (one shared Argon2id hash); their ids."""
    from resetflow.accounts.models import Channel
    from resetflow.accounts.passwords import PasswordHasher
    from resetflow.storage.database import Database
    from resetflow.storage.users import UserRepository

    password_hash = await PasswordHasher().hash(PASSWORD)
    now = datetime.now(UTC)
    ids = [secrets.token_hex(16) for _ in emails]
    database = Database(database_url)
    try:
        async with database.write() as conn:
            users = UserRepository(conn)
            for user_id, email in zip(ids, emails, strict=True):
                await users.insert(
                    user_id=user_id,
                    name="Bench User",
                    email=email,
                    phone=None,
                    password_hash=password_hash,
                    preference=Channel.EMAIL,
                    locale="en",
                    now=now,
                )
                await users.mark_verified(user_id, Channel.EMAIL, now=now)
    finally:
        await database.close()
    return ids


async def accounts_with_reset_code(database_url: str, user_ids: list[str]) -> int:
    """How many of these accounts hold a reset code (each known request must leave one)."""
    from sqlalchemy import func, select

    from resetflow.recovery.codes import RESET
    from resetflow.storage.database import Database
    from resetflow.storage.tables import one_time_codes

    database = Database(database_url)
    try:
        async with database.read() as conn:
            found = 0
            for start in range(0, len(user_ids), 500):
                chunk = user_ids[start : start + 500]
                query = select(func.count(func.distinct(one_time_codes.c.user_id))).where(
                    one_time_codes.c.user_id.in_(chunk), one_time_codes.c.purpose == RESET
                )
                found += int((await conn.execute(query)).scalar_one())
            return found
    finally:
        await database.close()
