"""Sessions in the SQL database: the embedded default's store."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Executable, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage.database import Database
from resetflow.storage.prepared import Prepared
from resetflow.storage.sessions.base import SessionRecord, SessionStore
from resetflow.storage.tables import sessions


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


class SqlSessionStore(SessionStore):
    def __init__(self, *, database: Database) -> None:
        self._db = database

    async def load(self, id_hash: str, *, now: datetime) -> SessionRecord | None:
        async with self._db.read() as conn:
            m = await _LOAD.first(conn, {"id_hash": id_hash, "now": now})
        if m is None:
            return None
        return SessionRecord(
            user_id=m["user_id"],
            data=json.loads(m["data"]),
            created_at=m["created_at"],
            expires_at=m["expires_at"],
        )

    async def save(self, id_hash: str, record: SessionRecord) -> None:
        values = {
            "id_hash": id_hash,
            "user_id": record.user_id,
            "data": json.dumps(record.data, separators=(",", ":")),
            "created_at": record.created_at,
            "expires_at": record.expires_at,
        }

        async def upsert(conn: AsyncConnection) -> None:
            await _SAVE[conn.dialect.name].execute(conn, values)

        # Saves of concurrent requests share one transaction (one commit) on SQLite.
        await self._db.write_coalesced(upsert)

    async def delete(self, id_hash: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(sessions).where(sessions.c.id_hash == id_hash))

    async def delete_user(self, user_id: str) -> int:
        async with self._db.write() as conn:
            result = await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        return result.rowcount

    async def purge_expired(self, *, now: datetime) -> int:
        async with self._db.write() as conn:
            result = await conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
        return result.rowcount
