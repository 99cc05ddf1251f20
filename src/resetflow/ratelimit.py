"""Rate limits, on the ``limits`` package (in-process memory in the embedded default, Redis
when ``RESETFLOW_REDIS_URL`` is set, so that every process shares the counts).

Three families (R15, R16):

- per client address and action, on every POST (``RESETFLOW_LIMIT_IP``), and one global
  budget for all POSTs (``RESETFLOW_LIMIT_GLOBAL``): exceeding them is answered 429 with
  ``Retry-After`` and the generic body (R18);
- per destination (an email address or phone number, whether or not it has an account)
  and purpose: codes sent to it (``RESETFLOW_LIMIT_DESTINATION``; the first rule is the
  resend cooldown). Exceeding it is silent: the answer stays the generic one and nothing is
  sent, so the limit looks the same for known and unknown addresses (R17);
- SMS: per number prefix and an hourly budget for all SMS (SMS pumping), checked by the
  delivery worker, which falls back to a verified email when SMS is refused.

Several rules on one key ("1/minute;3/15 minutes") must all pass. Each rule is taken
with one atomic ``hit`` (a Lua script on Redis), so concurrent requests cannot both slip
under a limit; a request refused by a later rule has still used up the earlier ones,
which only errs on the strict side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from resetflow.crypto import sha256_hex
from resetflow.errors import RateLimited
from resetflow.limits_memory import LocalMovingWindowStorage
from resetflow.storage.redis import client_options


@dataclass(frozen=True, slots=True)
class LimitRules:
    """Rule strings in the ``limits`` notation, e.g. ``"3/15 minutes;10/day"``."""

    per_ip: str = "20/minute;300/hour"
    global_: str = "600/second"
    per_destination: str = "1/minute;3/15 minutes;10/day"
    per_sms_prefix: str = "20/hour"
    sms_budget: str = "500/hour"


def parse_rules(value: str) -> list[RateLimitItem]:
    """Parse ``limits`` notation; ``ValueError`` names what could not be read."""
    items = parse_many(value.replace(";", ",")) if value.strip() else []
    if not items and value.strip():
        raise ValueError(f"no rate limit in {value!r}")
    return list(items)


def make_storage(redis_url: str | None, *, prefix: str = "resetflow") -> Storage:
    if redis_url:
        uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
        options: dict[str, Any] = client_options()
        return RedisStorage(uri, implementation="redispy", key_prefix=f"{prefix}:limits", **options)
    # Not limits' MemoryStorage: its expiry pass costs O(keys) per hit (limits_memory.py).
    return LocalMovingWindowStorage()


class RateLimiter:
    def __init__(self, *, storage: Storage, rules: LimitRules, enabled: bool = True) -> None:
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._enabled = enabled
        self._per_ip = parse_rules(rules.per_ip)
        self._global = parse_rules(rules.global_)
        self._per_destination = parse_rules(rules.per_destination)
        self._per_sms_prefix = parse_rules(rules.per_sms_prefix)
        self._sms_budget = parse_rules(rules.sms_budget)

    async def check_request(self, *, action: str, ip: str) -> None:
        """Count one POST; :class:`RateLimited` (with the wait in seconds) when over."""
        wait = await self._take(self._per_ip, "ip", action, ip)
        if wait is None:
            wait = await self._take(self._global, "global")
        if wait is not None:
            raise RateLimited(retry_after=wait)

    async def allow_destination(self, destination: str, *, purpose: str = "verify") -> bool:
        """Count one ``purpose`` code sent to ``destination``; False (and nothing counted)
        when over. Purposes count apart, so that confirming a new contact does not eat
        into the reset codes a person may need a minute later."""
        # Hashed: the counters live in Redis, where contacts in clear do not belong (R44).
        key = ("destination", purpose, sha256_hex(destination)[:32])
        return await self._take(self._per_destination, *key) is None

    async def allow_sms(self, phone: str) -> str | None:
        """Count one SMS to ``phone``; the reason it may not be sent, or ``None``."""
        if await self._take(self._per_sms_prefix, "sms-prefix", phone[:7]) is not None:
            return "SMS velocity limit for this number prefix"
        if await self._take(self._sms_budget, "sms-budget") is not None:
            return "hourly SMS budget exhausted"
        return None

    async def _take(self, rules: list[RateLimitItem], *key: str) -> int | None:
        """Take one unit of every rule; the seconds until the refusing rule allows, or
        ``None`` if all allowed it."""
        if not self._enabled:
            return None
        for rule in rules:
            if not await self._limiter.hit(rule, *key):
                stats = await self._limiter.get_window_stats(rule, *key)
                return max(1, math.ceil(stats.reset_time - time.time()))
        return None
