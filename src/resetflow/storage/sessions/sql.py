"""Sessions in the SQL database: the embedded default's store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import Executable, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage.database import Database
from resetflow.storage.prepared import Prepared
from resetflow.storage.sessions.base import SessionRecord, SessionStore
from resetflow.storage.tables import UtcDateTime, sessions


def _upsert(insert: postgresql.Insert | sqlite.Insert) -> Executable:
    """``INSERT … ON CONFLICT (id_hash) DO UPDATE``: one statement per save."""
    statement = insert.values({column: bindparam(column.name) for column in sessions.c})
    return statement.on_conflict_do_update(
        index_elements=["id_hash"],
        set_={c.name: statement.excluded[c.name] for c in sessions.c if c.name != "id_hash"},
    )


# Built once: most requests save their session.
_SAVE: dict[str, Prepared] = {
    "postgresql": Prepared(_upsert(postgresql.insert(sessions))),
    "sqlite": Prepared(_upsert(sqlite.insert(sessions))),
}
_LOAD = Prepared(
    select(sessions).where(
        (sessions.c.id_hash == bindparam("id_hash")) & (sessions.c.expires_at > bindparam("now"))
    )
)

_last_seen = func.coalesce(sessions.c.last_seen_at, sessions.c.created_at)
_NOW = bindparam("now", type_=UtcDateTime())
# Slide a live session's idle deadline; never back, never a row that is gone.
_TOUCH = Prepared(
    update(sessions)
    .where(
        (sessions.c.id_hash == bindparam("touched"))
        & (sessions.c.expires_at > _NOW)
        & (_last_seen < _NOW)
        & (_last_seen > bindparam("idle_floor", type_=UtcDateTime()))
    )
    .values(last_seen_at=_NOW)
)
# With no idle limit, "seen after" this is always true.
_NO_IDLE_FLOOR = datetime(1970, 1, 1, tzinfo=UTC)


class SqlSessionStore(SessionStore):
    def __init__(self, *, database: Database, idle_seconds: float | None = None) -> None:
        self._db = database
        self.idle_seconds = idle_seconds

    async def load(self, id_hash: str, *, now: datetime) -> SessionRecord | None:
        m = await self._db.read_first(_LOAD, {"id_hash": id_hash, "now": now})
        if m is None:
            return None
        record = SessionRecord(
            user_id=m["user_id"],
            data=json.loads(m["data"]),
            created_at=m["created_at"],
            expires_at=m["expires_at"],
            last_seen_at=m["last_seen_at"],
        )
        return None if self.idle_expired(record, now) else record

    async def save(self, id_hash: str, record: SessionRecord) -> None:
        values = {
            "id_hash": id_hash,
            "user_id": record.user_id,
            "data": json.dumps(record.data, separators=(",", ":")),
            "created_at": record.created_at,
            "expires_at": record.expires_at,
            "last_seen_at": record.last_seen_at,
        }

        async def upsert(conn: AsyncConnection) -> None:
            await _SAVE[conn.dialect.name].execute(conn, values)

        # Saves of concurrent requests share one transaction (one commit) on SQLite.
        await self._db.write_coalesced(upsert)

    async def touch(self, id_hash: str, *, now: datetime) -> bool:
        values = {"touched": id_hash, "now": now, "idle_floor": self._idle_floor(now)}

        async def update_seen(conn: AsyncConnection) -> int:
            return await _TOUCH.execute(conn, values)

        # One small UPDATE, in the same group commit as concurrent saves (SQLite).
        return await self._db.write_coalesced(update_seen) == 1

    def _idle_floor(self, now: datetime) -> datetime:
        """Sessions last seen at or before this are idle-expired at ``now``."""
        if self.idle_seconds is None:
            return _NO_IDLE_FLOOR
        return now - timedelta(seconds=self.idle_seconds)

    async def delete(self, id_hash: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))

    async def delete_user(self, user_id: str) -> int:
        async with self._db.write() as conn:
            result = await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        return result.rowcount

    async def purge_expired(self, *, now: datetime) -> int:
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(sessions).where(
                    (sessions.c.expires_at <= now) | (_last_seen <= self._idle_floor(now))
                )
            )
        return result.rowcount
