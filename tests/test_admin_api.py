"""The operator API (SPEC §9, R60): bearer tokens made by ``resetflow admin-tokens``, the
users resource, bulk import (HTTP and CLI) and the help-desk actions. On SQLite and
PostgreSQL (the ``database_url`` fixture), against a live server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from resetflow.logs import QUIET_LOGGERS, JsonFormatter
from resetflow.services import build_services
from resetflow.storage.admin_tokens import AdminTokenRepository, new_admin_token
from resetflow.storage.database import Database
from resetflow.storage.tables import admin_tokens, users
from tests.conftest import LiveApp
from tests.support.flow import PASSWORD, find_code, wait_for_dev_message
from tests.support.processes import run_resetflow

API = "/admin/api/v1"
STRONG = "purple elephants dance at midnight"


def make_token(app: LiveApp, name: str = "ops") -> str:
    token = new_admin_token()

    async def create() -> None:
        services = build_services(app.settings)
        try:
            async with services.database.write() as conn:
                await AdminTokenRepository(conn).create(name, token, now=services.clock.now())
        finally:
            await services.close()

    asyncio.run(create())
    return token


def db_query(app: LiveApp, statement: Any) -> list[Any]:
    async def run() -> list[Any]:
        database = Database(app.settings.resolved_database_url)
        try:
            async with database.read() as conn:
                return list((await conn.execute(statement)).all())
        finally:
            await database.close()

    return asyncio.run(run())


@pytest.fixture
def api_app(live_app: Callable[..., LiveApp], database_url: str) -> LiveApp:
    return live_app(database_url=database_url)


@pytest.fixture
def api(api_app: LiveApp) -> Iterator[httpx.Client]:
    token = make_token(api_app)
    with httpx.Client(
        base_url=api_app.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


def new_user(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+14155550100",
        "preference": "email",
        "locale": "en",
        "password": STRONG,
        "email_verified": True,
        "phone_verified": False,
    }
    body.update(overrides)
    return body


# -- tokens (R60) ----------------------------------------------------------------------


def test_r60_admin_api_is_absent_without_tokens_then_needs_a_valid_bearer_token(
    live_app: Callable[..., LiveApp], caplog: pytest.LogCaptureFixture
) -> None:
    for name in QUIET_LOGGERS:  # as configure_logging() sets them in serve
        caplog.set_level(logging.WARNING, logger=name)
    caplog.set_level(logging.DEBUG)
    app = live_app()
    env = {"RESETFLOW_DATA_DIR": str(app.settings.data_dir)}
    cwd = app.settings.data_dir.parent
    with app.client() as client:
        # No token exists: the tree is indistinguishable from a path that does not exist.
        unknown = client.get("/no/such/path")
        for path in (f"{API}/users?email=a@example.com", f"{API}/users/abc"):
            answer = client.get(path, headers={"Authorization": "Bearer rfat_whatever"})
            assert answer.status_code == 404
            assert answer.json() == unknown.json()

        made = run_resetflow("admin-tokens", "create", "--name", "deploy-bot", env=env, cwd=cwd)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        assert token.startswith("rfat_") and len(token) >= 5 + 43  # 256 random bits
        again = run_resetflow("admin-tokens", "create", "--name", "deploy-bot", env=env, cwd=cwd)
        assert again.returncode == 1

        # Only the SHA-256 is stored; the token appears nowhere in the database.
        rows = db_query(app, select(admin_tokens))
        assert [row.token_hash for row in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        dump = db_query(app, text("SELECT * FROM admin_tokens"))
        assert token not in repr(dump)

        for headers in (
            {},
            {"Authorization": "Bearer"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": "Bearer rfat_" + "A" * 43},
        ):
            refused = client.get(f"{API}/users?email=a@example.com", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.json()["code"] == "admin_token_invalid"

        good = {"Authorization": f"Bearer {token}"}
        found = client.get(f"{API}/users?email=a@example.com", headers=good)
        assert found.status_code == 200 and found.json() == {"users": []}
        # The API never sets or reads a session cookie.
        assert "set-cookie" not in found.headers

        listed = run_resetflow("admin-tokens", "list", env=env, cwd=cwd)
        assert "deploy-bot" in listed.stdout and "active" in listed.stdout
        assert token not in listed.stdout

        revoked = run_resetflow("admin-tokens", "revoke", "deploy-bot", env=env, cwd=cwd)
        assert revoked.returncode == 0, revoked.stderr
        # With every token revoked the tree is absent again.
        assert client.get(f"{API}/users?email=a@example.com", headers=good).status_code == 404
        other = make_token(app, "other")
        assert client.get(f"{API}/users?email=a@example.com", headers=good).status_code == 401
        ok = client.get(f"{API}/users?email=a@example.com", headers=_bearer(other))
        assert ok.status_code == 200

    audit = run_resetflow("audit", "--limit", "100", "--json", env=env, cwd=cwd)
    assert "deploy-bot" in audit.stdout and "admin_call" in audit.stdout
    assert token not in audit.stdout
    assert "rfat_" not in audit.stdout
    # Nor in the server's logs (R44), though every call above was logged and audited.
    formatter = JsonFormatter()
    log_text = "\n".join(formatter.format(record) for record in caplog.records)
    assert "admin_call" in log_text and "deploy-bot" in log_text
    assert token not in log_text and other not in log_text


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_r60_admin_api_cannot_be_driven_by_an_operators_session_cookie(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    make_token(app)
    with app.client() as browser:
        browser.post(f"{API}/users", json=new_user())  # no bearer: refused before anything
        created = browser.post(
            "/create-user",
            json={
                "name": "Grace",
                "email": "grace@example.com",
                "phone": "+14155550111",
                "password": PASSWORD,
                "preference": "email",
            },
        )
        assert created.status_code == 201
        assert browser.cookies  # a signed-in session
        answer = browser.post(f"{API}/users", json=new_user(email="eve@example.com"))
        assert answer.status_code == 401
    assert db_query(app, select(users.c.id).where(users.c.email == "eve@example.com")) == []


# -- users -----------------------------------------------------------------------------


def test_admin_users_create_find_patch_delete(api_app: LiveApp, api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    paths = schema["paths"]
    assert {"post", "get"} <= set(paths[f"{API}/users"])
    # The token scheme is declared, so generated clients send the Bearer header.
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert paths[f"{API}/users"]["post"]["security"] == [{"HTTPBearer": []}]
    assert {"get", "patch", "delete"} <= set(paths[f"{API}/users/{{user_id}}"])
    assert "application/x-ndjson" in str(paths[f"{API}/users/import"])
    created = api.post(f"{API}/users", json=new_user())
    assert created.status_code == 201, created.text
    user = created.json()
    assert set(user) == {
        "id",
        "name",
        "email",
        "phone",
        "email_verified",
        "phone_verified",
        "preference",
        "locale",
        "created_at",
    }
    assert user["email_verified"] is True and user["phone_verified"] is False

    # Taken contacts: 409 (operators may know).
    taken = api.post(f"{API}/users", json=new_user(email="other@example.com"))
    assert taken.status_code == 409 and taken.json()["code"] == "contact_taken"
    assert api.post(f"{API}/users", json=new_user(phone=None)).status_code == 409

    # Strict bodies and the password policy.
    assert (
        api.post(f"{API}/users", json={**new_user(email="b@example.com"), "x": 1}).status_code
        == 422
    )
    both = new_user(email="b@example.com", password_hash="$2b$12$" + "a" * 53)
    assert api.post(f"{API}/users", json=both).status_code == 422
    weak = api.post(f"{API}/users", json=new_user(email="b@example.com", password="password"))
    assert weak.status_code == 422 and weak.json()["code"] == "weak_password"
    unknown_hash = new_user(email="b@example.com", password=None, password_hash="md5$abc$def")
    del unknown_hash["password"]
    refused = api.post(f"{API}/users", json=unknown_hash)
    assert refused.status_code == 422
    assert refused.json()["code"] == "unsupported_password_hash"
    not_json = api.post(f"{API}/users", content=b"name=x", headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 415

    # Exact, normalised look-ups.
    by_email = api.get(f"{API}/users", params={"email": "  ADA@Example.COM "})
    assert by_email.status_code == 200 and by_email.json()["users"] == [user]
    by_phone = api.get(f"{API}/users", params={"phone": "+1 415 555 0100"})
    assert by_phone.json()["users"] == [user]
    assert api.get(f"{API}/users", params={"email": "ada@example"}).json() == {"users": []}
    assert api.get(f"{API}/users").status_code == 422
    assert api.get(f"{API}/users/{user['id']}").json() == user
    missing = api.get(f"{API}/users/{'f' * 32}")
    assert missing.status_code == 404 and missing.json()["code"] == "user_not_found"
    assert api.get(f"{API}/users/{'0' * 32}").status_code == 404  # the decoy account

    # A changed contact is unverified unless the patch says otherwise.
    patched = api.patch(f"{API}/users/{user['id']}", json={"email": "Ada.L@Example.com"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["email"] == "ada.l@example.com"
    assert patched.json()["email_verified"] is False
    patched = api.patch(
        f"{API}/users/{user['id']}",
        json={"phone": "+14155550199", "phone_verified": True, "name": "Ada", "locale": "es"},
    )
    body = patched.json()
    assert (body["phone"], body["phone_verified"], body["name"], body["locale"]) == (
        "+14155550199",
        True,
        "Ada",
        "es",
    )
    second = api.post(f"{API}/users", json=new_user(email="b@example.com", phone="+14155550101"))
    assert second.status_code == 201
    clash = api.patch(f"{API}/users/{second.json()['id']}", json={"email": "ada.l@example.com"})
    assert clash.status_code == 409
    assert api.patch(f"{API}/users/{user['id']}", json={"password": STRONG}).status_code == 422
    assert api.patch(f"{API}/users/{'f' * 32}", json={"name": "x"}).status_code == 404

    deleted = api.delete(f"{API}/users/{user['id']}")
    assert deleted.status_code == 204
    assert api.get(f"{API}/users/{user['id']}").status_code == 404
    assert api.delete(f"{API}/users/{user['id']}").status_code == 404
    assert db_query(api_app, select(users.c.id).where(users.c.id == user["id"])) == []


def test_admin_help_desk_revokes_sessions_and_sends_recovery(
    api_app: LiveApp, api: httpx.Client
) -> None:
    user = api.post(f"{API}/users", json=new_user(password=PASSWORD)).json()
    with api_app.client() as browser:
        signed_in = browser.post("/login", json={"email": "ada@example.com", "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        assert browser.get("/account").status_code == 200

        revoked = api.post(f"{API}/users/{user['id']}/sessions/revoke")
        assert revoked.status_code == 204
        assert browser.get("/account").status_code == 303  # signed out everywhere
        assert api.post(f"{API}/users/{'f' * 32}/sessions/revoke").status_code == 404

        sent = api.post(f"{API}/users/{user['id']}/recovery")
        assert sent.status_code == 202 and sent.json() == {"channel": "email"}
        message = wait_for_dev_message(
            browser, to="ada@example.com", notification="password-reset-token"
        )
        assert find_code(message["text"])
        assert api.post(f"{API}/users/{'f' * 32}/recovery").status_code == 404


def test_admin_delete_removes_codes_sessions_and_delivery_jobs(
    api_app: LiveApp, api: httpx.Client
) -> None:
    user = api.post(f"{API}/users", json=new_user(password=PASSWORD)).json()
    assert api.post(f"{API}/users/{user['id']}/recovery").status_code == 202
    with api_app.client() as browser:
        assert (
            browser.post(
                "/login", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )
        wait_for_dev_message(browser, to="ada@example.com", notification="password-reset-token")
        assert api.delete(f"{API}/users/{user['id']}").status_code == 204
        assert browser.get("/account").status_code == 303
    for table in ("one_time_codes", "delivery_jobs", "sessions"):
        count = db_query(
            api_app,
            text(f"SELECT count(*) FROM {table} WHERE user_id = :u").bindparams(u=user["id"]),
        )
        assert count[0][0] == 0, table


# -- import ----------------------------------------------------------------------------


def _lines(results: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in results.splitlines() if line.strip()]


def test_admin_import_ndjson_reports_each_line_and_creates_nothing_twice(
    api_app: LiveApp, api: httpx.Client
) -> None:
    bcrypt_hash = "$2b$04$" + "abcdefghijklmnopqrstuOabcdefghijklmnopqrstuvwxyz01234"
    good = [
        {"name": f"User {i}", "email": f"user{i}@example.com", "password_hash": bcrypt_hash}
        for i in range(3)
    ]
    body = "\n".join(
        [
            json.dumps(good[0]),
            "{not json",
            json.dumps({**good[1], "phone": "+14155550123", "phone_verified": True}),
            "",
            json.dumps({"name": "Bad", "email": "bad@example.com", "password_hash": "md5$x"}),
            json.dumps({"name": "Dup", "email": "USER0@example.com", "password_hash": bcrypt_hash}),
            "x" * 20_000,
            json.dumps({"name": "No email", "password_hash": bcrypt_hash}),
            json.dumps(good[2]),
        ]
    )

    def chunks() -> Iterator[bytes]:  # streamed in small pieces
        raw = body.encode()
        for start in range(0, len(raw), 777):
            yield raw[start : start + 777]

    answer = api.post(
        f"{API}/users/import",
        content=chunks(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    results = _lines(answer.text)
    by_line = {result["line"]: result for result in results}
    assert sorted(by_line) == [1, 2, 3, 5, 6, 7, 8, 9]
    assert by_line[1]["status"] == "created"
    assert by_line[2]["error"] == "malformed_request"
    assert by_line[3]["status"] == "created"
    assert by_line[5]["error"] == "unsupported_password_hash"
    assert by_line[6] == {"line": 6, "id": by_line[1]["id"], "status": "exists"}
    assert by_line[7]["error"] == "malformed_request"
    assert by_line[8]["error"] == "invalid_input" and "email" in by_line[8]["fields"]
    assert by_line[9]["status"] == "created"
    user3 = api.get(f"{API}/users/{by_line[3]['id']}").json()
    assert user3["phone"] == "+14155550123" and user3["phone_verified"] is True
    assert user3["email_verified"] is False

    again = _lines(
        api.post(
            f"{API}/users/import",
            content=body.encode(),
            headers={"Content-Type": "application/x-ndjson"},
        ).text
    )
    for result in again:
        if result["line"] in (1, 3, 9):
            assert result == {**by_line[result["line"]], "status": "exists"}
    count = db_query(api_app, select(users.c.id).where(users.c.email.like("user%@example.com")))
    assert len(count) == 3
    refused = api.post(f"{API}/users/import", json=good[0])
    assert refused.status_code == 415


def test_cli_import_reads_csv_and_ndjson(live_app: Callable[..., LiveApp], tmp_path: Path) -> None:
    app = live_app()
    env = {"RESETFLOW_DATA_DIR": str(app.settings.data_dir)}
    bcrypt_hash = "$2y$04$" + "abcdefghijklmnopqrstuOabcdefghijklmnopqrstuvwxyz01234"
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "name,email,phone,preference,password_hash,email_verified\n"
        f"Ada,ada@example.com,+14155550100,sms,{bcrypt_hash},yes\n"
        "Bob,bob@example.com,,email,nonsense,no\n"
        f"Cy,cy@example.com,,email,{bcrypt_hash},maybe\n"
    )
    first = run_resetflow("users", "import", str(csv_file), env=env, cwd=tmp_path)
    assert first.returncode == 1  # some lines failed
    results = {r["line"]: r for r in _lines(first.stdout)}
    assert results[2]["status"] == "created"
    assert results[3]["error"] == "unsupported_password_hash"
    assert results[4]["error"] == "malformed_request"
    assert "created 1, already there 0, failed 2" in first.stderr

    ndjson = tmp_path / "more.data"
    ndjson.write_text(
        json.dumps({"name": "Ada", "email": "ada@example.com", "password_hash": bcrypt_hash})
        + "\n"
        + json.dumps({"name": "Dee", "email": "dee@example.com", "password": STRONG})
        + "\n"
    )
    second = run_resetflow("users", "import", str(ndjson), env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    results = {r["line"]: r for r in _lines(second.stdout)}
    assert results[1] == {"line": 1, "id": results[1]["id"], "status": "exists"}
    assert results[2]["status"] == "created"
    assert "created 1, already there 1, failed 0" in second.stderr


def test_admin_import_of_a_large_body_completes_with_a_send_then_read_client(
    live_app: Callable[..., LiveApp],
) -> None:
    """httpx, like curl and requests, sends the whole body before it reads the answer:
    an import answering while still reading would fill both directions' buffers and
    stall. 60,000 lines refused (fast, so that the test measures the streaming), each
    answered with more bytes than it has, as a large import's answer outgrows buffers."""
    app = live_app()
    token = make_token(app)
    extra = {f"unknown_field_{i}": 0 for i in range(40)}
    line = (json.dumps({"name": "x", "email": "x@example.com", **extra}) + "\n").encode()
    count = 60_000

    def body() -> Iterator[bytes]:
        for _ in range(count // 100):
            yield line * 100

    with httpx.Client(base_url=app.url, timeout=120) as client:
        answer = client.post(
            f"{API}/users/import",
            content=body(),
            headers={**_bearer(token), "Content-Type": "application/x-ndjson"},
        )
    assert answer.status_code == 200
    results = _lines(answer.text)
    assert len(results) == count
    assert results[-1]["line"] == count
    assert results[-1]["fields"]["unknown_field_39"] == "This field is not allowed."


# -- events for the host app (R61) -----------------------------------------------------


def test_r61_admin_changes_reach_the_host_app_as_signed_events(
    live_app: Callable[..., LiveApp], database_url: str
) -> None:
    """Create, a contact patched, sessions revoked and delete through the operator API
    each publish their event, signed, with the same user id and nothing secret."""
    from standardwebhooks import Webhook

    from tests.support.webhooks import new_secret, webhook_receiver

    secret = new_secret()
    with webhook_receiver() as receiver:
        app = live_app(database_url=database_url, webhook_url=receiver.url, webhook_secret=secret)
        token = make_token(app)
        with httpx.Client(
            base_url=app.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            created = api.post(f"{API}/users", json=new_user())
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
            patched = api.patch(f"{API}/users/{user_id}", json={"email": "ada@new.example"})
            assert patched.status_code == 200, patched.text
            assert api.post(f"{API}/users/{user_id}/sessions/revoke").status_code == 204
            assert api.delete(f"{API}/users/{user_id}").status_code == 204

        events = {
            kind: receiver.wait_for(kind)[0]
            for kind in ("user.created", "contact.changed", "sessions.revoked", "user.deleted")
        }
    verifier = Webhook(secret)
    for kind, received in events.items():
        verifier.verify(received.body, received.headers)
        data = received.event["data"]
        assert data["user_id"] == user_id, kind
        assert STRONG not in received.body.decode() and token not in received.body.decode()
    assert events["contact.changed"].event["data"]["current"] == "ada@new.example"
    assert events["contact.changed"].event["data"]["previous"] == "ada@example.com"
    assert events["sessions.revoked"].event["data"]["reason"] == "operator"
