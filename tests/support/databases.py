"""Databases for tests: throw-away PostgreSQL databases, statement traces."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from resetflow.accounts.models import Channel
from resetflow.audit import AuditEvent, AuditLog
from resetflow.client import ClientInfo
from resetflow.clock import FrozenClock
from resetflow.storage.codes import CodeRepository
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.users import UserRepository


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server at ``server_url`` (a SQLAlchemy asyncpg URL);
    its URL, and the database dropped when the block ends."""
    name = f"resetflow_test_{secrets.token_hex(6)}"
    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def statements_through_sqlalchemy(engine: AsyncEngine) -> list[str]:
    """Every statement SQLAlchemy executes on ``engine`` from now on, as "VERB table"
    (``INSERT users``): what did *not* take a direct path (storage/prepared.py)."""
    executed: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        verb = statement.split()[0]
        table = re.search(r"\b(?:INTO|FROM|UPDATE)\s+(\w+)", statement)
        executed.append(f"{verb} {table.group(1) if table else '?'}")

    return executed


async def write_reset_rows(
    conn: AsyncConnection, db: Database, *, user_id: str, n: int, now: datetime
) -> None:
    """The rows one /send-token writes for ``user_id``, statement by statement: its
    code (``c<n>``, replacing the account's current one), its job (``j<n>``) and its
    audit record, each with values fixed by ``n`` and ``now`` so that two runs compare."""
    await CodeRepository(conn).replace(
        code_id=f"c{n}".ljust(32, "0"),
        user_id=user_id,
        purpose="reset",
        attempt_hash=f"a{n}",
        code_mac=bytes([n]) * 32,
        now=now + timedelta(seconds=n),
        expires_at=now + timedelta(minutes=10),
    )
    await DeliveryRepository(conn).enqueue(
        job_id=f"j{n}".ljust(32, "0"),
        user_id=user_id,
        notification="password_reset_token",
        locale="en",
        sealed_payload=b"\x00sealed\xff",
        expires_at=now + timedelta(minutes=10),
        now=now,
    )
    await AuditLog(database=db, clock=FrozenClock(now)).record(
        AuditEvent.RESET_REQUESTED,
        outcome="code_queued",
        client=ClientInfo(ip="127.0.0.1", user_agent="test"),
        user_id=user_id,
        conn=conn,
        destination="a***@example.com",
    )


async def insert_ada(conn: AsyncConnection, *, user_id: str, now: datetime) -> None:
    """Ada's account under ``user_id``: email ada@example.com, phone +14155550100,
    email preferred, created at ``now``."""
    await UserRepository(conn).insert(
        user_id=user_id,
        name="Ada",
        email="ada@example.com",
        phone="+14155550100",
        password_hash="$argon2id$x",
        preference=Channel.EMAIL,
        locale="en",
        now=now,
    )
