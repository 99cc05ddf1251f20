"""Sessions in a dict: for tests and single-process tools; lost on restart."""

from __future__ import annotations

import copy
from datetime import datetime

from resetflow.storage.sessions.base import SessionRecord, SessionStore


class MemorySessionStore(SessionStore):
    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}

    async def load(self, id_hash: str, *, now: datetime) -> SessionRecord | None:
        record = self._records.get(id_hash)
        if record is None or record.expires_at <= now:
            return None
        return copy.deepcopy(record)

    async def save(self, id_hash: str, record: SessionRecord) -> None:
        self._records[id_hash] = copy.deepcopy(record)

    async def delete(self, id_hash: str) -> None:
        self._records.pop(id_hash, None)

    async def delete_user(self, user_id: str) -> int:
        doomed = [key for key, record in self._records.items() if record.user_id == user_id]
        for key in doomed:
            del self._records[key]
        return len(doomed)

    async def purge_expired(self, *, now: datetime) -> int:
        doomed = [key for key, record in self._records.items() if record.expires_at <= now]
        for key in doomed:
            del self._records[key]
        return len(doomed)
