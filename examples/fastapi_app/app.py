"""A host application that uses resetflow for its accounts, in one process.

resetflow is mounted at ``/auth`` (its pages, actions and the dev mailbox live there); the
page ``/`` is the host's own and needs a signed-in person: the ``signed_in_user``
dependency asks resetflow's ``GET /sessions/whoami`` in process (no network hop) with the
browser's cookie, and sends anonymous visitors to resetflow's sign-in page with a
``return_to`` pointing back here.

Settings come from the environment like any resetflow deployment; ``README.md`` beside this
file shows the three commands. What the host must set:

- ``RESETFLOW_BASE_URL``: the public URL *with* the mount prefix, e.g.
  ``http://127.0.0.1:8000/auth``: resetflow builds every link, redirect and message from it;
- ``RESETFLOW_COOKIE_PATH=/``: the browser sends resetflow's session cookie to the host's
  own pages too (by default it is scoped to the prefix);
- ``RESETFLOW_RETURN_TO_ALLOWED``: the host's URL prefix, so resetflow may send people back.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from resetflow import create_app

MOUNT = "/auth"
accounts = create_app()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Starlette runs only the host's lifespan: resetflow starts on its first request, and
    # the host hands it the shutdown (its delivery worker, database and session store).
    yield
    await accounts.aclose()


app = FastAPI(lifespan=lifespan)
app.mount(MOUNT, accounts)


class SignInFirst(Exception):
    """An anonymous visitor asked for a page that needs a signed-in person."""


async def signed_in_user(request: Request) -> dict[str, Any]:
    """The person resetflow says is signed in, or :class:`SignInFirst`."""
    transport = httpx.ASGITransport(app=accounts)
    async with httpx.AsyncClient(transport=transport, base_url="http://resetflow") as client:
        answer = await client.get(
            "/sessions/whoami", headers={"cookie": request.headers.get("cookie", "")}
        )
    if answer.status_code == 401:
        raise SignInFirst()
    if answer.status_code != 200:
        raise HTTPException(503, "accounts are unavailable")
    user: dict[str, Any] = answer.json()["user"]
    return user


@app.exception_handler(SignInFirst)
async def send_to_sign_in(request: Request, _: Exception) -> Response:
    query = urlencode({"return_to": str(request.url)})
    return RedirectResponse(f"{MOUNT}/login?{query}", status_code=303)


@app.get("/", response_class=HTMLResponse)
async def home(user: Annotated[dict[str, Any], Depends(signed_in_user)]) -> str:
    name = html.escape(user["name"])
    return (
        "<!doctype html><html lang=en><title>Example app</title>"
        f"<main><h1>Hello, {name}</h1>"
        f'<p><a href="{MOUNT}/account">Your account</a></p></main></html>'
    )
