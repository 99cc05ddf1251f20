"""What the messages say and where their links point (R39, R40)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    find_code,
    sign_up_verified,
    wait_for_dev_message,
)


def _verify_phone_too(client: httpx.Client) -> None:
    assert (
        client.post("/login", json={"email": "ada@example.com", "password": PASSWORD}).status_code
        == 200
    )
    assert client.post("/account/verify", json={"channel": "sms"}).status_code == 202
    code = find_code(
        wait_for_dev_message(client, to="+14155550100", notification="verify-contact")["text"]
    )
    assert client.post("/verify-contact", json={"token": code}).status_code == 200
    assert client.post("/logout", json={}).status_code == 200


def test_r39_password_changed_goes_to_every_verified_contact(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        _verify_phone_too(client)
        client.post("/send-token", json={"email": "ada@example.com"})
        code = find_code(
            wait_for_dev_message(client, to="ada@example.com", notification="password-reset-token")[
                "text"
            ]
        )
        client.post("/verify-token", json={"token": code})
        assert (
            client.post(
                "/reset-password",
                json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
            ).status_code
            == 200
        )
        email = wait_for_dev_message(client, to="ada@example.com", notification="password-changed")
        sms = wait_for_dev_message(client, to="+14155550100", notification="password-changed")
    assert email["subject"] == "Your password was changed"
    assert "If it was not you" in email["text"] and "/forgot-password" in email["text"]
    assert "Not you?" in sms["text"]


def test_r40_links_use_the_base_url_never_the_request_host(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(base_url="https://auth.example.org")
    with app.client() as client:
        sign_up_verified(client)
        evil = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
        client.post("/send-token", json={"email": "ada@example.com"}, headers=evil)
        code = find_code(
            wait_for_dev_message(client, to="ada@example.com", notification="password-reset-token")[
                "text"
            ]
        )
        client.post("/verify-token", json={"token": code}, headers=evil)
        client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
            headers=evil,
        )
        changed = wait_for_dev_message(
            client, to="ada@example.com", notification="password-changed"
        )
    assert "https://auth.example.org/forgot-password" in changed["text"]
    assert 'href="https://auth.example.org/forgot-password"' in changed["html"]
    assert "evil.example" not in changed["text"] + changed["html"]
