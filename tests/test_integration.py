"""Applications asking resetflow who is signed in: GET /sessions/whoami and GET
/auth/check (web/integration.py, SPEC §9), on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resetflow.clock import FrozenClock
from resetflow.storage.sessions.memory import MemorySessionStore
from resetflow.web.inputs import session_of
from resetflow.web.sessions import AUTHENTICATED_AT, SessionMiddleware
from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    create_verified_account,
    find_code,
    sign_up_verified,
    wait_for_dev_message,
)
from tests.support.servers import free_port, serve_in_thread

NAME = "Zoë O'Brien-Ünal"


def sign_in(client: httpx.Client, *, name: str = NAME) -> httpx.Client:
    sign_up_verified(client, name=name)
    login = client.post("/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.text
    return client


def utc(text: str) -> datetime:
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0)
    return moment


def test_whoami_answers_the_signed_in_account_and_its_session(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    app = live_app(**backend)
    with app.client() as client:
        sign_in(client)
        response = client.get("/sessions/whoami")
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        assert "set-cookie" not in response.headers
        body = response.json()
        user = body["user"]
        assert set(user) == {
            "id",
            "name",
            "email",
            "phone",
            "email_verified",
            "phone_verified",
            "preference",
            "locale",
        }
        assert user["name"] == NAME
        assert user["email"] == "ada@example.com"
        assert user["phone"] == "+14155550100"
        assert (user["email_verified"], user["phone_verified"]) == (True, False)
        assert (user["preference"], user["locale"]) == ("email", "en")
        assert isinstance(user["id"], str) and user["id"]
        session = body["session"]
        assert set(session) == {"authenticated_at", "expires_at"}
        # Signed in at login, and the session ends RESETFLOW_SESSION_TTL_SECONDS later.
        lifetime = utc(session["expires_at"]) - utc(session["authenticated_at"])
        assert lifetime == timedelta(seconds=app.settings.session_ttl_seconds)
        assert client.get("/sessions/whoami").json() == body

        assert client.post("/logout", json={}).status_code == 200
        after = client.get("/sessions/whoami")
        assert after.status_code == 401
        assert after.json()["code"] == "not_signed_in"


def test_whoami_is_401_for_anybody_else_and_creates_no_session(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    app = live_app(**backend)
    with app.client() as client:
        for cookies in ({}, {app.settings.cookie_name(): secrets.token_urlsafe(32)}):
            client.cookies.clear()
            client.cookies.update(cookies)
            response = client.get("/sessions/whoami")
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/json"
            assert response.headers["cache-control"] == "no-store"
            assert "set-cookie" not in response.headers
            body = response.json()
            assert body["code"] == "not_signed_in"
            assert isinstance(body["error"], str) and body["error"]
        # A session that exists but is nobody's (a visitor who opened a page) is no one.
        client.cookies.clear()
        assert client.get("/login").status_code == 200
        assert client.cookies.get(app.settings.cookie_name())
        assert client.get("/sessions/whoami").status_code == 401


def test_whoami_after_a_reset_elsewhere_is_401(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as laptop, app.client() as phone:
        sign_in(laptop)
        assert laptop.get("/sessions/whoami").status_code == 200
        phone.post("/send-token", json={"email": "ada@example.com"})
        message = wait_for_dev_message(
            phone, to="ada@example.com", notification="password-reset-token"
        )
        assert phone.post("/verify-token", json={"token": find_code(message["text"])}).is_success
        done = phone.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert done.status_code == 200
        assert laptop.get("/sessions/whoami").status_code == 401
        assert laptop.get("/auth/check").status_code == 401


def test_whoami_and_auth_check_do_not_count_against_the_post_limits(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(limit_ip="3/minute")
    with app.client() as client:
        assert client.post("/logout", json={}).status_code == 200
        for _ in range(20):
            assert client.get("/sessions/whoami").status_code == 401
            assert client.get("/auth/check").status_code == 401
        assert client.post("/logout", json={}).status_code == 200
        assert client.post("/logout", json={}).status_code == 200
        # The limit is there: the fourth POST of the minute is refused.
        assert client.post("/logout", json={}).status_code == 429


def test_auth_check_answers_the_user_in_safe_headers(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    app = live_app(**backend)
    with app.client() as client:
        sign_in(client, name="Zoë \u00dcnal 100% <ok>")
        response = client.get("/auth/check")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert "set-cookie" not in response.headers
        whoami = client.get("/sessions/whoami").json()["user"]
        raw = {k.lower(): v for k, v in response.headers.raw}
        expected = {
            b"x-resetflow-user-id": whoami["id"],
            b"x-resetflow-user-email": "ada@example.com",
            b"x-resetflow-user-name": "Zoë \u00dcnal 100% <ok>",
            b"x-resetflow-user-phone": "+14155550100",
        }
        for header, value in expected.items():
            sent = raw[header]
            assert all(0x21 <= byte < 0x7F for byte in sent), sent
            assert unquote(sent.decode("ascii")) == value
        assert raw[b"x-resetflow-user-email"] == b"ada@example.com"
        assert raw[b"x-resetflow-user-name"] == b"Zo%C3%AB%20%C3%9Cnal%20100%25%20%3Cok%3E"
        # Signed in, ?redirect=1 changes nothing.
        assert client.get("/auth/check?redirect=1").status_code == 200


def test_auth_check_anonymous_is_401_or_a_redirect_to_sign_in(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        response = client.get("/auth/check")
        assert response.status_code == 401
        assert response.json()["code"] == "not_signed_in"
        assert not any(k.lower().startswith("x-resetflow-user") for k in response.headers)
        redirect = client.get("/auth/check?redirect=1")
        assert redirect.status_code == 302
        assert redirect.headers["location"] == f"{app.settings.base_url}/login"
        assert redirect.headers["cache-control"] == "no-store"
        assert "set-cookie" not in redirect.headers


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "app.example.org",
    "X-Forwarded-Uri": "/reports/2026?view=all&x=%2F",
}


def login_location(client: httpx.Client, headers: dict[str, str]) -> dict[str, list[str]]:
    response = client.get("/auth/check?redirect=1", headers=headers)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.path == "/login"
    return parse_qs(location.query)


def test_r59_forward_auth_redirect_carries_return_to_from_a_trusted_proxy_only(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(trusted_proxies="127.0.0.1/32", return_to_allowed="https://app.example.org/")
    with app.client() as client:
        wanted = "https://app.example.org/reports/2026?view=all&x=%2F"
        response = client.get("/auth/check?redirect=1", headers=FORWARDED)
        assert response.headers["location"] == (
            f"{app.settings.base_url}/login?return_to={quote(wanted, safe='')}"
        )
        assert login_location(client, FORWARDED) == {"return_to": [wanted]}
        # Headers that would build a place outside the allow-list: no return_to at all.
        for changed in (
            {"X-Forwarded-Host": "evil.example"},
            {"X-Forwarded-Host": "app.example.org.evil.example"},
            {"X-Forwarded-Host": "app.example.org@evil.example"},
            {"X-Forwarded-Proto": "http"},
            {"X-Forwarded-Proto": "javascript"},
            {"X-Forwarded-Uri": "//evil.example/"},
            {"X-Forwarded-Uri": "/\\evil.example/"},
            {"X-Forwarded-Uri": "/%2F%2Fevil.example"},
            {"X-Forwarded-Uri": "evil"},
            {"X-Forwarded-Uri": "/a/%0d%0aSet-Cookie:%20x"},
        ):
            assert login_location(client, {**FORWARDED, **changed}) == {}, changed
        for missing in FORWARDED:
            headers = {k: v for k, v in FORWARDED.items() if k != missing}
            assert login_location(client, headers) == {}

    untrusting = live_app(return_to_allowed="https://app.example.org/")
    with untrusting.client() as client:
        assert login_location(client, FORWARDED) == {}


def test_authenticated_at_is_the_sign_in_and_outlives_a_new_session_id() -> None:
    """SessionMiddleware notes when a person signed in; a later new id (R24) keeps it,
    while created_at and expires_at follow the id. Sign-out and a new sign-in reset it."""
    clock = FrozenClock()
    store = MemorySessionStore()

    async def act(request: Request) -> Response:
        session = session_of(request)
        {"in": lambda: session.sign_in("u1"), "new-id": session.rotate, "out": session.restart}[
            request.path_params["what"]
        ]()
        return Response(status_code=204)

    async def show(request: Request) -> Response:
        record = session_of(request).record
        return JSONResponse(
            {
                "authenticated_at": record.data.get(AUTHENTICATED_AT),
                "created_at": record.created_at.isoformat(),
            }
        )

    app = SessionMiddleware(
        Starlette(routes=[Route("/{what}", act, methods=["POST"]), Route("/", show)]),
        store=store,
        clock=clock,
        cookie_name=lambda _path: "s",
        secure=False,
        ttl_seconds=3600,
    )
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        signed_in_at = clock.now().isoformat()
        client.post("/in")
        clock.advance(600)
        client.post("/new-id")
        shown = client.get("/").json()
        assert shown["authenticated_at"] == signed_in_at
        assert shown["created_at"] == clock.now().isoformat()
        client.post("/out")
        assert client.get("/").json()["authenticated_at"] is None
        clock.advance(60)
        client.post("/in")
        assert client.get("/").json()["authenticated_at"] == clock.now().isoformat()


PROD = {
    "env": "prod",
    "secret_key": "s" * 48,
    "base_url": "https://app.example.org",
    "trusted_proxies": "127.0.0.1/32",
    "return_to_allowed": "https://app.example.org/",
    # Real providers (prod refuses the dev ones); nothing is sent in this test.
    "email_provider": "smtp",
    "sms_provider": "twilio",
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": "t" * 32,
    "twilio_from": "+15005550006",
}


def test_whoami_and_auth_check_in_prod_behind_a_tls_proxy(
    live_app: Callable[..., LiveApp],
) -> None:
    """In prod the cookie is __Host-resetflow and plain http is redirected (R49): a proxy
    that terminates TLS says so with X-Forwarded-Proto, from a trusted address."""
    app = live_app(**PROD)
    create_verified_account(app.settings, name=NAME)
    https = {"X-Forwarded-Proto": "https"}
    with app.client() as client:
        login = client.post(
            "/login",
            json={"email": "ada@example.com", "password": PASSWORD},
            headers=https,
        )
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"].split(";")[0]
        assert cookie.startswith("__Host-resetflow=")
        signed_in = {**https, "Cookie": cookie}
        client.cookies.clear()  # a Secure cookie: sent by hand, as the proxy would
        whoami = client.get("/sessions/whoami", headers=signed_in)
        assert whoami.status_code == 200
        assert whoami.json()["user"]["name"] == NAME
        assert whoami.headers["strict-transport-security"].startswith("max-age=31536000")
        check = client.get("/auth/check", headers=signed_in)
        assert check.status_code == 200
        assert check.headers["x-resetflow-user-email"] == "ada@example.com"
        # Plain http is redirected, not answered (R49).
        plain = client.get("/sessions/whoami", headers={"Cookie": cookie})
        assert plain.status_code == 308
        anonymous = client.get(
            "/auth/check?redirect=1",
            headers={**FORWARDED, "X-Forwarded-Host": "app.example.org"},
        )
        assert anonymous.status_code == 302
        wanted = "https://app.example.org/reports/2026?view=all&x=%2F"
        assert anonymous.headers["location"] == (
            f"https://app.example.org/login?return_to={quote(wanted, safe='')}"
        )


def test_whoami_with_the_session_store_down_is_a_503(live_app: Callable[..., LiveApp]) -> None:
    """Nothing listens where Redis should be: a cookie that must be looked up gets the
    generic 503 (never a 500, never a 401 that would sign people out of the host app)."""
    app = live_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with app.client() as client:
        client.cookies.set(app.settings.cookie_name(), secrets.token_urlsafe(32))
        for path in ("/sessions/whoami", "/auth/check"):
            response = client.get(path)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "service_unavailable"
            assert response.headers["retry-after"] == "5"
        client.cookies.clear()
        assert client.get("/sessions/whoami").status_code == 401


def test_whoami_is_use_of_the_session_and_slides_its_idle_expiry(
    live_app: Callable[..., LiveApp], backend: dict[str, Any]
) -> None:
    """A person busy on the host app's pages (each asking whoami) is not signed out
    after RESETFLOW_SESSION_IDLE_SECONDS as if idle; one who stops is."""
    from datetime import UTC

    clock = FrozenClock(datetime.now(UTC))
    app = live_app(clock=clock, session_idle_seconds=1800, **backend)
    with app.client() as busy, app.client() as idle:
        sign_in(busy)
        assert idle.post(
            "/login", json={"email": "ada@example.com", "password": PASSWORD}
        ).is_success
        for _ in range(4):  # 4 x 1,000 s: far past the idle window in all
            clock.advance(1000)
            assert busy.get("/sessions/whoami").status_code == 200
            assert busy.get("/auth/check").status_code == 200
        assert idle.get("/sessions/whoami").status_code == 401
