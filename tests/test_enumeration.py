"""Answers do not tell whether an account exists (R19, R21, R52)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx

from tests.conftest import LiveApp
from tests.support.flow import (
    PASSWORD,
    dev_mailbox,
    sign_up,
    sign_up_verified,
    wait_for_dev_message,
)

RANDOM_HEADERS = {"date", "set-cookie"}


def _shape(response: httpx.Response) -> tuple[int, bytes, list[str], list[str]]:
    """Status, body, header names, and the cookie *names and attributes* (not values)."""
    cookies = [
        re.sub(r"^([^=]+)=[^;]*", r"\1=<value>", header)
        for header in response.headers.get_list("set-cookie")
    ]
    return response.status_code, response.content, sorted(response.headers.keys()), cookies


def test_r19_send_token_answers_alike_for_known_and_unknown_accounts(
    live_app: Callable[..., LiveApp],
) -> None:
    """R19 (and the acceptance point): same status, body, header names and cookies."""
    app = live_app()
    with app.client() as owner:
        sign_up_verified(owner)
    shapes = {}
    for label, body in {
        "known email": {"email": "ada@example.com"},
        "unknown email": {"email": "nobody@example.com"},
        "known phone": {"phone": "+14155550100"},
        "unknown phone": {"phone": "+14155550199"},
    }.items():
        with app.client() as client:
            shapes[label] = _shape(client.post("/send-token", json=body))
    assert shapes["known email"] == shapes["unknown email"]
    assert shapes["known phone"] == shapes["unknown phone"]
    assert shapes["known email"][0] == 202
    # The values that differ are only random ones (date, session id).
    for label, shape in shapes.items():
        assert set(shape[2]) >= RANDOM_HEADERS, label


def test_r19_unverified_account_answers_like_unknown_and_gets_no_code(
    live_app: Callable[..., LiveApp],
) -> None:
    """R19 + R42: an account whose contacts are unverified looks unknown and receives nothing."""
    app = live_app()
    with app.client() as client:
        assert sign_up(client).status_code == 201
        wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
        known = _shape(client.post("/send-token", json={"email": "ada@example.com"}))
        # Decoy jobs count as pending while the worker pretends to send them: let it settle,
        # then no message beyond the confirmation may have gone out (below).
        _wait_until_outbox_settles(client)
    with app.client() as other:
        unknown = _shape(other.post("/send-token", json={"email": "nobody@example.com"}))
        assert known == unknown
        assert [m["notification"] for m in dev_mailbox(other)] == ["verify-contact"]


def test_r21_verify_token_answers_alike_for_every_kind_of_wrong(
    live_app: Callable[..., LiveApp],
) -> None:
    """R21: unknown account, wrong code and no attempt at all give one answer."""
    app = live_app()
    with app.client() as owner:
        sign_up_verified(owner)
    answers = []
    with app.client() as client:
        answers.append(client.post("/verify-token", json={"token": "123456"}))
        client.post("/send-token", json={"email": "nobody@example.com"})
        answers.append(client.post("/verify-token", json={"token": "123456"}))
        client.post("/send-token", json={"email": "ada@example.com"})
        answers.append(client.post("/verify-token", json={"token": "000000"}))
    assert {(a.status_code, a.content) for a in answers} == {
        (answers[0].status_code, answers[0].content)
    }
    assert answers[0].json()["code"] == "invalid_code"


def test_r21_login_answers_alike_for_unknown_account_and_wrong_password(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as owner:
        sign_up_verified(owner)
    with app.client() as client:
        wrong = client.post("/login", json={"email": "ada@example.com", "password": "wrong" * 4})
        unknown = client.post("/login", json={"email": "nobody@example.com", "password": PASSWORD})
        malformed = client.post("/login", json={"phone": "not a phone", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == malformed.status_code == 401
    assert wrong.content == unknown.content == malformed.content


def test_r52_sign_up_with_a_taken_email_answers_like_a_new_one_and_tells_the_owner(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as owner:
        sign_up_verified(owner)
    with app.client() as client:
        taken = _shape(sign_up(client, name="Mallory", phone="+14155550142"))
    with app.client() as client:
        fresh = _shape(
            sign_up(client, name="Grace", email="grace@example.com", phone="+14155550143")
        )
    assert taken == fresh
    with app.client() as client:
        notice = wait_for_dev_message(client, to="ada@example.com", notification="account-exists")
        assert "already have an account" in notice["text"]
        # Nothing was created: Mallory's password does not open Ada's account.
        assert (
            client.post("/login", json={"phone": "+14155550142", "password": PASSWORD}).status_code
            == 401
        )


def _wait_until_outbox_settles(client: httpx.Client, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").json()["outbox_pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("/readyz").json()["outbox_pending"] == 0
