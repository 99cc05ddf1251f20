"""Moving windows on Redis, every rule of a request taken in one round trip.

``limits``' Redis storage runs one Lua script per rule, so a ``/send-token`` (per-IP,
global and destination rules) cost six round trips, and a request refused by a later rule
had already used up the earlier ones. :class:`RedisWindows` checks every window of a
request and records a hit in all of them, or in none, in one ``EVALSHA``.

Stored state, kept compatible with ``limits``' moving window (so that, during a rolling
upgrade, processes on either version count in the same windows):

- one Redis list per window, named ``{prefix}:{window key}`` (``prefix`` is
  ``"{RESETFLOW_REDIS_PREFIX}:limits"``, the window key ``limits``' ``key_for``, e.g.
  ``resetflow:limits:LIMITER/destination/reset/<sha256 prefix>/1/1/minute``);
- its entries are hit times in seconds (``"1800000000.123456"``), newest first, trimmed
  to the rule's ``limit`` entries: a window is full when its ``limit``-th newest entry is
  at most ``expiry`` seconds old;
- each list expires (``PEXPIRE``) ``expiry`` seconds after its newest hit, when nothing
  in it counts any more, so idle windows vanish by themselves.

Times are the Redis server's (``TIME`` inside the script), so processes whose clocks
disagree still count in the same windows. Scripts writing after ``TIME`` are replicated
by their effects (the default since Redis 5, the only mode since 7).

The keys of one take may lie anywhere, which a Redis Cluster would refuse (CROSSSLOT):
like before, a single Redis server (or a primary with replicas) is assumed.

:meth:`RedisWindows.take_in_turn` takes several such groups in turn (a request's client
limits, then its destination's), each all or nothing, still in one round trip.

Errors are not wrapped: a lost connection raises ``redis.exceptions.ConnectionError`` (a
``RedisError``), which the web layer answers with 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

# Groups of windows taken in turn: ARGV[1] the number of groups, ARGV[2 .. 1 + groups] the
# windows in each, then each window's limit and length in seconds (KEYS[i]: window i).
# Group g is taken (a hit in each of its windows, all or nothing) only if every group
# before it took its hits. Returns {0, 0} when every group did, else {i, wait}: i the first
# refusing window of the first refusing group (1-based, over all KEYS), wait the
# microseconds until every refusing window of that group allows again. One group is
# ``take_all``.
TAKE_IN_TURN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local groups = tonumber(ARGV[1])
local base = 1 + groups
local stamp = string.format('%.6f', now)
local from = 1
for g = 1, groups do
    local to = from + tonumber(ARGV[1 + g]) - 1
    local first, wait = 0, 0
    for i = from, to do
        local limit = tonumber(ARGV[base + 2 * i - 1])
        local expiry = tonumber(ARGV[base + 2 * i])
        local until_free = nil
        if limit < 1 then
            until_free = expiry
        else
            local entry = redis.call('LINDEX', KEYS[i], limit - 1)
            if entry then
                local oldest = tonumber(entry)
                if oldest >= now - expiry then
                    until_free = oldest + expiry - now
                end
            end
        end
        if until_free then
            if first == 0 then
                first = i
            end
            if until_free > wait then
                wait = until_free
            end
        end
    end
    if first > 0 then
        return {first, math.ceil(wait * 1000000)}
    end
    for i = from, to do
        redis.call('LPUSH', KEYS[i], stamp)
        redis.call('LTRIM', KEYS[i], 0, tonumber(ARGV[base + 2 * i - 1]) - 1)
        redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[base + 2 * i]) * 1000)
    end
    from = to + 1
end
return {0, 0}
"""


class RedisWindows:
    """Moving windows in Redis (``resetflow.ratelimit.Windows``)."""

    def __init__(self, client: Redis, *, prefix: str) -> None:
        """``prefix``: put before every window key, with a ``:`` (``"resetflow:limits"``)."""
        self._client = client
        self._prefix = prefix
        # register_script: EVALSHA, and SCRIPT LOAD then EVALSHA again after NOSCRIPT
        # (a restarted or another server).
        self._take_in_turn = client.register_script(TAKE_IN_TURN)

    @classmethod
    def from_url(cls, url: str, *, prefix: str, **options: Any) -> RedisWindows:
        """``url``: ``redis://``, ``rediss://`` or ``unix://`` (``async+`` is dropped, as
        ``limits`` wrote it); ``options`` go to ``redis.asyncio.Redis.from_url``."""
        client = Redis.from_url(url.removeprefix("async+"), **options)
        return cls(client, prefix=prefix)

    @property
    def client(self) -> Redis:
        return self._client

    def key(self, window: str) -> str:
        """The Redis key of a window."""
        return f"{self._prefix}:{window}"

    async def take_all(self, hits: Sequence[tuple[str, int, int]]) -> tuple[int, float] | None:
        """One hit in every window, or in none, in one round trip.

        ``hits`` are ``(key, limit, expiry)``; the answer is ``None`` when every window
        took its hit, else ``(index in hits of the first refusing window, seconds until
        every refusing window allows again)``, nothing recorded.
        """
        if not hits:
            return None
        refused = await self.take_in_turn([hits])
        return None if refused is None else (refused[1], refused[2])

    async def take_in_turn(
        self, groups: Sequence[Sequence[tuple[str, int, int]]]
    ) -> tuple[int, int, float] | None:
        """:meth:`take_all` for each group in turn, stopping at the first group refused,
        in one round trip (``resetflow.ratelimit.Windows``)."""
        keys: list[str] = []
        args: list[int] = [len(groups), *(len(group) for group in groups)]
        for group in groups:
            for key, limit, expiry in group:
                keys.append(self.key(key))
                args += (limit, expiry)
        first, wait_us = await self._take_in_turn(keys=keys, args=args)
        if not first:
            return None
        index = int(first) - 1
        for number, group in enumerate(groups):
            if index < len(group):
                return number, index, int(wait_us) / 1_000_000
            index -= len(group)
        raise AssertionError("the script named a window outside the groups")

    async def aclose(self) -> None:
        await self._client.aclose()
