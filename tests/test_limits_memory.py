"""The in-process moving-window store: the same decisions as ``limits``' own memory
storage, and it forgets windows that have passed without any timer or full pass."""

from __future__ import annotations

import random
import time

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


async def test_an_idle_window_hit_again_still_counts() -> None:
    """Regression: the expiry sweep used to run after the window was fetched, so the hit
    that found its own window passed could land in a deque already dropped from the
    store, and a 1/minute rule then allowed a second hit a second later."""
    clock = FakeTime()
    limiter = MovingWindowRateLimiter(LocalMovingWindowStorage(now=clock))
    rule = parse("1/minute")
    assert await limiter.hit(rule, "ada")
    clock.value += 61
    assert await limiter.hit(rule, "ada")
    clock.value += 1
    assert not await limiter.hit(rule, "ada")
    storage = LocalMovingWindowStorage(now=clock)
    assert await storage.take_all([("ada", 1, 60)]) is None
    clock.value += 61
    assert await storage.take_all([("ada", 1, 60)]) is None
    clock.value += 1
    assert await storage.take_all([("ada", 1, 60)]) == (0, 59.0)


# take_all: every window of a request, all or nothing ----------------------------------


async def test_take_all_records_in_every_window_or_in_none() -> None:
    clock = FakeTime()
    storage = LocalMovingWindowStorage(now=clock)
    minute, hour = ("k/minute", 5, 60), ("k/hour", 2, 3_600)
    assert await storage.take_all([minute, hour]) is None
    assert await storage.take_all([minute, hour]) is None
    for _ in range(3):
        assert await storage.take_all([minute, hour]) == (1, 3_600.0)
    assert await storage.get_moving_window("k/minute", 5, 60) == (clock.value, 2)
    assert await storage.get_moving_window("k/hour", 2, 3_600) == (clock.value, 2)


async def test_take_all_names_the_first_refusing_window_and_the_longest_wait() -> None:
    clock = FakeTime()
    storage = LocalMovingWindowStorage(now=clock)
    assert await storage.take_all([("a", 1, 60), ("b", 1, 600), ("c", 5, 60)]) is None
    clock.value += 10
    assert await storage.take_all([("c", 5, 60), ("b", 1, 600), ("a", 1, 60)]) == (1, 590.0)
    assert await storage.take_all([("a", 1, 60), ("c", 5, 60)]) == (0, 50.0)
    assert await storage.take_all([("zero", 0, 60)]) == (0, 60.0)  # "0/minute" never allows
    assert await storage.take_all([]) is None


async def test_take_all_of_one_window_decides_as_limits_memory_storage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The moving window itself is unchanged: a seeded mix of single-rule takes, with time
    moving on (both stores on the same fake clock), gets limits' own answers."""
    clock = FakeTime()
    monkeypatch.setattr(time, "time", clock)  # limits' MemoryStorage reads time.time()
    ours = LocalMovingWindowStorage(now=clock)
    theirs = MovingWindowRateLimiter(MemoryStorage())
    rules = [parse("3/minute"), parse("5/hour"), parse("2/second")]
    rng = random.Random(11)
    refused = 0
    for _ in range(600):
        clock.value += rng.choice([0, 0, 0, 0.4, 1, 7])
        rule = rng.choice(rules)
        key = rule.key_for(f"k{rng.randrange(20)}")
        mine = await ours.take_all([(key, rule.amount, rule.get_expiry())]) is None
        refused += not mine
        assert mine == await theirs.hit(rule, key)
    assert 50 < refused < 550  # the mix exercised both answers


async def test_take_all_forgets_passed_windows() -> None:
    clock = FakeTime()
    storage = LocalMovingWindowStorage(now=clock)
    for i in range(1_000):
        assert await storage.take_all([(f"old-{i}", 1, 60), ("global", 5_000, 60)]) is None
    assert len(storage) == 1_001
    clock.value += 61
    for i in range(1_000):
        assert await storage.take_all([(f"new-{i}", 1, 60), ("global", 5_000, 60)]) is None
    assert len(storage) <= 1_001 + 2
    assert await storage.take_all([("new-5", 1, 60)]) is not None


def test_make_storage_without_redis_is_in_memory() -> None:
    from resetflow.ratelimit import make_storage

    assert isinstance(make_storage(None), LocalMovingWindowStorage)
