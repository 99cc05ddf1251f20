"""Abuse against the running app, with the production limits unless a test says otherwise.

Client addresses are varied through ``X-Forwarded-For`` from a trusted proxy (the test
client on 127.0.0.1), as an attacker with many addresses would appear behind a real one.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import httpx

from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    find_code,
    sign_up,
    sign_up_verified,
    wait_for_dev_message,
)
from tests.support.servers import SmtpSink

PRODUCTION_LIMITS = {
    "limit_ip": "20/minute;300/hour",
    "limit_destination": "1/minute;3/15 minutes;10/day",
}


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_101_wrong_codes_over_many_codes_and_addresses_pause_recovery_not_sign_in(
    live_app: Callable[..., LiveApp],
) -> None:
    """R9, R12: the count is per account, across codes and client addresses. From the
    100th failure on, every code is refused, the real one too; password sign-in works."""
    app = live_app(
        trusted_proxies="127.0.0.1/32",
        limit_ip="20/minute;300/hour",
        limit_destination="100/minute",
    )
    with app.client() as owner:
        sign_up_verified(owner)
    failures = 0
    last_id = 0
    ip = 0
    with app.client() as attacker:
        while failures < 101:
            ip += 1
            headers = {"X-Forwarded-For": f"203.0.113.{ip % 250 + 1}"}
            assert (
                attacker.post(
                    "/send-token", json={"email": "ada@example.com"}, headers=headers
                ).status_code
                == 202
            )
            message = wait_for_dev_message(
                attacker, to="ada@example.com", notification="password-reset-token", after=last_id
            )
            last_id = message["id"]
            code = find_code(message["text"])
            for _ in range(5):
                if failures == 101:
                    break
                ip += 1
                answer = attacker.post(
                    "/verify-token",
                    json={"token": _wrong(code)},
                    headers={"X-Forwarded-For": f"198.51.100.{ip % 250 + 1}"},
                )
                assert answer.status_code == 400
                assert answer.json()["code"] == "invalid_code"
                failures += 1
        # Recovery is paused: a fresh, correct code is refused too.
        attacker.post(
            "/send-token",
            json={"email": "ada@example.com"},
            headers={"X-Forwarded-For": "192.0.2.1"},
        )
        message = wait_for_dev_message(
            attacker, to="ada@example.com", notification="password-reset-token", after=last_id
        )
        refused = attacker.post(
            "/verify-token",
            json={"token": find_code(message["text"])},
            headers={"X-Forwarded-For": "192.0.2.2"},
        )
        assert refused.status_code == 400
        assert refused.json()["code"] == "invalid_code"
    with app.client() as owner:
        assert (
            owner.post(
                "/login", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )


def test_20_concurrent_submissions_of_the_right_code_have_one_winner(
    live_app: Callable[..., LiveApp],
) -> None:
    """R5 over HTTP: 20 requests racing with the same session and the right code."""
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        client.post("/send-token", json={"email": "ada@example.com"})
        code = find_code(
            wait_for_dev_message(client, to="ada@example.com", notification="password-reset-token")[
                "text"
            ]
        )
        cookies = dict(client.cookies)

    def submit(_: int) -> int:
        with httpx.Client(base_url=app.url, cookies=cookies, timeout=30) as racer:
            return racer.post("/verify-token", json={"token": code}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(submit, range(20)))
    assert statuses.count(200) == 1
    assert statuses.count(400) == 19


def test_50_requests_for_one_address_in_a_minute_send_at_most_3_messages(
    live_app: Callable[..., LiveApp], smtp: tuple[SmtpSink, int]
) -> None:
    """R15, R16, R18: a flood of /send-token for one address reaches its inbox at most 3
    times (here: once, with the 60 s cooldown), and every answer is a generic one."""
    sink, port = smtp
    app = live_app(
        email_provider="smtp", smtp_host="127.0.0.1", smtp_port=port, **PRODUCTION_LIMITS
    )
    with app.client() as client:
        sign_up(client, name="Ada")
        code = find_code(sink.wait_for("ada@example.com")[0].text)
        assert client.post("/verify-contact", json={"token": code}).status_code == 200
    answers = []
    with app.client() as attacker:
        for _ in range(50):
            answers.append(attacker.post("/send-token", json={"email": "ada@example.com"}))
        for _ in range(100):
            if attacker.get("/readyz").json()["outbox_pending"] == 0:
                break
    generic = {
        (202, b'{"redirect":"/enter-token","mode":"email"}'),
        (
            429,
            b'{"error":"Too many requests. Please wait a moment and try again.",'
            b'"code":"rate_limited"}',
        ),
    }
    assert {(a.status_code, a.content) for a in answers} <= generic
    resets = [
        m for m in sink.to("ada@example.com") if m.message["Subject"] == "Your password reset token"
    ]
    assert 1 <= len(resets) <= 3


def test_a_full_reset_still_works_under_the_production_limits(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(**PRODUCTION_LIMITS)
    with app.client() as client:
        sign_up_verified(client)
        client.post("/send-token", json={"email": "ada@example.com"})
        code = find_code(
            wait_for_dev_message(client, to="ada@example.com", notification="password-reset-token")[
                "text"
            ]
        )
        assert client.post("/verify-token", json={"token": code}).status_code == 200
        done = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert done.status_code == 200
        assert (
            client.post(
                "/login", json={"email": "ada@example.com", "password": NEW_PASSWORD}
            ).status_code
            == 200
        )
