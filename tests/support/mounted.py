"""resetflow mounted inside a host FastAPI app at ``/auth``, served by uvicorn on loopback,
as docs/mounting.md tells a host to do it: ``app.mount("/auth", create_app())`` and
``await resetflow_app.aclose()`` from the host's own lifespan."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from html.parser import HTMLParser
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse

from resetflow import create_app
from resetflow.config import Settings
from tests.support.servers import free_port, serve_in_thread

PREFIX = "/auth"


def host_app(settings: Settings, *, migrate: bool | None = None) -> FastAPI:
    resetflow_app = create_app(settings, migrate=migrate)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await resetflow_app.aclose()

    host = FastAPI(lifespan=lifespan)

    @host.get("/")
    async def home() -> JSONResponse:
        return JSONResponse({"host": "yes"})

    host.mount(PREFIX, resetflow_app)
    return host


@contextmanager
def mounted(
    make_settings: Callable[..., Settings], *, migrate: bool | None = None, **overrides: Any
) -> Iterator[str]:
    """Serve a host app with resetflow at /auth; yields the host's URL (no prefix)."""
    port = free_port()
    overrides.setdefault("base_url", f"http://127.0.0.1:{port}{PREFIX}")
    app = host_app(make_settings(**overrides), migrate=migrate)
    with serve_in_thread(app, port=port) as url:
        yield url


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "action", "src") and value is not None:
                self.urls.append(value)


def page_urls(html: str) -> list[str]:
    """Every href, form action and src in a page."""
    parser = _Links()
    parser.feed(html)
    return parser.urls


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)
