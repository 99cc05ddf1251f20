"""Moving windows on Redis (limits_redis.py): one round trip per take, the state ``limits``'
moving window keeps (so both versions count together during an upgrade), in the server's
time, expiring by itself, without a contact in clear, and Redis errors left to the web
layer (503)."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from resetflow.crypto import sha256_hex
from resetflow.limits_redis import RedisWindows
from resetflow.ratelimit import LimitRules, RateLimiter, make_storage, parse_rules
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio

RULES = LimitRules()  # the production defaults: 2 + 1 rules per request, 3 per destination


@pytest.fixture
def prefix() -> str:
    return f"resetflow-test-{secrets.token_hex(6)}"


@pytest.fixture
async def admin(redis_server: str, prefix: str) -> AsyncIterator[Redis]:
    """A client of the test's own; deletes the test's keys (and only them) at the end."""
    client = Redis.from_url(redis_server, decode_responses=True)
    yield client
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def windows(redis_server: str, prefix: str) -> AsyncIterator[RedisWindows]:
    storage = make_storage(redis_server, prefix=prefix)
    assert isinstance(storage, RedisWindows)
    yield storage
    await storage.aclose()


async def _server_time(admin: Redis) -> float:
    seconds, micros = await admin.time()
    return float(seconds) + micros / 1_000_000


async def _request(limiter: RateLimiter, n: int) -> None:
    """One /send-token's takes: the client's and global rules, then the destination's."""
    await limiter.check_request(action="/send-token", ip=f"192.0.2.{n % 200}")
    await limiter.allow_destination(f"user{n}@example.com", purpose="reset")


class CommandLog:
    """Every write to any Redis connection of this process: the names of the commands in
    it (one per write unless pipelined), so each write is one round trip."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes: list[list[str]] = []
        original = AbstractConnection.send_packed_command

        async def send(self_: AbstractConnection, command: Any, check_health: bool = True) -> None:
            self.writes.append(_names(command))
            await original(self_, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", send)

    def clear(self) -> None:
        self.writes.clear()


def _names(command: bytes | str | Iterable[bytes]) -> list[str]:
    data = command.encode() if isinstance(command, str) else command
    data = data if isinstance(data, bytes) else b"".join(data)
    return [m.decode().upper() for m in re.findall(rb"\*\d+\r\n\$\d+\r\n([^\r]+)\r\n", data)]


async def test_one_round_trip_per_take(
    windows: RedisWindows, admin: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = RateLimiter(storage=windows, rules=RULES)
    await _request(limiter, 0)  # connect and load the script first
    log = CommandLog(monkeypatch)
    for n in range(1, 21):
        await _request(limiter, n)
        assert await limiter.allow_sms(f"+1415555{n:04d}") is None
    assert log.writes == [["EVALSHA"]] * 60
    # A refused take costs the same single round trip.
    log.clear()
    assert not await limiter.allow_destination("user1@example.com", purpose="reset")
    assert log.writes == [["EVALSHA"]]


async def test_an_unknown_script_is_loaded_again(
    windows: RedisWindows, admin: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a Redis restart (scripts forgotten): NOSCRIPT, SCRIPT LOAD, EVALSHA; then one
    round trip again. Simulated with a wrong digest, leaving the server's cache alone."""
    limiter = RateLimiter(storage=windows, rules=RULES)
    await _request(limiter, 0)
    windows._take_in_turn.sha = "0" * 40
    log = CommandLog(monkeypatch)
    assert await limiter.allow_destination("ada@example.com") is True
    assert log.writes == [["EVALSHA"], ["SCRIPT"], ["EVALSHA"]]
    log.clear()
    assert await limiter.allow_destination("bob@example.com") is True
    assert log.writes == [["EVALSHA"]]


async def test_windows_are_limits_lists_of_server_times_that_expire(
    windows: RedisWindows, admin: Redis, prefix: str
) -> None:
    limiter = RateLimiter(storage=windows, rules=RULES)
    before = await _server_time(admin)
    await limiter.check_request(action="/send-token", ip="192.0.2.1")
    await limiter.allow_destination("ada@example.com", purpose="reset")
    after = await _server_time(admin)
    digest = sha256_hex("ada@example.com")[:32]
    expected = {
        f"{prefix}:limits:{rule.key_for(*identifiers)}": rule.get_expiry()
        for rules, identifiers in [
            (RULES.per_ip, ("ip", "/send-token", "192.0.2.1")),
            (RULES.global_, ("global",)),
            (RULES.per_destination, ("destination", "reset", digest)),
        ]
        for rule in parse_rules(rules)
    }
    assert len(expected) == 6
    assert {key async for key in admin.scan_iter(f"{prefix}:*")} == set(expected)
    for key, expiry in expected.items():
        assert await admin.type(key) == "list"
        [entry] = await admin.lrange(key, 0, -1)
        assert before <= float(entry) <= after
        assert expiry * 1000 - 5_000 < await admin.pttl(key) <= expiry * 1000
    # A refused take records nothing and leaves the expiry alone.
    destination_keys = [k for k in expected if "/destination/" in k]
    ttls = [await admin.pttl(k) for k in destination_keys]
    assert not await limiter.allow_destination("ada@example.com", purpose="reset")
    for key, ttl in zip(destination_keys, ttls, strict=True):
        assert await admin.llen(key) == 1
        assert await admin.pttl(key) <= ttl


async def test_a_window_is_trimmed_to_its_limit(windows: RedisWindows, admin: Redis) -> None:
    for _ in range(5):
        await windows.take_all([("busy", 3, 60)])
    assert await admin.llen(windows.key("busy")) == 3


async def test_an_idle_window_vanishes(windows: RedisWindows, admin: Redis) -> None:
    """The real thing, on a one-second rule: the key is gone once its second has passed."""
    assert await windows.take_all([("brief", 2, 1)]) is None
    assert await admin.exists(windows.key("brief"))
    deadline = time.monotonic() + 5
    while await admin.exists(windows.key("brief")) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not await admin.exists(windows.key("brief"))


async def test_time_is_the_servers_not_the_clients(
    windows: RedisWindows, admin: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose clock is an hour fast counts in the same windows as the others."""
    limiter = RateLimiter(storage=windows, rules=RULES)
    assert await limiter.allow_destination("ada@example.com", purpose="reset")
    skewed = time.time() + 3_600
    monkeypatch.setattr(time, "time", lambda: skewed)
    # The hour-fast process does not see the hit as an hour old: still refused.
    assert not await limiter.allow_destination("ada@example.com", purpose="reset")
    server_now = await _server_time(admin)
    key = windows.key(
        parse("1/minute").key_for("destination", "reset", sha256_hex("ada@example.com")[:32])
    )
    [entry] = await admin.lrange(key, 0, -1)
    assert server_now - 5 < float(entry) <= server_now


async def test_no_contact_in_clear_in_redis(
    windows: RedisWindows, admin: Redis, prefix: str
) -> None:
    limiter = RateLimiter(storage=windows, rules=RULES)
    await limiter.check_request(action="/send-token", ip="192.0.2.1")
    for purpose in ("reset", "verify"):
        await limiter.allow_destination("ada.lovelace@example.com", purpose=purpose)
        await limiter.allow_destination("+14155550100", purpose=purpose)
    assert await limiter.allow_sms("+14155550100") is None
    stored = []
    async for key in admin.scan_iter(f"{prefix}:*"):
        stored += [key, *await admin.lrange(key, 0, -1)]
    assert len(stored) > 10
    for text in stored:
        for secret in ("ada", "lovelace", "example.com", "@", "4155550100"):
            assert secret not in text, text


async def test_counts_together_with_limits_own_redis_storage(
    windows: RedisWindows, redis_server: str, prefix: str, admin: Redis
) -> None:
    """Processes still on ``limits``' per-rule scripts (a rolling upgrade) and these count
    in the same windows."""
    theirs = MovingWindowRateLimiter(
        RedisStorage(
            f"async+{redis_server}", implementation="redispy", key_prefix=f"{prefix}:limits"
        )
    )
    ours = RateLimiter(storage=windows, rules=LimitRules(per_destination="3/minute"))
    rule = parse("3/minute")
    identifiers = ("destination", "reset", sha256_hex("ada@example.com")[:32])
    assert await theirs.hit(rule, *identifiers)
    assert await ours.allow_destination("ada@example.com", purpose="reset")
    assert await theirs.hit(rule, *identifiers)
    assert not await ours.allow_destination("ada@example.com", purpose="reset")
    assert not await theirs.hit(rule, *identifiers)
    assert (await theirs.get_window_stats(rule, *identifiers)).remaining == 0


async def test_redis_errors_reach_the_caller() -> None:
    """Not swallowed, not wrapped: the web layer answers RedisError with 503."""
    windows = make_storage(f"redis://127.0.0.1:{free_port()}/0", prefix="nowhere")
    limiter = RateLimiter(storage=windows, rules=RULES)
    try:
        with pytest.raises(RedisConnectionError):
            await limiter.check_request(action="/send-token", ip="192.0.2.1")
        with pytest.raises(RedisConnectionError):
            await limiter.allow_destination("ada@example.com")
    finally:
        assert isinstance(windows, RedisWindows)
        await windows.aclose()


async def test_closing_the_limiter_closes_its_redis_connections(
    redis_server: str, admin: Redis, prefix: str
) -> None:
    """``RateLimiter.close`` (what ``Services.close`` calls at shutdown) lets go of the
    windows' Redis connections, not only the sign-in counts'."""
    name = f"rf-close-{secrets.token_hex(4)}"
    windows = RedisWindows(Redis.from_url(redis_server, client_name=name), prefix=prefix)
    limiter = RateLimiter(storage=windows, rules=RULES)

    async def connections() -> int:
        return sum(1 for client in await admin.client_list() if client["name"] == name)

    await _request(limiter, 1)
    assert await connections() == 1
    await limiter.close()
    assert await connections() == 0
