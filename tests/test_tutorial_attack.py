"""The tutorial's own attack: its ``user_id`` and ``authenticated`` cookies were set by the
client, so anyone could reach /new-password and change anyone's password. Here no cookie
a client makes up gets past the server-side guard (R22, R26)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import LiveApp
from tests.support.flow import NEW_PASSWORD, PASSWORD, sign_up_verified

FORGED_COOKIES = [
    {"user_id": "anything"},
    {"authenticated": "true"},
    {"user_id": "anything", "authenticated": "true"},
    {"resetflow_session": "made-up-session-id-0123456789abcdef0123456789"},
    {"resetflow_session": "x" * 500, "authenticated": "true"},
]


@pytest.mark.parametrize("cookies", FORGED_COOKIES)
def test_forged_cookies_never_reach_new_password_or_change_it(
    live_app: Callable[..., LiveApp], cookies: dict[str, str]
) -> None:
    app = live_app()
    with app.client() as owner:
        sign_up_verified(owner)
    with app.client() as attacker:
        attacker.cookies.update(cookies)
        page = attacker.get("/new-password", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == "/forgot-password"

        attacker.cookies.update(cookies)
        attempt = attacker.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert attempt.status_code == 403
        assert attempt.json()["code"] == "reset_not_allowed"
        # A made-up session id is never adopted: the server hands out its own.
        issued = attempt.cookies.get("resetflow_session")
        assert issued is None or issued != cookies.get("resetflow_session")

    with app.client() as check:
        assert (
            check.post(
                "/login", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )
        assert (
            check.post(
                "/login", json={"email": "ada@example.com", "password": NEW_PASSWORD}
            ).status_code
            == 401
        )


def test_a_session_that_only_asked_for_a_code_cannot_set_a_password(
    live_app: Callable[..., LiveApp],
) -> None:
    """R26: the steps are enforced in order: /send-token alone grants nothing."""
    app = live_app()
    with app.client() as owner:
        sign_up_verified(owner)
    with app.client() as attacker:
        assert attacker.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        assert attacker.get("/new-password", follow_redirects=False).status_code == 303
        refused = attacker.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert refused.status_code == 403
    with app.client() as check:
        assert (
            check.post(
                "/login", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )
