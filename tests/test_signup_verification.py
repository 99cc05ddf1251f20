"""Sign-up and contact verification, as an outside review attacked them (R53, R54, R55).

Each test runs on SQLite (in-process limits and sessions in the database) and on
PostgreSQL + Redis (sessions and limits in Redis), through the running service.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from resetflow.accounts.models import User
from resetflow.clock import FrozenClock
from resetflow.config import Settings
from resetflow.services import build_services
from resetflow.storage.users import UserRepository
from tests.conftest import LiveApp
from tests.support.flow import (
    PASSWORD,
    create_verified_account,
    dev_mailbox,
    find_code,
    sign_up,
    wait_for_dev_message,
)

# The production per-destination limits (1/minute;3/15 minutes;10/day): the tests of the
# limits use them, not the generous ones of the flow tests.
PRODUCTION_DESTINATION_LIMIT = Settings.model_fields["limit_destination"].default


def _account(settings: Settings, email: str) -> User | None:
    async def read() -> User | None:
        services = build_services(settings)
        try:
            async with services.database.read() as conn:
                return await UserRepository(conn).by_email(email)
        finally:
            await services.close()

    return asyncio.run(read())


def _wait_until_outbox_settles(client: httpx.Client, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").json()["outbox_pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("/readyz").json()["outbox_pending"] == 0


def test_r53_a_limited_sign_up_leaves_the_contacts_unverified(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    """The review's attack: a sign-up with the victim's email and a taken phone uses up
    the email's destination limit (nothing is created); a second one at once with a fresh
    phone found the limit closed and marked email AND phone verified without any code."""
    app = live_app(limit_destination=PRODUCTION_DESTINATION_LIMIT, **backend)
    create_verified_account(app.settings, email="owner@example.com", phone="+14155550100")
    with app.client() as attacker:
        first = sign_up(attacker, name="Mallory", email="victim@example.com", phone="+14155550100")
        assert first.status_code == 201
        second = sign_up(attacker, name="Mallory", email="victim@example.com", phone="+14155550177")
        assert second.status_code == 201
        created = _account(app.settings, "victim@example.com")
        assert created is not None, "the limited sign-up still creates the account"
        assert created.phone == "+14155550177"
        assert created.email_verified_at is None and created.phone_verified_at is None
        assert created.verified_channels == []
        # Told that no code could go out, and to ask again later (resend).
        assert "new code" in second.json()["message"]
        # Not signed in either: nothing was proved.
        account = attacker.get("/account", follow_redirects=False)
        assert account.status_code == 303 and account.headers["location"] == "/login"
        _wait_until_outbox_settles(attacker)
        assert not [m for m in dev_mailbox(attacker) if m["to"] == "victim@example.com"]


def _mask(text: str) -> str:
    """Random values (CSRF tokens, session ids) out of a body."""
    return re.sub(r"[A-Za-z0-9_-]{32,}", "<random>", text)


def _shape(response: httpx.Response) -> tuple[Any, ...]:
    """Status, body (random values masked), headers but for random ones, and the cookies'
    names and attributes."""
    cookies = sorted(
        re.sub(r"^([^=]+)=[^;]*", r"\1=<value>", header)
        for header in response.headers.get_list("set-cookie")
    )
    headers = sorted(
        (name, value)
        for name, value in response.headers.items()
        if name not in {"date", "set-cookie", "x-request-id", "content-length"}
    )
    return response.status_code, _mask(response.text), headers, cookies


def _sign_up_sequence(client: httpx.Client, *, email: str, phone: str) -> list[tuple[Any, ...]]:
    shapes = [_shape(sign_up(client, name="Grace Hopper", email=email, phone=phone))]
    for method, path, body in (
        ("GET", "/account", None),
        ("GET", "/verify-contact", None),
        ("POST", "/verify-contact/resend", {}),
        ("GET", "/verify-contact", None),
        ("POST", "/verify-contact", {"token": "000000"}),
        ("GET", "/account", None),
    ):
        response = client.request(method, path, json=body, follow_redirects=False)
        shapes.append(_shape(response))
    return shapes


@pytest.mark.parametrize("taken", ["email", "phone"])
def test_r54_sign_up_with_a_taken_contact_leaves_the_browser_as_a_new_one_does(
    live_app: Callable[..., LiveApp], backend: dict[str, Any], taken: str
) -> None:
    """R54, R52: the whole sequence after /create-user (the account page, the verify page,
    a resend, a wrong code) answers alike for a taken and a new contact: nobody is signed
    in before a code is typed, in either case."""
    app = live_app(**backend)
    create_verified_account(app.settings, email="ada@example.com", phone="+14155550100")
    with app.client() as client:
        taken_shapes = _sign_up_sequence(
            client,
            email="ada@example.com" if taken == "email" else "grace@example.com",
            phone="+14155550100" if taken == "phone" else "+14155550143",
        )
    with app.client() as client:
        new_shapes = _sign_up_sequence(client, email="new@example.com", phone="+14155550144")
    for step, (was_taken, was_new) in enumerate(zip(taken_shapes, new_shapes, strict=True)):
        assert was_taken == was_new, f"step {step}"
    assert new_shapes[1][0] == 303  # /account: not signed in
    assert new_shapes[2][0] == 200  # /verify-contact is reachable
    assert new_shapes[5][0] == 400 and '"invalid_code"' in new_shapes[5][1]


def test_r54_the_right_code_signs_the_new_account_in_under_a_new_session_id(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    """After sign-up the browser is anonymous; the right code verifies the contact and
    signs in, under a new session id (R24), answered 200 {"redirect": "/", "message"}."""
    app = live_app(**backend)
    with app.client() as client:
        assert sign_up(client).status_code == 201
        assert client.get("/account", follow_redirects=False).status_code == 303
        message = wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
        before = dict(client.cookies)
        done = client.post("/verify-contact", json={"token": find_code(message["text"])})
        assert done.status_code == 200
        assert done.json()["redirect"] == "/" and "verified" in done.json()["message"]
        assert dict(client.cookies) != before
        page = client.get("/account", follow_redirects=False)
        assert page.status_code == 200 and 'badge">verified' in page.text
    with httpx.Client(base_url=app.url, cookies=before) as old:
        assert old.get("/account", follow_redirects=False).status_code == 303
    created = _account(app.settings, "ada@example.com")
    assert created is not None and [c.value for c in created.verified_channels] == ["email"]
    with app.client() as client:
        login = client.post("/login", json={"email": "ada@example.com", "password": PASSWORD})
        assert login.status_code == 200


@pytest.mark.parametrize("preference", ["email", "sms"])
def test_r55_account_exists_notices_count_against_the_address_they_go_to(
    live_app: Callable[..., LiveApp], backend: dict[str, Any], preference: str
) -> None:
    """R55: sign-ups that reuse a registered person's phone (or email) as the contact
    they do NOT prefer used to be counted against the preferred (fresh) contact, so every
    one of them texted (mailed) the owner. Now at most the limit's number get through."""
    app = live_app(limit_destination=PRODUCTION_DESTINATION_LIMIT, **backend)
    create_verified_account(app.settings, email="ada@example.com", phone="+14155550100")
    target = "+14155550100" if preference == "email" else "ada@example.com"
    with app.client() as client:
        for n in range(5):
            response = sign_up(
                client,
                name="Mallory",
                email="ada@example.com" if preference == "sms" else f"m{n}@example.com",
                phone="+14155550100" if preference == "email" else f"+1415555012{n}",
                preference=preference,
            )
            assert response.status_code == 201
        _wait_until_outbox_settles(client)
        notices = [
            m
            for m in dev_mailbox(client)
            if m["to"] == target and m["notification"] == "account-exists"
        ]
    # The first rule of the production limit is 1 a minute.
    assert len(notices) == 1


def _holder(settings: Settings, phone: str) -> User | None:
    async def read() -> User | None:
        services = build_services(settings)
        try:
            async with services.database.read() as conn:
                return await UserRepository(conn).by_phone(phone)
        finally:
            await services.close()

    return asyncio.run(read())


def _newest_id(client: httpx.Client) -> int:
    return max((m["id"] for m in dev_mailbox(client)), default=0)


@pytest.mark.parametrize("attacker_verified_own_phone", [False, True])
def test_an_address_typed_by_someone_else_does_not_keep_its_owner_out(
    live_app: Callable[..., LiveApp], backend: dict[str, Any], attacker_verified_own_phone: bool
) -> None:
    """Issue 11 item 7: Mallory signs up with Ada's email and never verifies it (she
    cannot). Ada's own sign-up is answered exactly like any new one (R52, R54), her code
    verifies the address, and Mallory's account loses it: deleted when nothing else of
    it is verified, else left with only its verified phone. It used to be 'taken' for
    ever: Ada could neither sign up nor recover."""
    app = live_app(**backend)
    with app.client() as mallory:
        assert (
            sign_up(
                mallory,
                name="Mallory",
                email="ada@example.com",
                phone="+14155550166",
                preference="sms" if attacker_verified_own_phone else "email",
            ).status_code
            == 201
        )
        if attacker_verified_own_phone:
            text = wait_for_dev_message(mallory, to="+14155550166", notification="verify-contact")
            assert (
                mallory.post("/verify-contact", json={"token": find_code(text["text"])}).status_code
                == 200
            )
    held = _holder(app.settings, "+14155550166")
    assert held is not None and held.email == "ada@example.com"
    with app.client() as ada:
        shapes = _sign_up_sequence(ada, email="ada@example.com", phone="+14155550100")
    with app.client() as grace:
        assert shapes == _sign_up_sequence(grace, email="grace@example.com", phone="+14155550101")
    with app.client() as ada:
        _wait_until_outbox_settles(ada)
        after = _newest_id(ada)
        assert sign_up(ada, email="ada@example.com", phone="+14155550100").status_code == 201
        message = wait_for_dev_message(
            ada, to="ada@example.com", notification="verify-contact", after=after
        )
        assert not [
            m for m in dev_mailbox(ada) if m["notification"] == "account-exists" and m["id"] > after
        ]
        done = ada.post("/verify-contact", json={"token": find_code(message["text"])})
        assert done.status_code == 200
        assert ada.get("/account", follow_redirects=False).status_code == 200
    ours = _account(app.settings, "ada@example.com")
    assert ours is not None and ours.phone == "+14155550100"
    assert [c.value for c in ours.verified_channels] == ["email"]
    left = _holder(app.settings, "+14155550166")
    if attacker_verified_own_phone:
        assert left is not None and left.email is None
        assert [c.value for c in left.verified_channels] == ["sms"]
    else:
        assert left is None
    # Recovery reaches Ada's account now.
    with app.client() as ada:
        after = _newest_id(ada)
        assert ada.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        wait_for_dev_message(
            ada, to="ada@example.com", notification="password-reset-token", after=after
        )


def test_sign_ups_that_never_verify_expire_after_the_ttl(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    """RESETFLOW_UNVERIFIED_TTL_HOURS: the worker's housekeeping deletes a sign-up that
    verified nothing once it is older than the TTL (time moved by a frozen clock); a
    verified account stays."""
    clock = FrozenClock(datetime.now(UTC))
    app = live_app(clock=clock, unverified_ttl_hours=2, **backend)
    with app.client() as client:
        assert sign_up(client, email="mallory@example.com", phone="+14155550166").status_code == 201
    create_verified_account(app.settings, clock=clock)

    def housekeeping() -> None:
        async def run() -> None:
            services = build_services(app.settings, clock=clock)
            try:
                await services.worker.housekeeping()
            finally:
                await services.close()

        asyncio.run(run())

    clock.advance(2 * 3600 - 60)
    housekeeping()
    assert _account(app.settings, "mallory@example.com") is not None
    clock.advance(120)
    housekeeping()
    assert _account(app.settings, "mallory@example.com") is None
    assert _account(app.settings, "ada@example.com") is not None
    # The address is free again, and the expired sign-up's code opens nothing.
    with app.client() as client:
        assert client.post("/verify-contact", json={"token": "123456"}).status_code == 400


def test_a_contact_change_takes_over_an_address_only_typed_at_a_sign_up(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    """Issue 11 item 7, the change path: Mallory typed Ada's new address at a sign-up
    and never verified it. Ada's change to it is confirmed with her code (it used to be
    refused as taken), and Mallory's account, with nothing verified, is gone."""
    app = live_app(**backend)
    create_verified_account(app.settings, email="ada@example.com", phone="+14155550100")
    with app.client() as mallory:
        assert (
            sign_up(mallory, name="Mallory", email="ada@new.example", phone="+14155550166")
        ).status_code == 201
        _wait_until_outbox_settles(mallory)
    with app.client() as ada:
        after = _newest_id(ada)
        assert (
            ada.post("/login", json={"email": "ada@example.com", "password": PASSWORD}).status_code
            == 200
        )
        asked = ada.post(
            "/account/contact",
            json={"channel": "email", "value": "ada@new.example", "password": PASSWORD},
        )
        assert asked.status_code == 202
        message = wait_for_dev_message(
            ada, to="ada@new.example", notification="verify-contact", after=after
        )
        done = ada.post("/account/confirm-contact", json={"token": find_code(message["text"])})
        assert done.status_code == 200, done.text
    ours = _account(app.settings, "ada@new.example")
    assert ours is not None and ours.phone == "+14155550100" and ours.email_verified_at
    assert _holder(app.settings, "+14155550166") is None


def test_r61_accounts_resetflow_removes_itself_reach_the_host_app_as_user_deleted(
    live_app: Callable[..., LiveApp],
) -> None:
    """A sign-up taken over (another account verified the address it only typed) and one
    expired by the TTL were announced as user.created: the host app hears of their end
    too, with the reason and without the unproven contacts."""
    from tests.support.webhooks import new_secret, webhook_receiver

    # (Signatures are checked in tests/test_events_webhooks.py: here the frozen clock,
    # moved 2 h ahead, stamps them in the future.)
    secret = new_secret()
    clock = FrozenClock(datetime.now(UTC))
    with webhook_receiver() as receiver:
        app = live_app(
            clock=clock, unverified_ttl_hours=2, webhook_url=receiver.url, webhook_secret=secret
        )
        with app.client() as mallory:
            assert sign_up(mallory, name="Mallory", phone="+14155550166").status_code == 201
            assert (
                sign_up(mallory, email="late@example.com", phone="+14155550177").status_code == 201
            )
        created = {
            r.event["data"]["email"]: r.event["data"]["user_id"]
            for r in receiver.wait_for("user.created", count=2)
        }
        with app.client() as ada:
            # Ada verifies ada@example.com: Mallory's first account goes.
            after = _newest_id(ada)
            assert sign_up(ada).status_code == 201
            code = wait_for_dev_message(
                ada, to="ada@example.com", notification="verify-contact", after=after
            )
            assert ada.post("/verify-contact", json={"token": find_code(code["text"])}).is_success
        clock.advance(2 * 3600 + 60)

        async def housekeeping() -> None:
            services = build_services(app.settings, clock=clock)
            try:
                await services.worker.housekeeping()
            finally:
                await services.close()

        asyncio.run(housekeeping())
        deleted = {
            r.event["data"]["user_id"]: r for r in receiver.wait_for("user.deleted", count=2)
        }
    assert deleted[created["ada@example.com"]].event["data"]["reason"] == "taken_over"
    assert deleted[created["late@example.com"]].event["data"]["reason"] == "unverified_expired"
    for received in deleted.values():
        assert set(received.event["data"]) == {"user_id", "reason"}
