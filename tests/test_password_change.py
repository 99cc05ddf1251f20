"""A signed-in person changes their own password (POST /account/password): the current
password first, the policy, every other session ended, every verified contact told, the
host app's events; JSON and the HTML form."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from tests.conftest import LiveApp
from tests.support.flow import PASSWORD, sign_up_verified, wait_for_dev_message

NEW = "seven orange lanterns float past the harbour"


def _login(client: httpx.Client, password: str = PASSWORD) -> httpx.Response:
    return client.post("/login", json={"email": "ada@example.com", "password": password})


def _change(client: httpx.Client, current: str, new: str = NEW, again: str = NEW) -> httpx.Response:
    return client.post(
        "/account/password",
        json={"currentPassword": current, "newPassword": new, "newPasswordConfirm": again},
    )


def test_r27_a_password_change_ends_other_sessions_keeps_this_one_and_tells_the_owner(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as laptop, app.client() as phone:
        sign_up_verified(laptop)
        assert _login(laptop).status_code == 200
        assert _login(phone).status_code == 200
        before = laptop.cookies.get("resetflow_session")

        changed = _change(laptop, PASSWORD)
        assert changed.status_code == 200, changed.text
        assert changed.json()["redirect"] == "/account"
        # This browser goes on, under a new session id (R24); the other one is out (R27).
        assert laptop.cookies.get("resetflow_session") not in (None, before)
        assert laptop.get("/sessions/whoami").status_code == 200
        assert phone.get("/sessions/whoami").status_code == 401
        # The old password no longer opens the account; the new one does.
        assert _login(phone).status_code == 401
        assert _login(phone, NEW).status_code == 200
        notice = wait_for_dev_message(laptop, to="ada@example.com", notification="password-changed")
        assert NEW not in notice["text"] and PASSWORD not in notice["text"]


def test_r57_a_wrong_current_password_changes_nothing_and_counts_as_a_failed_sign_in(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(signin_max_failures=3)
    with app.client() as client:
        sign_up_verified(client)
        assert _login(client).status_code == 200
        wrong = _change(client, "not my current password at all")
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_credentials"
        assert "currentPassword" in wrong.json()["fields"]
        mismatch = _change(client, PASSWORD, again=NEW + " nope")
        assert mismatch.status_code == 422 and "newPasswordConfirm" in mismatch.json()["fields"]
        weak = _change(client, PASSWORD, new="password12345678", again="password12345678")
        assert weak.status_code == 422 and "newPassword" in weak.json()["fields"]
        # Nothing changed: the old password still opens the account (which clears the
        # failure count, R13-like), and this session goes on.
        assert client.get("/sessions/whoami").status_code == 200
        with app.client() as other:
            assert _login(other).status_code == 200
            # Three wrong current passwords in a row reach the account's limit of 3: from
            # then on even the right password is answered like a wrong one (R57).
            for attempt in ("wrong once, surely", "wrong again, twice over", "a third one"):
                assert _change(client, attempt).status_code == 401
            assert _login(other).status_code == 401


def test_password_change_needs_a_signed_in_session_and_works_as_an_html_form(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        assert _change(client, PASSWORD).status_code == 401  # signed out
        assert _login(client).status_code == 200
        page = client.get("/account")
        assert 'action="/account/password"' in page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        form = {"currentPassword": PASSWORD, "newPassword": NEW, "newPasswordConfirm": NEW}
        assert client.post("/account/password", data=form).status_code == 403  # no CSRF
        wrong = client.post(
            "/account/password",
            data={**form, "currentPassword": "a wrong one entirely", "csrf_token": token[1]},
        )
        assert wrong.status_code == 401 and "This is not your current password." in wrong.text
        assert 'aria-describedby="currentPassword-error"' in wrong.text
        done = client.post(
            "/account/password", data={**form, "csrf_token": token[1]}, follow_redirects=False
        )
        assert done.status_code == 303 and done.headers["location"] == "/account"
        assert "Your password was changed." in client.get("/account").text


def test_r61_a_password_change_reaches_the_host_app_as_password_changed(
    live_app: Callable[..., LiveApp],
) -> None:
    from standardwebhooks import Webhook

    from tests.support.webhooks import new_secret, webhook_receiver

    secret = new_secret()
    with webhook_receiver() as receiver:
        app = live_app(webhook_url=receiver.url, webhook_secret=secret)
        with app.client() as client:
            sign_up_verified(client)
            assert _login(client).status_code == 200
            assert _change(client, PASSWORD).status_code == 200
        changed = receiver.wait_for("password.changed")[0]
        revoked = [
            r
            for r in receiver.wait_for("sessions.revoked")
            if r.event["data"]["reason"] == "password_changed"
        ]
    Webhook(secret).verify(changed.body, changed.headers)
    user_id = changed.event["data"]["user_id"]
    assert [r.event["data"]["user_id"] for r in revoked] == [user_id]
    for secret_text in (PASSWORD, NEW):
        assert secret_text not in changed.body.decode()
