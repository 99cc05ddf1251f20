"""resetflow mounted in a host app at /auth (SPEC §9): real HTTP through uvicorn, real
cookies; every redirect, link, form action and asset URL carries the prefix, and so do the
links in messages. Also: the prefix from RESETFLOW_BASE_URL alone (a proxy that strips it),
and the cookie's path and name under a prefix (R23)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from resetflow import create_app
from resetflow.config import Settings, load_settings
from tests.conftest import LiveApp
from tests.support.flow import NEW_PASSWORD, PASSWORD, find_code, sign_up, wait_for_dev_message
from tests.support.mounted import PREFIX, csrf_token, mounted, page_urls
from tests.support.prod import prod_settings
from tests.support.servers import free_port, serve_in_thread

NAME = "Ada Lovelace"
EMAIL = "ada@example.com"
PHONE = "+14155550100"


class Browserish:
    """An HTML-form client: checks every page's URLs and every redirect's target."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.assets: set[str] = set()

    def page(self, path: str, *, status: int = 200) -> str:
        response = self.client.get(path)
        assert response.status_code == status, (path, response.status_code, response.text)
        self.check(response.text)
        return response.text

    def check(self, html: str) -> None:
        urls = page_urls(html)
        assert urls, "a page without links"
        for url in urls:
            assert url.startswith(f"{PREFIX}/"), f"{url!r} lacks the mount prefix"
            if "/static/" in url:
                self.assets.add(url)

    def post(self, path: str, html: str, **fields: str) -> httpx.Response:
        return self.client.post(path, data={"csrf_token": csrf_token(html), **fields})

    def redirected(self, response: httpx.Response, to: str) -> None:
        assert response.status_code == 303, (response.status_code, response.text)
        assert response.headers["location"] == f"{PREFIX}{to}"


def test_the_whole_flow_through_a_host_app(make_settings: Callable[..., Settings]) -> None:
    with mounted(make_settings) as host, httpx.Client(base_url=host, timeout=30) as client:
        mailbox = httpx.Client(base_url=f"{host}{PREFIX}", timeout=30)
        assert client.get("/").json() == {"host": "yes"}  # the host's own route still works
        web = Browserish(client)

        # Guarded pages send a newcomer to the right place, under the prefix.
        for guarded, to in (
            ("/account", "/login"),
            ("/new-password", "/forgot-password"),
            ("/enter-token", "/forgot-password"),
            ("/verify-contact", "/new-user"),
        ):
            web.redirected(client.get(f"{PREFIX}{guarded}"), to)

        # Sign up through the form; the cookie is scoped to the prefix.
        web.page(f"{PREFIX}/")
        html = web.page(f"{PREFIX}/new-user")
        response = web.post(
            f"{PREFIX}/create-user",
            html,
            name=NAME,
            email=EMAIL,
            phone=PHONE,
            password=PASSWORD,
            preference="email",
        )
        web.redirected(response, "/verify-contact")
        assert "Path=/auth;" in response.headers["set-cookie"]

        # Verify the contact with the code from the dev mailbox (a wrong one first).
        html = web.page(f"{PREFIX}/verify-contact")
        code = find_code(
            wait_for_dev_message(mailbox, to=EMAIL, notification="verify-contact")["text"]
        )
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        refused = web.post(f"{PREFIX}/verify-contact", html, token=wrong)
        assert refused.status_code in (400, 401, 422), refused.status_code
        web.check(refused.text)
        web.redirected(web.post(f"{PREFIX}/verify-contact", html, token=code), "/")

        # Sign out.
        html = web.page(f"{PREFIX}/")
        web.redirected(web.post(f"{PREFIX}/logout", html), "/")

        # Forgot password, enter the code, choose a new password.
        html = web.page(f"{PREFIX}/forgot-password")
        web.redirected(web.post(f"{PREFIX}/send-token", html, email=EMAIL), "/enter-token")
        html = web.page(f"{PREFIX}/enter-token")
        reset = wait_for_dev_message(mailbox, to=EMAIL, notification="password-reset-token")
        web.redirected(
            web.post(f"{PREFIX}/verify-token", html, token=find_code(reset["text"])),
            "/new-password",
        )
        html = web.page(f"{PREFIX}/new-password")
        mismatch = web.post(
            f"{PREFIX}/reset-password",
            html,
            newPassword=NEW_PASSWORD,
            newPasswordConfirm=NEW_PASSWORD + "x",
        )
        assert mismatch.status_code == 422
        web.check(mismatch.text)
        web.redirected(
            web.post(
                f"{PREFIX}/reset-password",
                html,
                newPassword=NEW_PASSWORD,
                newPasswordConfirm=NEW_PASSWORD,
            ),
            "/login",
        )

        # Sign in with the new password; the account page.
        html = web.page(f"{PREFIX}/login")
        web.redirected(
            web.post(f"{PREFIX}/login", html, email=EMAIL, password=NEW_PASSWORD), "/account"
        )
        account = web.page(f"{PREFIX}/account")
        assert NAME in account
        web.page(f"{PREFIX}/dev/outbox")

        # Every stylesheet and asset the pages named is served under the prefix.
        assert {f"{PREFIX}/static/resetflow.css"} <= {a.split("?")[0] for a in web.assets}
        for asset in web.assets:
            assert client.get(asset).status_code == 200, asset

        # Links in messages carry the prefix too (the base URL's path).
        changed = wait_for_dev_message(mailbox, to=EMAIL, notification="password-changed")
        assert f"{host}{PREFIX}/forgot-password" in changed["text"]
        assert f'href="{host}{PREFIX}/forgot-password"' in changed["html"]
        mailbox.close()


@pytest.mark.parametrize("store", ["sqlite", "postgres+redis"])
def test_json_flow_when_mounted_on_each_store(
    make_settings: Callable[..., Settings], request: pytest.FixtureRequest, store: str
) -> None:
    """Opened on first use on both stores (on PostgreSQL + Redis: migrations, the worker and
    its LISTEN connection, Redis sessions); JSON ``redirect`` values carry the prefix."""
    options: dict[str, Any] = {"migrate": True}
    if store == "postgres+redis":
        options.update(
            database_url=request.getfixturevalue("postgres_url"),
            redis_url=request.getfixturevalue("redis_server"),
            redis_prefix=f"resetflow-test-{secrets.token_hex(6)}",
        )
    with (
        mounted(make_settings, **options) as host,
        httpx.Client(base_url=f"{host}{PREFIX}", timeout=30) as client,
    ):
        created = sign_up(client)
        assert created.status_code == 201, created.text
        assert created.json()["redirect"] == "/auth/verify-contact"
        assert "Path=/auth;" in created.headers["set-cookie"]
        message = wait_for_dev_message(client, to=EMAIL, notification="verify-contact")
        verified = client.post("/verify-contact", json={"token": find_code(message["text"])})
        assert verified.json()["redirect"] == "/auth/"
        assert client.post("/logout", json={}).json()["redirect"] == "/auth/"
        sent = client.post("/send-token", json={"email": EMAIL})
        assert sent.status_code == 202
        assert sent.json()["redirect"] == "/auth/enter-token"
        reset = wait_for_dev_message(client, to=EMAIL, notification="password-reset-token")
        checked = client.post("/verify-token", json={"token": find_code(reset["text"])})
        assert checked.json()["redirect"] == "/auth/new-password"
        changed = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert changed.json()["redirect"] == "/auth/login"
        signed_in = client.post("/login", json={"email": EMAIL, "password": NEW_PASSWORD})
        assert signed_in.json() == {"redirect": "/auth/account"}


def test_prefix_from_the_base_url_behind_a_stripping_proxy(
    live_app: Callable[..., LiveApp],
) -> None:
    """Not mounted, but RESETFLOW_BASE_URL has a path: a proxy strips /auth before the
    request arrives, so the routes answer at / and everything written carries /auth."""
    app = live_app(base_url="https://example.org/auth")
    with app.client() as client:
        page = client.get("/login")
        assert page.status_code == 200
        assert all(url.startswith("/auth/") for url in page_urls(page.text))
        assert "Path=/auth;" in page.headers["set-cookie"]
        sent = client.post("/send-token", json={"email": "nobody@example.com"})
        assert sent.json()["redirect"] == "/auth/enter-token"
        assert client.get("/account").headers["location"] == "/auth/login"


def test_unmounted_pages_keep_plain_paths(live_app: Callable[..., LiveApp]) -> None:
    app = live_app()
    with app.client() as client:
        page = client.get("/login")
        urls = page_urls(page.text)
        assert "/send-token" not in urls and "/login" in urls
        assert all(url.startswith("/") and not url.startswith("//") for url in urls)
        assert "Path=/;" in page.headers["set-cookie"]
        assert (
            client.post("/send-token", json={"email": "x@example.com"}).json()["redirect"]
            == "/enter-token"
        )


def test_cookie_path_setting_wins(make_settings: Callable[..., Settings]) -> None:
    """A host whose own pages need the cookie (to ask whoami) sets RESETFLOW_COOKIE_PATH=/."""
    with mounted(make_settings, cookie_path="/") as host, httpx.Client(base_url=host) as client:
        cookie = client.get(f"{PREFIX}/login").headers["set-cookie"]
    assert "Path=/;" in cookie


def test_r23_cookie_under_a_mount_prefix_in_prod(make_settings: Callable[..., Settings]) -> None:
    """R23 under a prefix: a __Host- cookie must have Path=/, so a cookie scoped to /auth
    is __Secure- (still Secure, HttpOnly, SameSite=Lax, no Domain); with
    RESETFLOW_COOKIE_PATH=/ it is __Host- again."""
    prod: dict[str, Any] = prod_settings(
        base_url="https://auth.example.org/auth", trusted_proxies="127.0.0.1/32"
    )
    https = {"X-Forwarded-Proto": "https"}
    for cookie_path, name, path in (
        (None, "__Secure-resetflow", "/auth"),
        ("/", "__Host-resetflow", "/"),
    ):
        with (
            mounted(make_settings, migrate=True, cookie_path=cookie_path, **prod) as host,
            httpx.Client(base_url=host) as client,
        ):
            response = client.get(f"{PREFIX}/login", headers=https)
        assert response.status_code == 200
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{name}=")
        assert f"; Path={path};" in cookie
        assert "; Secure" in cookie and "; HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert "domain" not in cookie.lower()


def test_cookie_name_follows_the_path() -> None:
    prod = load_settings(**prod_settings(), _env_file=None)
    assert prod.cookie_name("/") == "__Host-resetflow"
    assert prod.cookie_name("/auth") == "__Secure-resetflow"
    dev = load_settings(secret_key="s" * 48, _env_file=None)
    assert dev.cookie_name("/auth") == "resetflow_session"


@pytest.mark.parametrize("how", ["first use, then aclose", "the host runs its lifespan"])
def test_start_and_shutdown_when_mounted(make_settings: Callable[..., Settings], how: str) -> None:
    """Starlette runs no mounted app's lifespan: resetflow starts on its first request and
    stops with ``aclose()``; or the host runs resetflow's lifespan inside its own."""
    port = free_port()
    auth = create_app(make_settings(base_url=f"http://127.0.0.1:{port}{PREFIX}"))
    first_use = how.startswith("first use")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if first_use:
            yield
            await auth.aclose()
        else:
            async with auth.router.lifespan_context(auth):
                yield

    host = FastAPI(lifespan=lifespan)
    host.mount(PREFIX, auth)
    with serve_in_thread(host, port=port) as url:
        assert auth.runtime.started is not first_use
        assert httpx.get(f"{url}{PREFIX}/readyz").json()["database"] == "up"
        assert auth.runtime.started
    assert not auth.runtime.started


def test_prefix_from_root_path_when_the_base_url_has_none(
    make_settings: Callable[..., Settings],
) -> None:
    """Mounted at /auth with a base URL without a path (the default one): pages follow
    Starlette's root_path."""
    with (
        mounted(make_settings, base_url="http://127.0.0.1:8000") as host,
        httpx.Client(base_url=f"{host}{PREFIX}") as client,
    ):
        page = client.get("/login")
        assert page.status_code == 200
        assert all(url.startswith("/auth/") for url in page_urls(page.text))
        assert "Path=/auth;" in page.headers["set-cookie"]
        sent = client.post("/send-token", json={"email": "nobody@example.com"})
        assert sent.json()["redirect"] == "/auth/enter-token"
