"""Server-side sessions and their cookies, over HTTP (R22-R28)."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

import httpx
import pytest

from resetflow.clock import FrozenClock
from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    find_code,
    sign_up_verified,
    wait_for_dev_message,
)
from tests.support.prod import prod_settings

COOKIE = "resetflow_session"


def _reset_to_grant(client: httpx.Client, *, after: int = 0) -> str:
    """Ask for a code, read it, verify it; returns the code."""
    assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
    message = wait_for_dev_message(
        client, to="ada@example.com", notification="password-reset-token", after=after
    )
    code = find_code(message["text"])
    assert client.post("/verify-token", json={"token": code}).status_code == 200
    return code


def _login(client: httpx.Client, password: str = PASSWORD) -> httpx.Response:
    return client.post("/login", json={"email": "ada@example.com", "password": password})


def test_r22_cookie_is_one_opaque_random_id_and_nothing_else(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        response = _login(client)
        headers = response.headers.get_list("set-cookie")
        assert len(headers) == 1
        name_value = headers[0].split(";")[0]
        name, value = name_value.split("=", 1)
        assert name == COOKIE
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        assert len(raw) * 8 >= 128
        for forbidden in ("ada", "example", "true", "user", "auth", "4155550100"):
            assert forbidden not in headers[0].lower().replace("httponly", "").replace(
                "samesite", ""
            )


def test_r23_cookie_flags_in_dev(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        cookie = client.get("/login").headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"path", "httponly", "samesite"} <= attributes
    assert "domain" not in attributes
    assert "samesite=lax" in cookie.lower()
    assert "path=/" in cookie.lower()


def test_r23_cookie_flags_in_prod(live_app: Callable[..., LiveApp]) -> None:
    """R23: prod cookies are __Host- prefixed and Secure (behind a trusted TLS proxy)."""
    app = live_app(**prod_settings(trusted_proxies="127.0.0.1/32"))
    with app.client() as client:
        response = client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-resetflow=")
    assert "; Secure" in cookie and "; HttpOnly" in cookie and "; Path=/" in cookie
    assert "domain" not in cookie.lower()


def test_r24_session_id_changes_at_every_privilege_change(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        client.get("/login")
        anonymous = client.cookies[COOKIE]

        assert _login(client).status_code == 200
        signed_in = client.cookies[COOKIE]
        assert signed_in != anonymous
        # The old id stops working.
        with app.client() as replay:
            replay.cookies.set(COOKIE, anonymous)
            assert replay.post("/logout", json={}).status_code == 200
        client.post("/logout", json={})

        client.get("/forgot-password")
        before_code = client.cookies[COOKIE]
        _reset_to_grant(client)
        after_code = client.cookies[COOKIE]
        assert after_code != before_code
        with app.client() as replay:
            replay.cookies.set(COOKIE, before_code)
            assert replay.get("/new-password", follow_redirects=False).status_code == 303

        done = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert done.status_code == 200
        assert client.cookies[COOKIE] != after_code
        with app.client() as replay:
            replay.cookies.set(COOKIE, after_code)
            again = replay.post(
                "/reset-password",
                json={
                    "newPassword": "yet another long passphrase",
                    "newPasswordConfirm": "yet another long passphrase",
                },
            )
            assert again.status_code == 403


def test_r24_logged_in_session_cookie_replayed_after_login_is_not_the_account(
    live_app: Callable[..., LiveApp],
) -> None:
    """A session id planted before sign-in (fixation) is not the signed-in session."""
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
    with app.client() as victim:
        victim.get("/login")
        planted = victim.cookies[COOKIE]
        assert _login(victim).status_code == 200
    with app.client() as attacker:
        attacker.cookies.set(COOKIE, planted)
        assert attacker.get("/account", follow_redirects=False).status_code == 303


def test_r25_a_verified_code_allows_one_password_change_only(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        _reset_to_grant(client)
        grant_cookie = client.cookies[COOKIE]
        first = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert first.status_code == 200
    with app.client() as replay:
        replay.cookies.set(COOKIE, grant_cookie)
        second = replay.post(
            "/reset-password",
            json={
                "newPassword": "the attacker's passphrase",
                "newPasswordConfirm": "the attacker's passphrase",
            },
        )
        assert second.status_code == 403
    with app.client() as check:
        assert _login(check, NEW_PASSWORD).status_code == 200


def test_r25_the_grant_lapses_after_ten_minutes(live_app: Callable[..., LiveApp]) -> None:
    clock = FrozenClock()
    app = live_app(clock=clock)
    with app.client() as client:
        sign_up_verified(client)
        _reset_to_grant(client)
        clock.advance(601)
        assert client.get("/new-password", follow_redirects=False).status_code == 303
        late = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert late.status_code == 403
    with app.client() as check:
        assert _login(check).status_code == 200


def test_r26_reset_password_without_a_verified_code_is_refused(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        assert _login(client).status_code == 200  # even a signed-in session has no grant
        refused = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "reset_not_allowed"


def test_r27_a_reset_ends_every_session_of_the_user(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as setup:
        sign_up_verified(setup)
    laptop, phone = app.client(), app.client()
    with laptop, phone:
        assert _login(laptop).status_code == 200
        assert _login(phone).status_code == 200
        assert laptop.get("/account").status_code == 200
        with app.client() as resetter:
            _reset_to_grant(resetter)
            assert (
                resetter.post(
                    "/reset-password",
                    json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
                ).status_code
                == 200
            )
        for device in (laptop, phone):
            response = device.get("/account", follow_redirects=False)
            assert response.status_code == 303
            assert response.headers["location"] == "/login"


def test_r28_no_automatic_sign_in_after_a_reset(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        _reset_to_grant(client)
        done = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert done.json()["redirect"] == "/login"
        account = client.get("/account", follow_redirects=False)
        assert account.status_code == 303 and account.headers["location"] == "/login"


def test_operators_can_end_every_session_of_a_user(live_app: Callable[..., LiveApp]) -> None:
    """``resetflow users end-sessions`` signs an account out everywhere."""
    import os
    import subprocess
    import sys

    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        assert _login(client).status_code == 200
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESETFLOW_")}
        env["RESETFLOW_DATA_DIR"] = str(app.settings.data_dir)
        done = subprocess.run(
            [sys.executable, "-m", "resetflow", "users", "end-sessions", "ada@example.com"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ended 1 session(s)"
        assert client.get("/account", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("stores", ["sqlite", "postgres-redis"])
def test_session_idle_expiry_signs_out_and_each_use_slides_it(
    live_app: Callable[..., LiveApp], request: pytest.FixtureRequest, stores: str
) -> None:
    """RESETFLOW_SESSION_IDLE_SECONDS (SM): a session unused for the idle window is
    signed out; each use slides the window, up to the absolute lifetime and no further."""
    clock = FrozenClock()
    overrides: dict[str, object] = {"session_idle_seconds": 1800, "session_ttl_seconds": 3600}
    if stores == "postgres-redis":
        overrides.update(
            database_url=request.getfixturevalue("postgres_url"),
            redis_url=request.getfixturevalue("redis_server"),
            redis_prefix=f"resetflow-test-{secrets.token_hex(6)}",
        )
    app = live_app(clock=clock, **overrides)

    def signed_in(client: httpx.Client) -> bool:
        response = client.get("/account", follow_redirects=False)
        assert response.status_code in (200, 303), response.text
        return response.status_code == 200

    with app.client() as setup:
        sign_up_verified(setup)
    with app.client() as client:
        assert _login(client).status_code == 200
        # Unused for 31 minutes (well within the 60-minute lifetime): signed out.
        clock.advance(31 * 60)
        assert not signed_in(client)

    with app.client() as client:
        assert _login(client).status_code == 200
        # Used every 20 minutes: each use slides the 30-minute window (40 > 30).
        for _ in range(2):
            clock.advance(20 * 60)
            assert signed_in(client)

    with app.client() as client:
        assert _login(client).status_code == 200
        # Used every 19 minutes, but the 60-minute lifetime is the hard cap.
        for _ in range(3):
            clock.advance(19 * 60)
            assert signed_in(client)
        clock.advance(4 * 60)
        assert not signed_in(client)


def test_a_malformed_cookie_of_another_app_on_the_host_does_not_sign_anyone_out(
    live_app: Callable[..., LiveApp],
) -> None:
    """Mounted in a host app or beside it, resetflow's cookie shares the Cookie header
    with whatever else the host sets. A pair the standard library's SimpleCookie cannot
    parse used to drop the whole header: the person looked signed out."""
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        assert _login(client).status_code == 200
        session = client.cookies.get(COOKIE)
        assert session
        client.cookies.clear()
        header = f'theme="dark; tracking=a b c; {COOKIE}={session}; x[1]=y'
        account = client.get("/account", headers={"cookie": header}, follow_redirects=False)
        assert account.status_code == 200
        assert client.get("/sessions/whoami", headers={"cookie": header}).status_code == 200
