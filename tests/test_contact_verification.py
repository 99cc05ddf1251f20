"""Contacts are used for recovery only once verified with a code (R42, first half)."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import LiveApp
from tests.support.flow import (
    PASSWORD,
    dev_mailbox,
    find_code,
    sign_up,
    sign_up_verified,
    wait_for_dev_message,
)


def test_the_preferred_contact_is_verified_with_the_code_sent_at_sign_up(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        assert sign_up(client, preference="sms").status_code == 201
        message = wait_for_dev_message(client, to="+14155550100", notification="verify-contact")
        assert message["channel"] == "sms"
        assert (
            client.post(
                "/verify-contact",
                json={"token": "000000" if find_code(message["text"]) != "000000" else "111111"},
            ).status_code
            == 400
        )
        done = client.post("/verify-contact", json={"token": find_code(message["text"])})
        assert done.status_code == 200 and done.json()["redirect"] == "/"
        assert "verified" in client.get("/account").text
        # The code was used up: the same code again is refused.
        assert (
            client.post("/verify-contact", json={"token": find_code(message["text"])}).status_code
            == 400
        )


def test_resend_replaces_the_code(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        assert sign_up(client).status_code == 201
        first = wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
        assert client.post("/verify-contact/resend", json={}).status_code == 202
        second = wait_for_dev_message(
            client, to="ada@example.com", notification="verify-contact", after=first["id"]
        )
        if find_code(first["text"]) != find_code(second["text"]):
            assert (
                client.post("/verify-contact", json={"token": find_code(first["text"])}).status_code
                == 400
            )
        assert (
            client.post("/verify-contact", json={"token": find_code(second["text"])}).status_code
            == 200
        )


def test_a_signed_in_user_can_verify_their_other_contact(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)  # email preferred and verified; phone not
        assert client.post("/account/verify", json={"channel": "sms"}).status_code == 401
        assert (
            client.post(
                "/login", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )
        assert client.post("/account/verify", json={"channel": "sms"}).status_code == 202
        message = wait_for_dev_message(client, to="+14155550100", notification="verify-contact")
        assert (
            client.post("/verify-contact", json={"token": find_code(message["text"])}).status_code
            == 200
        )
        account = client.get("/account").text
        assert account.count('badge">verified') == 2
        # Asking again for a verified contact sends nothing new.
        before = len(dev_mailbox(client))
        assert client.post("/account/verify", json={"channel": "sms"}).status_code == 202
        assert client.get("/readyz").json()["outbox_pending"] == 0
        assert len(dev_mailbox(client)) == before


def test_r42_an_unverified_contact_never_receives_a_reset_code(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)  # only the email is verified
        assert client.post("/send-token", json={"phone": "+14155550100"}).status_code == 202
        reset = wait_for_dev_message(
            client, to="ada@example.com", notification="password-reset-token"
        )
        assert reset["channel"] == "email"
        assert client.get("/readyz").json()["outbox_pending"] == 0
        assert not [m for m in dev_mailbox(client) if m["to"] == "+14155550100"]
