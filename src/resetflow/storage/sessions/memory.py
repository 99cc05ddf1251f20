"""Sessions in a dict: for tests and single-process tools; lost on restart."""

from __future__ import annotations

import copy
from datetime import datetime

from resetflow.storage.sessions.base import SessionRecord, SessionStore


class MemorySessionStore(SessionStore):
    def __init__(self, *, idle_seconds: float | None = None) -> None:
        self._records: dict[str, SessionRecord] = {}
        self.idle_seconds = idle_seconds

    async def load(self, id_hash: str, *, now: datetime) -> SessionRecord | None:
        record = self._records.get(id_hash)
        if record is None or not self.live(record, now):
            return None
        return copy.deepcopy(record)

    async def save(self, id_hash: str, record: SessionRecord) -> None:
        self._records[id_hash] = copy.deepcopy(record)

    async def touch(self, id_hash: str, *, now: datetime) -> bool:
        record = self._records.get(id_hash)
        if record is None or not self.live(record, now) or record.seen_at >= now:
            return False
        record.last_seen_at = now
        return True

    async def delete(self, id_hash: str) -> None:
        self._records.pop(id_hash, None)

    async def delete_user(self, user_id: str) -> int:
        doomed = [key for key, record in self._records.items() if record.user_id == user_id]
        for key in doomed:
            del self._records[key]
        return len(doomed)

    async def purge_expired(self, *, now: datetime) -> int:
        doomed = [key for key, record in self._records.items() if not self.live(record, now)]
        for key in doomed:
            del self._records[key]
        return len(doomed)
