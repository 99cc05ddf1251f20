"""The production pair: the same flow on PostgreSQL (data) and Redis (sessions, limits)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from redis.asyncio import Redis

from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    find_code,
    sign_up_verified,
    wait_for_dev_message,
)


def test_whole_reset_on_postgresql_and_redis(
    live_app: Callable[..., LiveApp], postgres_url: str, redis_server: str
) -> None:
    prefix = f"resetflow-test-{secrets.token_hex(6)}"
    app = live_app(
        database_url=postgres_url,
        redis_url=redis_server,
        redis_prefix=prefix,
        limit_destination="1/minute",
    )
    with app.client() as client:
        sign_up_verified(client)
        assert (
            client.post(
                "/login", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )
        assert client.get("/account").status_code == 200
        with app.client() as other_device:
            assert (
                other_device.post(
                    "/login", json={"email": "ada@example.com", "password": PASSWORD}
                ).status_code
                == 200
            )
            client.post("/logout", json={})
            client.post("/send-token", json={"email": "ada@example.com"})
            client.post("/send-token", json={"email": "ada@example.com"})  # cooldown: nothing sent
            code = find_code(
                wait_for_dev_message(
                    client, to="ada@example.com", notification="password-reset-token"
                )["text"]
            )
            assert client.post("/verify-token", json={"token": code}).status_code == 200
            done = client.post(
                "/reset-password",
                json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
            )
            assert done.status_code == 200
            # Every session ended, the one in Redis on the other device too (R27).
            assert other_device.get("/account", follow_redirects=False).status_code == 303
        assert (
            client.post(
                "/login", json={"email": "ada@example.com", "password": NEW_PASSWORD}
            ).status_code
            == 200
        )
        resets = [
            m
            for m in client.get("/dev/outbox.json").json()
            if m["notification"] == "password-reset-token"
        ]
        assert len(resets) == 1  # the limit counter lives in Redis and held

    async def keys() -> list[str]:
        client = Redis.from_url(redis_server, decode_responses=True)
        try:
            return [key async for key in client.scan_iter(f"{prefix}:session:*")]
        finally:
            await client.aclose()

    assert asyncio.run(keys()), "sessions were not stored in Redis"
