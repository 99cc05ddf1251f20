"""The whole reset flow with email delivered by a real SMTP server on loopback."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import LiveApp
from tests.support.flow import NEW_PASSWORD, PASSWORD, find_code, sign_up
from tests.support.servers import SmtpSink


def test_reset_by_email_through_real_smtp(
    live_app: Callable[..., LiveApp], smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    app = live_app(
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        email_from="resetflow@example.org",
    )
    with app.client() as client:
        assert sign_up(client).status_code == 201
        welcome = sink.wait_for("ada@example.com")[0]
        assert welcome.message["Subject"] == "Confirm your email address"
        assert (
            client.post("/verify-contact", json={"token": find_code(welcome.text)}).status_code
            == 200
        )
        assert client.post("/logout", json={}).status_code == 200

        answer = client.post("/send-token", json={"email": "ada@example.com"})
        assert answer.status_code == 202
        assert answer.json() == {"redirect": "/enter-token", "mode": "email"}
        mail = sink.wait_for("ada@example.com", count=2)[1]

        assert mail.message["Subject"] == "Your password reset token"
        assert mail.message.get_content_type() == "multipart/alternative"
        assert mail.html is not None
        code = find_code(mail.text)
        assert f"Hello Ada Lovelace, here is your {code}" in mail.text
        assert code in mail.html
        assert mail.sender == "resetflow@example.org"

        assert client.post("/verify-token", json={"token": code}).json() == {
            "redirect": "/new-password"
        }
        done = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert done.status_code == 200
        assert done.json()["redirect"] == "/login"

        old = client.post("/login", json={"email": "ada@example.com", "password": PASSWORD})
        assert old.status_code == 401
        new = client.post("/login", json={"email": "ada@example.com", "password": NEW_PASSWORD})
        assert new.status_code == 200
        assert new.json() == {"redirect": "/account"}
        changed = sink.wait_for("ada@example.com", count=3)[2]
        assert changed.message["Subject"] == "Your password was changed"
