"""The rate limiter behaves the same on in-process memory and on Redis (shared by every
process in production)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from resetflow.errors import RateLimited
from resetflow.ratelimit import LimitRules, RateLimiter, make_storage

pytestmark = pytest.mark.anyio

RULES = LimitRules(
    per_ip="3/minute",
    global_="5/minute",
    per_destination="2/minute;3/hour",
    per_sms_prefix="2/hour",
    sms_budget="3/hour",
)


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else str(request.getfixturevalue("redis_server"))


@pytest.fixture
async def limiter(storage_url: str | None) -> AsyncIterator[RateLimiter]:
    yield RateLimiter(
        storage=make_storage(storage_url, prefix=f"resetflow-test-{secrets.token_hex(6)}"),
        rules=RULES,
    )


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
