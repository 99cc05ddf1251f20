"""return_to through the flows, live: sign-in, sign-up -> verify-contact, forgot -> code ->
new password -> sign-in, as JSON and as HTML forms (R59, SPEC §9)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    find_code,
    sign_up,
    sign_up_verified,
    wait_for_dev_message,
)

ALLOWED = "https://app.example.org/, https://shop.example.org/store"
GOOD = "https://app.example.org/after?x=1#y"
ACCOUNT = {"email": "ada@example.com", "password": PASSWORD}

OPEN_REDIRECTS = [
    "//evil.example",
    "/\\evil.example",
    "https:evil.example",
    "https://app.example.org@evil.example",
    "https://app.example.org.evil.example",
    "https://app.example.org%2F@evil",
    "%2F%2Fevil.example",
    "https://app.example.org/%2F%2Fevil.example",
    "https://app.example.org/%0d%0aSet-Cookie:%20a=b",
    "https://app.example.org/\r\nSet-Cookie: a=b",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "http://app.example.org/",
    "https://app.example.org:8443/",
    " https://app.example.org/",
    "https:\\\\evil.example",
    "https://shop.example.org/storefront",
    "https://shop.example.org/store/..%2F..%2Fadmin",
    "https://app.example.org/" + "a" * 3000,
]


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def hidden_return_to(page: httpx.Response) -> str | None:
    match = re.search(r'name="return_to" value="([^"]*)"', page.text)
    return None if match is None else match.group(1).replace("&amp;", "&")


@pytest.fixture
def app(live_app: Callable[..., LiveApp]) -> LiveApp:
    return live_app(return_to_allowed=ALLOWED)


def test_r59_sign_in_goes_back_to_an_allowed_return_to(app: LiveApp) -> None:
    with app.client() as client:
        sign_up_verified(client)
        sent = client.post("/login", json={**ACCOUNT, "return_to": GOOD})
        assert sent.json()["redirect"] == GOOD
        client.post("/logout", json={})
        # From the page's query, kept in the session: the JSON body need not repeat it.
        assert client.get("/login", params={"return_to": GOOD}).status_code == 200
        assert client.post("/login", json=ACCOUNT).json()["redirect"] == GOOD
        client.post("/logout", json={})
        # Used once: the next sign-in goes where it always goes.
        assert client.post("/login", json=ACCOUNT).json()["redirect"] == "/account"


@pytest.mark.parametrize("value", OPEN_REDIRECTS)
def test_r59_sign_in_ignores_a_return_to_outside_the_allow_list(
    app: LiveApp, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with app.client() as client:
        sign_up_verified(client)
        with caplog.at_level(logging.WARNING, logger="resetflow.return_to"):
            answer = client.post("/login", json={**ACCOUNT, "return_to": value})
            assert answer.status_code == 200
            assert answer.json()["redirect"] == "/account"
            client.post("/logout", json={})
            page = client.get("/login", params={"return_to": value})
            assert page.status_code == 200
            assert hidden_return_to(page) is None
            form = client.post("/login", data={**ACCOUNT, "csrf_token": csrf(page)})
            assert form.status_code == 303
            assert form.headers["location"] == "/account"
    refusals = [r for r in caplog.records if r.getMessage() == "return_to_refused"]
    assert len(refusals) == 2
    for record in refusals:
        logged = str(record.__dict__["return_to"])
        assert "\r" not in logged and "\n" not in logged and len(logged) <= 100


def test_r59_an_empty_allow_list_follows_no_return_to(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        answer = client.post("/login", json={**ACCOUNT, "return_to": GOOD})
        assert answer.json()["redirect"] == "/account"


def test_r59_the_sign_in_form_carries_return_to_and_answers_303_there(app: LiveApp) -> None:
    with app.client() as client:
        sign_up_verified(client)
        page = client.get("/login", params={"return_to": GOOD})
        assert hidden_return_to(page) == GOOD
        # A wrong password: the page comes back, still carrying it.
        wrong = client.post(
            "/login",
            data={
                "email": "ada@example.com",
                "password": "not the password at all",
                "csrf_token": csrf(page),
                "return_to": GOOD,
            },
        )
        assert wrong.status_code == 401
        assert hidden_return_to(wrong) == GOOD
        done = client.post("/login", data={**ACCOUNT, "csrf_token": csrf(wrong), "return_to": GOOD})
        assert done.status_code == 303
        assert done.headers["location"] == GOOD


def test_r59_sign_up_then_verify_contact_goes_back(app: LiveApp) -> None:
    with app.client() as client:
        created = client.post(
            "/create-user",
            json={
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+14155550100",
                "password": PASSWORD,
                "preference": "email",
                "return_to": GOOD,
            },
        )
        assert created.status_code == 201
        assert created.json()["redirect"] == "/verify-contact"
        message = wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
        verified = client.post("/verify-contact", json={"token": find_code(message["text"])})
        assert verified.status_code == 200
        assert verified.json()["redirect"] == GOOD


def test_r59_the_sign_up_form_keeps_return_to_from_the_page(app: LiveApp) -> None:
    with app.client() as client:
        page = client.get("/new-user", params={"return_to": GOOD})
        assert hidden_return_to(page) == GOOD
        created = client.post(
            "/create-user",
            data={
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "phone": "+14155550100",
                "password": PASSWORD,
                "preference": "email",
                "csrf_token": csrf(page),
                "return_to": GOOD,
            },
        )
        assert created.status_code == 303
        assert created.headers["location"] == "/verify-contact"
        message = wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
        form = client.get("/verify-contact")
        verified = client.post(
            "/verify-contact",
            data={"token": find_code(message["text"]), "csrf_token": csrf(form)},
        )
        assert verified.status_code == 303
        assert verified.headers["location"] == GOOD


def test_r59_a_taken_address_at_sign_up_keeps_return_to_the_same_way(app: LiveApp) -> None:
    """R54: a sign-up with a taken address leaves the session as a new one does."""
    with app.client() as first:
        sign_up_verified(first)
    with app.client() as client:
        page = client.get("/new-user", params={"return_to": GOOD})
        taken = sign_up(client)
        assert taken.status_code == 201
        again = client.get("/new-user")
        assert hidden_return_to(page) == hidden_return_to(again) == GOOD


def test_r59_forgot_password_to_sign_in_goes_back(app: LiveApp) -> None:
    with app.client() as client:
        sign_up_verified(client)
        assert client.get("/forgot-password", params={"return_to": GOOD}).status_code == 200
        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        message = wait_for_dev_message(
            client, to="ada@example.com", notification="password-reset-token"
        )
        assert client.post("/verify-token", json={"token": find_code(message["text"])}).is_success
        done = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        # No sign-in after a reset (R28): on to /login, which then goes back.
        assert done.json()["redirect"] == "/login"
        assert hidden_return_to(client.get("/login")) == GOOD
        login = client.post("/login", json={"email": "ada@example.com", "password": NEW_PASSWORD})
        assert login.json()["redirect"] == GOOD


def test_r59_forgot_password_takes_return_to_in_the_json_body(app: LiveApp) -> None:
    with app.client() as client:
        sign_up_verified(client)
        sent = client.post("/send-token", json={"email": "ada@example.com", "return_to": GOOD})
        assert sent.status_code == 202
        message = wait_for_dev_message(
            client, to="ada@example.com", notification="password-reset-token"
        )
        client.post("/verify-token", json={"token": find_code(message["text"])})
        client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        login = client.post("/login", json={"email": "ada@example.com", "password": NEW_PASSWORD})
        assert login.json()["redirect"] == GOOD


@pytest.mark.parametrize("value", [123, ["https://app.example.org/"], {"a": 1}])
def test_r59_return_to_of_the_wrong_type_is_a_422(app: LiveApp, value: object) -> None:
    with app.client() as client:
        answer = client.post("/login", json={**ACCOUNT, "return_to": value})
        assert answer.status_code == 422
        assert answer.json()["fields"] == {"return_to": answer.json()["fields"]["return_to"]}
