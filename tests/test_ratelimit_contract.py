"""The rate limiter behaves the same on in-process memory and on Redis (shared by every
process in production): moving windows, every rule of a call taken all or nothing, and
no more hits than a rule allows however many requests race."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from resetflow.errors import RateLimited
from resetflow.limits_memory import LocalMovingWindowStorage
from resetflow.ratelimit import LimitRules, RateLimiter, Windows, make_storage

pytestmark = pytest.mark.anyio

RULES = LimitRules(
    per_ip="3/minute",
    global_="5/minute",
    per_destination="2/minute;3/hour",
    per_sms_prefix="2/hour",
    sms_budget="3/hour",
)


class FakeTime:
    def __init__(self) -> None:
        self.value = 1_800_000_000.0

    def __call__(self) -> float:
        return self.value


@dataclasses.dataclass
class Backend:
    """A store of windows, and a way to let time pass in it: the memory store's clock moves
    on; on Redis (whose server clock the script reads) every stored hit is moved back in
    time instead, and the keys' time to live shortened, which is what waiting would do."""

    windows: Windows
    advance: Callable[[float], Awaitable[None]]

    def limiter(self, **rules: str) -> RateLimiter:
        return RateLimiter(storage=self.windows, rules=dataclasses.replace(RULES, **rules))


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else str(request.getfixturevalue("redis_server"))


@pytest.fixture
async def backend(storage_url: str | None) -> AsyncIterator[Backend]:
    if storage_url is None:
        clock = FakeTime()

        async def move_clock(seconds: float) -> None:
            clock.value += seconds

        yield Backend(LocalMovingWindowStorage(now=clock), move_clock)
        return
    prefix = f"resetflow-test-{secrets.token_hex(6)}"
    windows = make_storage(storage_url, prefix=prefix)
    admin = Redis.from_url(storage_url, decode_responses=True)

    async def backdate(seconds: float) -> None:
        async for key in admin.scan_iter(f"{prefix}:*"):
            entries = await admin.lrange(key, 0, -1)
            ttl_ms = await admin.pttl(key)
            async with admin.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if ttl_ms - seconds * 1000 > 0:
                    pipe.rpush(key, *[f"{float(e) - seconds:.6f}" for e in entries])
                    pipe.pexpire(key, int(ttl_ms - seconds * 1000))
                await pipe.execute()

    try:
        yield Backend(windows, backdate)
    finally:
        keys = [key async for key in admin.scan_iter(f"{prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()
        await windows.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def limiter(backend: Backend) -> RateLimiter:
    return backend.limiter()


async def test_per_client_limit_then_429_with_a_wait(limiter: RateLimiter) -> None:
    for _ in range(3):
        await limiter.check_request(action="/send-token", ip="192.0.2.1")
    with pytest.raises(RateLimited) as refused:
        await limiter.check_request(action="/send-token", ip="192.0.2.1")
    assert 1 <= refused.value.retry_after <= 60
    # Another action and another client have their own counts.
    await limiter.check_request(action="/login", ip="192.0.2.1")


async def test_global_limit_counts_every_client(limiter: RateLimiter) -> None:
    for i in range(5):
        await limiter.check_request(action="/send-token", ip=f"192.0.2.{i}")
    with pytest.raises(RateLimited):
        await limiter.check_request(action="/send-token", ip="192.0.2.99")


async def test_destination_rules_all_apply_and_purposes_count_apart(limiter: RateLimiter) -> None:
    allowed = [
        await limiter.allow_destination("ada@example.com", purpose="reset") for _ in range(3)
    ]
    assert allowed == [True, True, False]
    assert await limiter.allow_destination("ada@example.com", purpose="verify")
    assert await limiter.allow_destination("bob@example.com", purpose="reset")


async def test_sms_prefix_velocity_and_budget(limiter: RateLimiter) -> None:
    assert await limiter.allow_sms("+14155550100") is None
    assert await limiter.allow_sms("+14155550199") is None
    assert await limiter.allow_sms("+14155550142") == "SMS velocity limit for this number prefix"
    assert await limiter.allow_sms("+442079460958") is None
    assert await limiter.allow_sms("+33142685300") == "hourly SMS budget exhausted"


async def test_disabled_limiter_allows_everything(storage_url: str | None) -> None:
    limiter = RateLimiter(storage=make_storage(storage_url, prefix="x"), rules=RULES, enabled=False)
    for _ in range(10):
        await limiter.check_request(action="/send-token", ip="192.0.2.1")
        assert await limiter.allow_destination("ada@example.com", purpose="reset")


# The client's limits and the destination's in one step ------------------------------------


async def test_one_step_counts_the_client_then_the_destination_like_two_calls(
    backend: Backend,
) -> None:
    """check_request_and_destination: the answers and counts of check_request followed by
    allow_destination (a refused client counts nothing, not even the destination)."""
    limiter = backend.limiter(per_ip="3/minute", per_destination="2/minute")

    async def step(ip: str = "192.0.2.1", to: str = "ada@example.com") -> bool:
        return await limiter.check_request_and_destination(
            action="/send-token", ip=ip, destination=to, purpose="reset"
        )

    assert [await step(), await step()] == [True, True]
    assert await step() is False  # the destination refuses; the client's 3rd POST counted
    with pytest.raises(RateLimited) as refused:
        await step(to="bob@example.com")  # the client's 4th: refused
    assert 1 <= refused.value.retry_after <= 60
    # bob's window was left alone by the refused step; ada's holds 2.
    assert await limiter.allow_destination("bob@example.com", purpose="reset")
    assert not await limiter.allow_destination("ada@example.com", purpose="reset")
    # The refused step did not count against the client either: still exactly 3.
    await backend.advance(61)
    for _ in range(3):
        await limiter.check_request(action="/send-token", ip="192.0.2.1")
    with pytest.raises(RateLimited):
        await limiter.check_request(action="/send-token", ip="192.0.2.1")


async def test_one_step_refused_by_the_global_rule_counts_nothing(backend: Backend) -> None:
    limiter = backend.limiter(per_ip="10/minute", global_="1/minute", per_destination="5/minute")
    assert await limiter.check_request_and_destination(
        action="/send-token", ip="192.0.2.1", destination="ada@example.com", purpose="reset"
    )
    with pytest.raises(RateLimited):
        await limiter.check_request_and_destination(
            action="/send-token", ip="192.0.2.2", destination="bob@example.com", purpose="reset"
        )
    allowed = [
        await limiter.allow_destination("bob@example.com", purpose="reset") for _ in range(6)
    ]
    assert allowed.count(True) == 5  # none used by the refused step


async def test_one_step_on_a_disabled_limiter_allows_everything(storage_url: str | None) -> None:
    limiter = RateLimiter(storage=make_storage(storage_url, prefix="x"), rules=RULES, enabled=False)
    for _ in range(10):
        assert await limiter.check_request_and_destination(
            action="/send-token", ip="192.0.2.1", destination="ada@example.com", purpose="reset"
        )


# All or nothing ----------------------------------------------------------------------------


async def test_a_request_refused_by_a_later_rule_uses_up_none_of_the_earlier(
    backend: Backend,
) -> None:
    strict = backend.limiter(per_ip="5/minute;2/hour", per_destination="5/minute;2/hour")
    for _ in range(2):
        await strict.check_request(action="/send-token", ip="192.0.2.1")
        assert await strict.allow_destination("ada@example.com", purpose="reset")
    for _ in range(3):
        with pytest.raises(RateLimited):
            await strict.check_request(action="/send-token", ip="192.0.2.1")
        assert not await strict.allow_destination("ada@example.com", purpose="reset")
    # The minute rules (the same windows, seen alone) hold 2 hits, not 5.
    minute_only = backend.limiter(per_ip="5/minute", per_destination="5/minute")
    for _ in range(3):
        await minute_only.check_request(action="/send-token", ip="192.0.2.1")
        assert await minute_only.allow_destination("ada@example.com", purpose="reset")
    with pytest.raises(RateLimited):
        await minute_only.check_request(action="/send-token", ip="192.0.2.1")
    assert not await minute_only.allow_destination("ada@example.com", purpose="reset")


async def test_a_request_refused_by_the_global_rule_uses_up_none_of_the_clients(
    backend: Backend,
) -> None:
    limiter = backend.limiter(per_ip="3/hour", global_="2/minute")
    await limiter.check_request(action="/send-token", ip="192.0.2.1")
    await limiter.check_request(action="/send-token", ip="192.0.2.2")
    for _ in range(5):
        with pytest.raises(RateLimited):
            await limiter.check_request(action="/send-token", ip="192.0.2.3")
    await backend.advance(61)  # the global window is open again, the hourly one is not
    await limiter.check_request(action="/send-token", ip="192.0.2.3")
    await limiter.check_request(action="/send-token", ip="192.0.2.3")
    await backend.advance(61)
    await limiter.check_request(action="/send-token", ip="192.0.2.3")  # its 3rd in the hour
    with pytest.raises(RateLimited) as refused:
        await limiter.check_request(action="/send-token", ip="192.0.2.3")
    assert 3_400 < refused.value.retry_after <= 3_600 - 61


async def test_an_sms_refused_by_the_budget_uses_up_none_of_its_prefix(backend: Backend) -> None:
    limiter = backend.limiter(per_sms_prefix="2/hour", sms_budget="3/minute")
    for phone in ["+14155550100", "+442079460958", "+33142685300"]:
        assert await limiter.allow_sms(phone) is None
    for _ in range(4):
        assert await limiter.allow_sms("+4930901820") == "hourly SMS budget exhausted"
    await backend.advance(61)
    assert await limiter.allow_sms("+4930901820") is None
    assert await limiter.allow_sms("+4930901821") is None
    assert await limiter.allow_sms("+4930901822") == "SMS velocity limit for this number prefix"


async def test_when_both_sms_rules_refuse_the_prefix_is_the_reason(backend: Backend) -> None:
    limiter = backend.limiter(per_sms_prefix="1/hour", sms_budget="1/hour")
    assert await limiter.allow_sms("+14155550100") is None
    assert await limiter.allow_sms("+14155550101") == "SMS velocity limit for this number prefix"
    assert await limiter.allow_sms("+442079460958") == "hourly SMS budget exhausted"


# The wait --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_ip", "global_", "low", "high"),
    [
        ("5/minute;2/hour", "100/minute", 3_590, 3_600),  # the hourly rule refuses
        ("2/minute;5/hour", "100/minute", 50, 60),  # the minute rule refuses
        ("10/minute", "2/hour", 3_590, 3_600),  # the global rule refuses
    ],
)
async def test_the_wait_is_the_refusing_rules(
    backend: Backend, per_ip: str, global_: str, low: int, high: int
) -> None:
    limiter = backend.limiter(per_ip=per_ip, global_=global_)
    for _ in range(2):
        await limiter.check_request(action="/send-token", ip="192.0.2.1")
    with pytest.raises(RateLimited) as refused:
        await limiter.check_request(action="/send-token", ip="192.0.2.1")
    assert low <= refused.value.retry_after <= high


async def test_the_wait_counts_down_to_when_the_oldest_hit_leaves(backend: Backend) -> None:
    limiter = backend.limiter(per_ip="2/minute")
    await limiter.check_request(action="/send-token", ip="192.0.2.1")
    await backend.advance(20)
    await limiter.check_request(action="/send-token", ip="192.0.2.1")
    await backend.advance(5)
    with pytest.raises(RateLimited) as refused:
        await limiter.check_request(action="/send-token", ip="192.0.2.1")
    assert refused.value.retry_after in (35, 36)  # 60 - 25, rounded up


# Time ------------------------------------------------------------------------------------


async def test_windows_move_and_open_again_as_time_passes(backend: Backend) -> None:
    limiter = backend.limiter(per_destination="2/minute;3/hour")
    assert await limiter.allow_destination("ada@example.com", purpose="reset")
    await backend.advance(30)
    assert await limiter.allow_destination("ada@example.com", purpose="reset")
    assert not await limiter.allow_destination("ada@example.com", purpose="reset")
    await backend.advance(31)  # the first hit has left the minute, the second has not
    assert await limiter.allow_destination("ada@example.com", purpose="reset")
    await backend.advance(61)  # the minute is empty; the hour holds 3
    assert not await limiter.allow_destination("ada@example.com", purpose="reset")
    await backend.advance(3_600)
    assert await limiter.allow_destination("ada@example.com", purpose="reset")


# Races -----------------------------------------------------------------------------------


async def _gather(count: int, take: Callable[[], Awaitable[Any]]) -> list[Any]:
    return await asyncio.gather(*[take() for _ in range(count)], return_exceptions=True)


async def test_concurrent_takes_on_one_key_never_exceed_the_limit(backend: Backend) -> None:
    limiter = backend.limiter(per_destination="10/minute")
    allowed = await _gather(50, lambda: limiter.allow_destination("ada@example.com"))
    assert allowed.count(True) == 10 and allowed.count(False) == 40


async def test_concurrent_requests_never_exceed_any_rule(backend: Backend) -> None:
    limiter = backend.limiter(per_ip="10/minute;12/hour", global_="1000/minute")
    outcomes = await _gather(50, lambda: limiter.check_request(action="/login", ip="192.0.2.1"))
    assert outcomes.count(None) == 10
    assert all(isinstance(o, RateLimited) for o in outcomes if o is not None)
    # Every refused one left the hourly rule alone: 2 more fit once the minute has passed.
    await backend.advance(61)
    outcomes = await _gather(50, lambda: limiter.check_request(action="/login", ip="192.0.2.1"))
    assert outcomes.count(None) == 2


async def test_concurrent_sms_never_exceed_the_budget(backend: Backend) -> None:
    limiter = backend.limiter(per_sms_prefix="5/hour", sms_budget="7/hour")
    phones = [f"+1415555{i:04d}" if i % 2 else f"+4420794{i:04d}" for i in range(40)]
    reasons = await asyncio.gather(*[limiter.allow_sms(phone) for phone in phones])
    assert reasons.count(None) == 7
