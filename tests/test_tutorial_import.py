"""``resetflow users import-tutorial``: the tutorial's accounts, from its Redis laid out
exactly as its ``models/users.js`` writes them (``@vercel/kv`` ``set`` of a JSON object
under ``users:<sha3-256 of phone or email>:<email>:<phone>``), with the unsalted SHA3-256
password hash never stored: wrapped in Argon2id at import, replaced by plain Argon2id at
the first sign-in, which also asks to confirm a contact (they arrive unverified).

The tutorial's keys have no prefix of their own: this test writes keys whose email holds
a random marker, imports with ``--pattern`` matching only those, and deletes only them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from resetflow.storage.tables import users
from tests.conftest import LiveApp
from tests.support.flow import find_code, wait_for_dev_message
from tests.support.processes import run_resetflow
from tests.test_admin_api import db_query

TUTORIAL_PASSWORD = "tutorial days were simpler"


def tutorial_record(
    *, name: str, email: str, phone: str | None, password: str, pref: str
) -> tuple[str, dict[str, Any]]:
    """What the tutorial's createUser writes (JavaScript's template string turns a missing
    phone into "undefined" in the key; JSON.stringify drops it from the value)."""
    user_id = hashlib.sha3_256((phone or email).encode()).hexdigest()
    key = f"users:{user_id}:{email}:{phone if phone else 'undefined'}"
    value: dict[str, Any] = {
        "user_id": key,
        "hashed_password": hashlib.sha3_256(password.encode()).hexdigest(),
        "name": name,
        "email": email,
        "preference": pref,
    }
    if phone:
        value["phone"] = phone
    return key, value


@pytest.fixture
def tutorial_redis(
    redis_server: str,
) -> Iterator[tuple[str, str, list[tuple[str, dict[str, Any]]]]]:
    marker = secrets.token_hex(6)
    records = [
        tutorial_record(
            name="Ada",
            email=f"ada.{marker}@example.com",
            phone="+14155550100",
            password=TUTORIAL_PASSWORD,
            pref="email",
        ),
        tutorial_record(
            name="Bob",
            email=f"bob.{marker}@example.com",
            phone=None,
            password="another tutorial password",
            pref="email",
        ),
        tutorial_record(
            name="Cy",
            email=f"cy.{marker}@example.com",
            phone="+14155550102",
            password="x",
            pref="phone",
        ),
    ]

    async def put() -> None:
        client = Redis.from_url(redis_server)
        try:
            for key, value in records:
                await client.set(key, json.dumps(value), ex=600)
            await client.set(f"users:broken:{marker}@example.com:x", "not json", ex=600)
        finally:
            await client.aclose()

    async def remove() -> None:
        client = Redis.from_url(redis_server)
        try:
            keys = [key async for key in client.scan_iter(match=f"users:*{marker}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    asyncio.run(put())
    try:
        yield redis_server, marker, records
    finally:
        asyncio.run(remove())


def test_tutorial_accounts_import_with_their_passwords_wrapped_then_upgraded(
    live_app: Callable[..., LiveApp],
    tutorial_redis: tuple[str, str, list[tuple[str, dict[str, Any]]]],
) -> None:
    redis_url, marker, records = tutorial_redis
    app = live_app(return_to_allowed="https://app.example.org/")
    env = {"RESETFLOW_DATA_DIR": str(app.settings.data_dir)}
    cwd = app.settings.data_dir.parent
    args = ("users", "import-tutorial", "--redis-url", redis_url, "--pattern", f"users:*{marker}*")
    first = run_resetflow(*args, env=env, cwd=cwd)
    assert first.returncode == 1, first.stderr  # the one broken record
    results = [json.loads(line) for line in first.stdout.splitlines()]
    assert sorted(r.get("status", r.get("error")) for r in results) == [
        "created",
        "created",
        "created",
        "malformed_request",
    ]
    assert "created 3, already there 0, failed 1" in first.stderr

    # The unsalted SHA3 digests are nowhere in the database, only wrapped in Argon2id.
    rows = db_query(app, select(users).where(users.c.email.like(f"%{marker}%")))
    assert len(rows) == 3
    digests = {value["hashed_password"] for _, value in records}
    for row in rows:
        assert row.password_hash.startswith("$resetflow-sha3-argon2id$$argon2id$")
        assert not any(digest in repr(tuple(row)) for digest in digests)
        assert row.email_verified_at is None and row.phone_verified_at is None
    by_email = {row.email: row for row in rows}
    assert by_email[f"bob.{marker}@example.com"].phone is None
    assert by_email[f"cy.{marker}@example.com"].preference == "sms"

    # Running it again creates nothing twice.
    again = run_resetflow(*args, env=env, cwd=cwd)
    assert "created 0, already there 3, failed 1" in again.stderr

    ada = f"ada.{marker}@example.com"
    with app.client() as browser:
        wrong = browser.post("/login", json={"email": ada, "password": "tutorial days"})
        assert wrong.status_code == 401
        signed_in = browser.post(
            "/login",
            json={
                "email": ada,
                "password": TUTORIAL_PASSWORD,
                "return_to": "https://app.example.org/welcome",
            },
        )
        assert signed_in.status_code == 200, signed_in.text
        # No verified contact yet: confirm one first, with a code sent to it.
        assert signed_in.json()["redirect"] == "/verify-contact"
        message = wait_for_dev_message(browser, to=ada, notification="verify-contact")
        verified = browser.post("/verify-contact", json={"token": find_code(message["text"])})
        assert verified.status_code == 200, verified.text
        # ... and then on to where the sign-in was going.
        assert verified.json()["redirect"] == "https://app.example.org/welcome"
    [row] = db_query(app, select(users).where(users.c.email == ada))
    assert row.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert row.email_verified_at is not None
    with app.client() as browser:
        again_in = browser.post("/login", json={"email": ada, "password": TUTORIAL_PASSWORD})
        assert again_in.json()["redirect"] == "/account"
