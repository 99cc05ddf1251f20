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

Every rule a call checks (per-IP and global; the destination's three; an SMS prefix and
the budget) is taken in one atomic step, all or nothing (:class:`Windows`): concurrent
requests cannot both slip under a limit, a refused request uses up none of the rules,
and on Redis the whole step is one round trip (limits_redis.py). Each rule is a moving
window as in ``limits``: at most ``amount`` hits in any ``get_expiry()`` seconds.
``limits`` still parses the rules and names the windows (``key_for``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, parse_many

from resetflow.client import limit_subject
from resetflow.crypto import sha256_hex
from resetflow.errors import RateLimited
from resetflow.limits_memory import LocalMovingWindowStorage
from resetflow.limits_redis import RedisWindows
from resetflow.signin_failures import MemoryFailureCounts, SignInFailures
from resetflow.storage.redis import client_options

Hit = tuple[str, int, int]
"""One rule on one key: ``(window key, limit, expiry)``, at most ``limit`` hits in any
``expiry`` seconds."""


class Windows(Protocol):
    """Where the moving windows live: :class:`LocalMovingWindowStorage` (this process's
    memory) or :class:`RedisWindows` (shared by every process)."""

    async def take_all(self, hits: Sequence[Hit]) -> tuple[int, float] | None:
        """Take one hit in every window of ``hits`` in one atomic step, or in none.

        A window ``(key, limit, expiry)`` allows a hit when fewer than ``limit`` of its
        recorded hits are at most ``expiry`` seconds old (``limits``' moving window).
        When all allow, one hit at now is recorded in each, and the answer is ``None``.
        Otherwise nothing at all is recorded, and the answer is ``(i, wait)``: ``i`` the
        index in ``hits`` of the first refusing window, ``wait`` the seconds until every
        refusing window allows a hit again (the longest of their waits; 0 at the edge).
        No other take can interleave with this one. The storage's errors propagate
        unchanged (``redis.exceptions.RedisError`` on Redis).
        """
        ...

    async def take_in_turn(self, groups: Sequence[Sequence[Hit]]) -> tuple[int, int, float] | None:
        """:meth:`take_all` for each group in turn, each all or nothing, stopping at the
        first group refused (the groups before it keep their hits): ``None`` when every
        group took its hits, else ``(group, i, wait)`` as ``take_all`` says it for that
        group. On Redis, one round trip for all of them."""
        ...

    async def aclose(self) -> None:
        """Let go of what the storage holds (its Redis connections); nothing in memory."""
        ...


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


def make_storage(redis_url: str | None, *, prefix: str = "resetflow") -> Windows:
    """Windows on Redis under ``{prefix}:limits:`` when ``redis_url`` is set (the key names
    ``limits``' Redis storage used), else in this process's memory."""
    if redis_url:
        return RedisWindows.from_url(redis_url, prefix=f"{prefix}:limits", **client_options())
    # Not limits' MemoryStorage: its expiry pass costs O(keys) per hit (limits_memory.py).
    return LocalMovingWindowStorage()


def destination_key(destination: str) -> str:
    """The name a contact's destination limit is counted under. Hashed: the counters live
    in Redis, where contacts in clear do not belong (R44)."""
    return sha256_hex(destination)[:32]


class RateLimiter:
    def __init__(
        self,
        *,
        storage: Windows,
        rules: LimitRules,
        enabled: bool = True,
        signin_failures: SignInFailures | None = None,
    ) -> None:
        self._storage = storage
        # Failed sign-ins per account (R57); kept whether or not the limits are enabled.
        self.signin = signin_failures or SignInFailures(MemoryFailureCounts())
        self._enabled = enabled
        self._per_ip = parse_rules(rules.per_ip)
        self._global = parse_rules(rules.global_)
        self._per_destination = parse_rules(rules.per_destination)
        self._per_sms_prefix = parse_rules(rules.per_sms_prefix)
        self._sms_budget = parse_rules(rules.sms_budget)

    async def close(self) -> None:
        """Close the windows' storage and the sign-in failure counts (at shutdown)."""
        await self._storage.aclose()
        await self.signin.close()

    async def check_request(self, *, action: str, ip: str) -> None:
        """Count one POST against the client's and the global rules;
        :class:`RateLimited` (with the wait in seconds, nothing counted) when over. An IPv6
        client counts by its /64, which one subscriber typically holds whole (R57)."""
        subject = limit_subject(ip)
        refused = await self._take(
            (self._per_ip, ("ip", action, subject)), (self._global, ("global",))
        )
        if refused is not None:
            raise RateLimited(retry_after=refused[1])

    async def check_request_and_destination(
        self, *, action: str, ip: str, destination: str, purpose: str
    ) -> bool:
        """:meth:`check_request`, then :meth:`allow_destination`, in one step (one round
        trip on Redis) with the same outcome as the two calls: :class:`RateLimited` and
        nothing counted when the client's or the global rules refuse; else the POST is
        counted, and the answer is whether the destination's rules took the code."""
        if not self._enabled:
            return True
        client = self._hits(self._per_ip, ("ip", action, limit_subject(ip)))
        client += self._hits(self._global, ("global",))
        code = self._hits(
            self._per_destination, ("destination", purpose, destination_key(destination))
        )
        refused = await self._storage.take_in_turn([client, code])
        if refused is None:
            return True
        group, _, wait = refused
        if group == 0:
            raise RateLimited(retry_after=max(1, math.ceil(wait)))
        return False

    @staticmethod
    def _hits(rules: list[RateLimitItem], identifiers: tuple[str, ...]) -> list[Hit]:
        return [(rule.key_for(*identifiers), rule.amount, rule.get_expiry()) for rule in rules]

    async def allow_destination(self, destination: str, *, purpose: str = "verify") -> bool:
        """Count one ``purpose`` code sent to ``destination``; False (and nothing counted)
        when over. Purposes count apart, so that confirming a new contact does not eat
        into the reset codes a person may need a minute later."""
        return await self.allow_destination_key(destination_key(destination), purpose=purpose)

    async def allow_destination_key(self, key: str, *, purpose: str = "verify") -> bool:
        """:meth:`allow_destination` for a contact known only by its
        :func:`destination_key` (kept in a session where the contact itself is not)."""
        return await self._take((self._per_destination, ("destination", purpose, key))) is None

    async def allow_sms(self, phone: str) -> str | None:
        """Count one SMS to ``phone``; the reason it may not be sent (nothing counted), or
        ``None``. The prefix's reason wins when both refuse."""
        refused = await self._take(
            (self._per_sms_prefix, ("sms-prefix", phone[:7])), (self._sms_budget, ("sms-budget",))
        )
        if refused is None:
            return None
        if refused[0] == 0:
            return "SMS velocity limit for this number prefix"
        return "hourly SMS budget exhausted"

    async def _take(
        self, *groups: tuple[list[RateLimitItem], tuple[str, ...]]
    ) -> tuple[int, int] | None:
        """Take one hit of every rule of every ``(rules, identifiers)`` group, all or
        nothing; ``None`` if all allowed it, else (the index of the group of the first
        refusing rule, whole seconds until every refusing rule allows again, at least 1)."""
        if not self._enabled:
            return None
        hits: list[Hit] = []
        owners: list[int] = []
        for group, (rules, identifiers) in enumerate(groups):
            for rule in rules:
                hits.append((rule.key_for(*identifiers), rule.amount, rule.get_expiry()))
                owners.append(group)
        if not hits:
            return None
        refused = await self._storage.take_all(hits)
        if refused is None:
            return None
        index, wait = refused
        return owners[index], max(1, math.ceil(wait))
