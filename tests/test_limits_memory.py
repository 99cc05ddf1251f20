"""The in-process moving-window store: the same decisions as ``limits``' own memory
storage, and it forgets windows that have passed without any timer or full pass."""

from __future__ import annotations

import random

import pytest
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from resetflow.limits_memory import LocalMovingWindowStorage

pytestmark = pytest.mark.anyio


class FakeTime:
    def __init__(self) -> None:
        self.value = 1_800_000_000.0

    def __call__(self) -> float:
        return self.value


async def test_same_decisions_as_limits_memory_storage() -> None:
    """A seeded mix of keys and rules, all within one window: every hit gets the same
    answer from both stores, and so does every window's count."""
    ours = MovingWindowRateLimiter(LocalMovingWindowStorage())
    theirs = MovingWindowRateLimiter(MemoryStorage())
    rules = [parse("3/minute"), parse("5/hour"), parse("1/day")]
    rng = random.Random(7)
    refused = 0
    for _ in range(600):
        rule = rng.choice(rules)
        key = f"k{rng.randrange(40)}"
        cost = rng.choice([1, 1, 1, 2])
        mine = await ours.hit(rule, key, cost=cost)
        assert mine == await theirs.hit(rule, key, cost=cost)
        refused += not mine
        assert (await ours.get_window_stats(rule, key)).remaining == (
            await theirs.get_window_stats(rule, key)
        ).remaining
    assert 100 < refused < 600  # the mix exercised both answers


async def test_a_window_opens_again_once_its_hits_are_older_than_the_rule() -> None:
    clock = FakeTime()
    limiter = MovingWindowRateLimiter(LocalMovingWindowStorage(now=clock))
    rule = parse("2/minute")
    assert await limiter.hit(rule, "ada")
    clock.value += 30
    assert await limiter.hit(rule, "ada")
    assert not await limiter.hit(rule, "ada")
    stats = await limiter.get_window_stats(rule, "ada")
    assert stats.remaining == 0
    assert stats.reset_time == pytest.approx(clock.value - 30 + 60)  # when the first leaves
    clock.value += 31  # the first hit has left the window, the second has not
    assert await limiter.hit(rule, "ada")
    assert not await limiter.hit(rule, "ada")


async def test_passed_windows_are_forgotten_as_other_keys_are_hit() -> None:
    """Memory follows the keys hit within their window, not every key ever seen."""
    clock = FakeTime()
    storage = LocalMovingWindowStorage(now=clock)
    limiter = MovingWindowRateLimiter(storage)
    rule = parse("1/minute")
    for i in range(1_000):
        assert await limiter.hit(rule, f"old-{i}")
    assert len(storage) == 1_000
    clock.value += 61
    for i in range(1_000):
        assert await limiter.hit(rule, f"new-{i}")
    assert len(storage) <= 1_000 + 2  # the old ones went as the new ones came
    assert not await limiter.hit(rule, "new-5")  # live windows are kept


async def test_a_key_hit_again_moves_to_the_back_of_the_expiry_queue() -> None:
    clock = FakeTime()
    storage = LocalMovingWindowStorage(now=clock)
    limiter = MovingWindowRateLimiter(storage)
    rule = parse("100/minute")
    await limiter.hit(rule, "busy")
    await limiter.hit(rule, "quiet")
    clock.value += 50
    await limiter.hit(rule, "busy")  # busy is now the most recent
    clock.value += 20  # quiet has passed; busy's second hit has not
    await limiter.hit(rule, "other")
    assert (await limiter.get_window_stats(rule, "busy")).remaining == 99
    assert (await limiter.get_window_stats(rule, "quiet")).remaining == 100


async def test_counters_expire_and_clear() -> None:
    clock = FakeTime()
    storage = LocalMovingWindowStorage(now=clock)
    assert await storage.incr("c", 10) == 1
    assert await storage.incr("c", 10, amount=2) == 3
    assert await storage.get("c") == 3
    assert await storage.get_expiry("c") == clock.value + 10
    clock.value += 11
    assert await storage.get("c") == 0
    assert await storage.incr("c", 10) == 1
    await storage.clear("c")
    assert await storage.get("c") == 0
    assert await storage.check()
    await storage.incr("d", 10)
    assert await storage.reset() == 1
    assert len(storage) == 0
