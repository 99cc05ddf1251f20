"""Failed sign-ins per account (R57): the per-IP limits alone let an attacker with many
addresses guess one account's password without end.

Each account has a count of consecutive failed sign-ins (unknown contacts all count under
one key, so that both take the same steps). It grows by one at every refused sign-in, is
cleared by a successful sign-in and by a successful password reset, and is forgotten
``ttl_seconds`` (24 h by default) after the last failure. From ``max_failures`` (100, the
most NIST SP 800-63B allows) on, every sign-in of that account is refused, the right
password included, and answered exactly like a wrong password (the caller verifies the
password all the same, so the timing does not change either). Recovery is never
blocked: ``/send-token`` works as before, and the reset that follows clears the count,
so the owner is in again at once.

A hard stop rather than an escalating delay: a delay an attacker can see (a slower
answer, or a ``Retry-After``) would tell a known account from an unknown one (R19, R21).
Counted where the rate limits are: in Redis when ``RESETFLOW_REDIS_URL`` is set (every
process sees the same counts), else in this process's memory.
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis

from resetflow.storage.redis import client_options


class FailureCounts(Protocol):
    async def get(self, key: str) -> int: ...

    async def add(self, key: str, *, ttl_seconds: int) -> int:
        """One more failure; the new count. The count expires ``ttl_seconds`` from now."""
        ...

    async def clear(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryFailureCounts:
    """This process's memory; at most ``max_keys`` counts (the oldest go first)."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._max_keys = max_keys

    async def get(self, key: str) -> int:
        entry = self._counts.get(key)
        if entry is None:
            return 0
        if entry[1] <= time.monotonic():
            del self._counts[key]
            return 0
        return entry[0]

    async def add(self, key: str, *, ttl_seconds: int) -> int:
        count = await self.get(key) + 1
        self._counts.pop(key, None)  # re-inserted last: the dict's order is by last failure
        self._counts[key] = (count, time.monotonic() + ttl_seconds)
        if len(self._counts) > self._max_keys:
            self._counts.pop(next(iter(self._counts)))
        return count

    async def clear(self, key: str) -> None:
        self._counts.pop(key, None)

    async def close(self) -> None:
        return None


class RedisFailureCounts:
    """One Redis string per key, ``{prefix}:{key}``, with its expiry."""

    def __init__(self, client: Redis, *, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, prefix: str) -> RedisFailureCounts:
        return cls(Redis.from_url(url, **client_options()), prefix=prefix)

    async def get(self, key: str) -> int:
        value = await self._redis.get(f"{self._prefix}:{key}")
        return int(value) if value is not None else 0

    async def add(self, key: str, *, ttl_seconds: int) -> int:
        name = f"{self._prefix}:{key}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, ttl_seconds)
            count, _ = await pipe.execute()
        return int(count)

    async def clear(self, key: str) -> None:
        await self._redis.delete(f"{self._prefix}:{key}")

    async def close(self) -> None:
        await self._redis.aclose()


def make_failure_counts(redis_url: str | None, *, prefix: str = "resetflow") -> FailureCounts:
    if redis_url:
        return RedisFailureCounts.from_url(redis_url, prefix=f"{prefix}:signin-failures")
    return MemoryFailureCounts()


class SignInFailures:
    """The per-account rule on top of a :class:`FailureCounts`."""

    def __init__(
        self, counts: FailureCounts, *, max_failures: int = 100, ttl_seconds: int = 24 * 3600
    ) -> None:
        if not 1 <= max_failures <= 100:
            raise ValueError("max_failures must be 1..100 (NIST SP 800-63B)")
        self._counts = counts
        self.max_failures = max_failures
        self.ttl_seconds = ttl_seconds

    @staticmethod
    def account_key(user_id: str) -> str:
        return f"account:{user_id}"

    @staticmethod
    def unknown_key() -> str:
        """The one key every unknown contact counts under: the same steps as for an
        account, without a key per contact tried (which a spray of made-up addresses
        would grow without bound)."""
        return "unknown"

    async def stopped(self, key: str) -> bool:
        """True when ``key`` has failed ``max_failures`` times in a row."""
        return await self._counts.get(key) >= self.max_failures

    async def failed(self, key: str) -> None:
        await self._counts.add(key, ttl_seconds=self.ttl_seconds)

    async def succeeded(self, key: str) -> None:
        await self._counts.clear(key)

    async def close(self) -> None:
        await self._counts.close()
