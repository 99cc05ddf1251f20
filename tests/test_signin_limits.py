"""R57: failed sign-ins are limited per account as well as per IP, without locking the
owner out of recovery; an IPv6 client is counted by its /64."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from resetflow.client import limit_subject
from resetflow.errors import RateLimited
from resetflow.limits_memory import LocalMovingWindowStorage
from resetflow.ratelimit import LimitRules, RateLimiter
from resetflow.signin_failures import (
    FailureCounts,
    MemoryFailureCounts,
    RedisFailureCounts,
    SignInFailures,
)
from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    create_verified_account,
    find_code,
    wait_for_dev_message,
)

EMAIL = "ada@example.com"


# The counts, on memory and on Redis ------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def make_counts(request: pytest.FixtureRequest) -> Callable[[], FailureCounts]:
    """Counts on memory or on Redis (a prefix of the test's own, its keys expire)."""
    if request.param == "memory":
        return MemoryFailureCounts
    url = str(request.getfixturevalue("redis_server"))  # sync: the probe runs its own loop
    prefix = f"resetflow-test-{secrets.token_hex(6)}"
    return lambda: RedisFailureCounts.from_url(url, prefix=prefix)


@pytest.mark.anyio
async def test_r57_failures_count_per_account_stop_at_the_limit_and_success_clears(
    make_counts: Callable[[], FailureCounts],
) -> None:
    counts = make_counts()
    failures = SignInFailures(counts, max_failures=3, ttl_seconds=60)
    a, b = failures.account_key("a"), failures.account_key("b")
    try:
        for _ in range(2):
            await failures.failed(a)
        assert not await failures.stopped(a)
        await failures.succeeded(a)  # the owner got in: the count starts again
        for _ in range(2):
            await failures.failed(a)
        assert not await failures.stopped(a)
        await failures.failed(a)
        assert await failures.stopped(a)
        assert not await failures.stopped(b)  # per account
        await failures.succeeded(a)
        assert not await failures.stopped(a)
    finally:
        await counts.clear(a)
        await counts.close()


@pytest.mark.anyio
async def test_r57_the_limit_may_not_exceed_100() -> None:
    with pytest.raises(ValueError):
        SignInFailures(MemoryFailureCounts(), max_failures=101)


@pytest.mark.anyio
async def test_r57_memory_counts_forget_after_their_ttl_and_stay_bounded() -> None:
    counts = MemoryFailureCounts(max_keys=3)
    assert await counts.add("k", ttl_seconds=0) == 1
    assert await counts.get("k") == 0  # expired at once
    for key in ("a", "b", "c", "d"):
        await counts.add(key, ttl_seconds=60)
    assert await counts.get("a") == 0  # the oldest went first
    assert await counts.get("d") == 1


# IPv6 clients by their /64 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("192.0.2.8", "192.0.2.8"),
        ("-", "-"),
    ],
)
def test_r57_ipv6_clients_are_counted_by_their_64(address: str, subject: str) -> None:
    assert limit_subject(address) == subject


@pytest.mark.anyio
async def test_r57_per_ip_limit_counts_a_whole_ipv6_64_as_one_client() -> None:
    limiter = RateLimiter(
        storage=LocalMovingWindowStorage(), rules=LimitRules(per_ip="2/minute", global_="")
    )
    await limiter.check_request(action="login", ip="2001:db8::1")
    await limiter.check_request(action="login", ip="2001:db8::2")
    with pytest.raises(RateLimited):
        await limiter.check_request(action="login", ip="2001:db8::3")
    await limiter.check_request(action="login", ip="2001:db8:0:1::3")  # the next /64
    await limiter.check_request(action="login", ip="192.0.2.1")
    await limiter.check_request(action="login", ip="192.0.2.2")
    await limiter.check_request(action="login", ip="192.0.2.3")  # IPv4: per address


def test_r57_ipv6_addresses_of_one_64_share_the_per_ip_limit_through_the_service(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(trusted_proxies="127.0.0.1/32", limit_ip="3/minute")
    with app.client() as client:

        def send(address: str) -> int:
            return client.post(
                "/send-token", json={"email": EMAIL}, headers={"X-Forwarded-For": address}
            ).status_code

        assert [send(f"2001:db8:5:6::{n}") for n in range(1, 4)] == [202] * 3
        assert send("2001:db8:5:6:abcd::99") == 429
        assert send("2001:db8:5:7::1") == 202
        assert [send(f"198.51.100.{n}") for n in range(1, 5)] == [202] * 4


# Through the service: 100 wrong passwords from 100 addresses -----------------------------


def _login(client: httpx.Client, password: str, address: str, email: str = EMAIL) -> httpx.Response:
    return client.post(
        "/login", json={"email": email, "password": password}, headers={"X-Forwarded-For": address}
    )


def _shape(answer: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    random = {"date", "set-cookie", "x-request-id"}
    headers = sorted((k, v) for k, v in answer.headers.items() if k not in random)
    return answer.status_code, answer.content, headers


@pytest.mark.parametrize("storage", ["sqlite+memory", "postgres+redis"])
def test_r57_the_101st_sign_in_from_a_101st_address_is_refused_like_a_wrong_password(
    live_app: Callable[..., LiveApp], request: pytest.FixtureRequest, storage: str
) -> None:
    """100 wrong passwords for one account, each from another address (so no per-IP limit
    stops them); then the right password, from yet another address, is answered exactly
    as a wrong one. The owner still recovers: /send-token, code, new password; the reset
    clears the count and the new password opens the account."""
    overrides: dict[str, Any] = {"trusted_proxies": "127.0.0.1/32"}
    if storage == "postgres+redis":
        overrides.update(
            database_url=request.getfixturevalue("postgres_url"),
            redis_url=request.getfixturevalue("redis_server"),
            redis_prefix=f"resetflow-test-{secrets.token_hex(6)}",
        )
    app = live_app(**overrides)
    create_verified_account(app.settings)
    with app.client() as client:
        wrong = [_login(client, f"wrong guess number {n}", f"10.1.{n}.1") for n in range(100)]
        assert {answer.status_code for answer in wrong} == {401}
        refused = _login(client, PASSWORD, "10.2.0.1")
        another_wrong = _login(client, "yet another wrong guess", "10.2.0.2")
        unknown = _login(client, PASSWORD, "10.2.0.3", email="nobody@example.com")
        assert _shape(refused) == _shape(wrong[0]) == _shape(another_wrong) == _shape(unknown)
        assert client.get("/account", follow_redirects=False).status_code != 200

        # Recovery is not blocked.
        assert client.post("/send-token", json={"email": EMAIL}).status_code == 202
        message = wait_for_dev_message(client, to=EMAIL, notification="password-reset-token")
        assert (
            client.post("/verify-token", json={"token": find_code(message["text"])}).status_code
            == 200
        )
        done = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert done.status_code == 200
        assert _login(client, NEW_PASSWORD, "10.3.0.1").status_code == 200


def test_r57_a_successful_sign_in_clears_the_count(live_app: Callable[..., LiveApp]) -> None:
    app = live_app(signin_max_failures=3)
    create_verified_account(app.settings)
    with app.client() as client:
        for _ in range(3):
            assert _login(client, "wrong guess", "127.0.0.1").status_code == 401
            assert _login(client, "wrong guess", "127.0.0.1").status_code == 401
            assert _login(client, PASSWORD, "127.0.0.1").status_code == 200
        for _ in range(3):
            assert _login(client, "wrong guess", "127.0.0.1").status_code == 401
        assert _login(client, PASSWORD, "127.0.0.1").status_code == 401
