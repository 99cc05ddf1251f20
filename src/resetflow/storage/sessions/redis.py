"""Sessions in Redis: what every web process shares in production.

Layout, under a key prefix: ``<prefix>session:<id hash>`` holds the record as JSON and
expires with it; ``<prefix>user:<user id>`` is the set of that user's session hashes, so
that :meth:`delete_user` can end them all. Both writes happen in one Lua script, so a
session can never exist without its index entry.

The session key's TTL is the time to whichever deadline comes first, the absolute one or
the idle one (``last_seen_at + idle_seconds``); :meth:`RedisSessionStore.touch` rewrites the
record with the new ``last_seen_at`` and sets the TTL again, min(time left, idle), so the
key never outlives ``expires_at``. The touch is a compare-and-set on the whole record (a
Lua script that writes only if the key still holds what was read): a session deleted or
saved meanwhile is left as it is, never brought back. The user set's TTL is raised to the
key's where lower, as on save, so that :meth:`delete_user` still finds the key. Loads also
check both deadlines by the service's clock (a frozen one in tests).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from resetflow.storage.redis import client_options
from resetflow.storage.sessions.base import SessionRecord, SessionStore

# KEYS[1] session key, KEYS[2] new user set (or ""), ARGV[1] JSON, ARGV[2] ttl ms,
# ARGV[3] prefix for user sets, ARGV[4] id hash.
_SAVE = """
local old = redis.call('GET', KEYS[1])
if old then
  local previous = cjson.decode(old)['user_id']
  if previous and previous ~= cjson.null and (ARGV[3] .. previous) ~= KEYS[2] then
    redis.call('SREM', ARGV[3] .. previous, ARGV[4])
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if KEYS[2] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[4])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return 1
"""

# KEYS[1] session key, KEYS[2] its user set (or ""), ARGV[1] JSON read, ARGV[2] new JSON,
# ARGV[3] ttl ms.
_TOUCH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if KEYS[2] ~= '' and redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS[1] user set, ARGV[1] prefix for session keys.
_DELETE_USER = """
local members = redis.call('SMEMBERS', KEYS[1])
local ended = 0
for _, id_hash in ipairs(members) do
  ended = ended + redis.call('DEL', ARGV[1] .. id_hash)
end
redis.call('DEL', KEYS[1])
return ended
"""


class RedisSessionStore(SessionStore):
    def __init__(
        self, *, client: Redis, prefix: str = "resetflow:", idle_seconds: float | None = None
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self.idle_seconds = idle_seconds
        self._save = client.register_script(_SAVE)
        self._touch = client.register_script(_TOUCH)
        self._delete_user = client.register_script(_DELETE_USER)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "resetflow:", idle_seconds: float | None = None
    ) -> RedisSessionStore:
        client = Redis.from_url(url, decode_responses=True, **client_options())
        return cls(client=client, prefix=prefix, idle_seconds=idle_seconds)

    async def load(self, id_hash: str, *, now: datetime) -> SessionRecord | None:
        raw = await self._redis.get(self._session_key(id_hash))
        if raw is None:
            return None
        record = _record(raw)
        # Redis expires the key by its own clock; the record's times are checked too, so
        # that expiry follows the service's clock (and a frozen clock in tests).
        return record if self.live(record, now) else None

    async def save(self, id_hash: str, record: SessionRecord) -> None:
        user_key = self._user_key(record.user_id) if record.user_id else ""
        await self._save(
            keys=[self._session_key(id_hash), user_key],
            args=[
                _payload(record),
                self._ttl_ms(record, record.seen_at),
                f"{self._prefix}user:",
                id_hash,
            ],
        )

    async def touch(self, id_hash: str, *, now: datetime) -> bool:
        key = self._session_key(id_hash)
        raw = await self._redis.get(key)
        if raw is None:
            return False
        record = _record(raw)
        if not self.live(record, now) or record.seen_at >= now:
            return False
        record.last_seen_at = now
        user_key = self._user_key(record.user_id) if record.user_id else ""
        moved = await self._touch(
            keys=[key, user_key], args=[raw, _payload(record), self._ttl_ms(record, now)]
        )
        return int(moved) == 1

    def _ttl_ms(self, record: SessionRecord, now: datetime) -> int:
        """Milliseconds from ``now`` to the first of the two deadlines (at least 1 s)."""
        deadline = record.expires_at
        if self.idle_seconds is not None:
            deadline = min(deadline, now + timedelta(seconds=self.idle_seconds))
        return max(1000, int((deadline - now).total_seconds() * 1000))

    async def delete(self, id_hash: str) -> None:
        await self._redis.delete(self._session_key(id_hash))

    async def delete_user(self, user_id: str) -> int:
        ended = await self._delete_user(
            keys=[self._user_key(user_id)], args=[f"{self._prefix}session:"]
        )
        return int(ended)

    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

    def _session_key(self, id_hash: str) -> str:
        return f"{self._prefix}session:{id_hash}"

    def _user_key(self, user_id: str) -> str:
        return f"{self._prefix}user:{user_id}"


def _payload(record: SessionRecord) -> str:
    return json.dumps(
        {
            "user_id": record.user_id,
            "data": record.data,
            "created_at": record.created_at.isoformat(),
            "expires_at": record.expires_at.isoformat(),
            "last_seen_at": record.last_seen_at.isoformat() if record.last_seen_at else None,
        },
        separators=(",", ":"),
    )


def _record(raw: str | bytes) -> SessionRecord:
    stored: dict[str, Any] = json.loads(raw)
    seen = stored.get("last_seen_at")  # absent from records written before 0008
    return SessionRecord(
        user_id=stored["user_id"],
        data=stored["data"],
        created_at=datetime.fromisoformat(stored["created_at"]),
        expires_at=datetime.fromisoformat(stored["expires_at"]),
        last_seen_at=datetime.fromisoformat(seen) if seen else None,
    )
