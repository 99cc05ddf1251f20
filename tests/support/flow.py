"""Driving the reset flow over HTTP, as a JSON client with a cookie jar would."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx

from resetflow.accounts.models import Channel
from resetflow.accounts.service import NewAccount
from resetflow.clock import Clock
from resetflow.config import Settings
from resetflow.services import Services, build_services

CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase for ada"


def find_code(text: str) -> str:
    match = CODE.search(text)
    assert match, f"no 6-digit code in {text!r}"
    return match.group(1)


def dev_mailbox(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/dev/outbox.json")
    assert response.status_code == 200
    messages: list[dict[str, Any]] = response.json()
    return messages


def wait_for_dev_message(
    client: httpx.Client, *, to: str, notification: str, after: int = 0, timeout: float = 15
) -> dict[str, Any]:
    """The newest dev-mailbox message to ``to`` of this kind with an id above ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in dev_mailbox(client):
            if (
                message["to"] == to
                and message["notification"] == notification
                and message["id"] > after
            ):
                return message
        time.sleep(0.05)
    raise AssertionError(f"no {notification} message to {to}")


def sign_up(
    client: httpx.Client,
    *,
    name: str = "Ada Lovelace",
    email: str = "ada@example.com",
    phone: str = "+14155550100",
    preference: str = "email",
    password: str = PASSWORD,
) -> httpx.Response:
    return client.post(
        "/create-user",
        json={
            "name": name,
            "email": email,
            "phone": phone,
            "password": password,
            "preference": preference,
        },
    )


def sign_up_verified(client: httpx.Client, **details: Any) -> None:
    """Create an account and verify its preferred contact through the dev mailbox."""
    response = sign_up(client, **details)
    assert response.status_code == 201, response.text
    preference = details.get("preference", "email")
    to = (
        details.get("email", "ada@example.com")
        if preference == "email"
        else details.get("phone", "+14155550100")
    )
    message = wait_for_dev_message(client, to=to, notification="verify-contact")
    verified = client.post("/verify-contact", json={"token": find_code(message["text"])})
    assert verified.status_code == 200, verified.text
    assert client.post("/logout", json={}).status_code == 200


async def operator_account(
    services: Services,
    *,
    name: str = "Ada",
    email: str = "ada@example.com",
    phone: str = "+14155550100",
    preference: Channel = Channel.EMAIL,
    password: str = PASSWORD,
) -> str:
    """An account with both contacts verified, made as ``resetflow users create`` makes
    it (through the services, no code sent); returns its id."""
    user_id = await services.accounts.sign_up(
        NewAccount(name=name, email=email, phone=phone, password=password, preference=preference),
        attempt_id="setup",
        verify=False,
    )
    assert user_id is not None
    return user_id


async def verified_and_unverified_accounts(services: Services) -> None:
    """ada@example.com / +14155550100 with both contacts verified (:func:`operator_account`),
    then eve@example.com / +14155550101 signed up and never verified (a code was sent)."""
    await operator_account(services)
    await services.accounts.sign_up(
        NewAccount(
            name="Ada",
            email="eve@example.com",
            phone="+14155550101",
            password=PASSWORD,
            preference=Channel.EMAIL,
        ),
        attempt_id="setup",
        verify=True,
    )


async def trace_each_reset_kind(services: Services, seen: list[str]) -> dict[str, list[str]]:
    """Ask for a reset as each kind of address of :func:`verified_and_unverified_accounts`
    (known, unknown, unverified, then known again, over its per-address limit), and keep
    what a tracer appended to ``seen`` during each, by kind (R20: they must be alike)."""
    traces: dict[str, list[str]] = {}
    for label, email in [
        ("known", "ada@example.com"),
        ("unknown", "nobody@example.com"),
        ("unverified", "eve@example.com"),
        ("limited", "ada@example.com"),
    ]:
        seen.clear()
        await services.recovery.request_reset(email=email, phone=None, attempt_id="a")
        traces[label] = list(seen)
    return traces


def create_verified_account(
    settings: Settings,
    *,
    name: str = "Ada",
    email: str = "ada@example.com",
    phone: str = "+14155550100",
    preference: Channel = Channel.EMAIL,
    clock: Clock | None = None,
) -> str:
    """:func:`operator_account` on services of its own (for tests outside an event loop)."""

    async def create() -> str:
        services = build_services(settings, clock=clock)
        try:
            return await operator_account(
                services, name=name, email=email, phone=phone, preference=preference
            )
        finally:
            await services.close()

    return asyncio.run(create())
