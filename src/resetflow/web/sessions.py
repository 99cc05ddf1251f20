"""Server-side web sessions, loaded before a request and saved as its answer starts.

The cookie holds only an opaque 256-bit id (R22); the record lives in a
:class:`SessionStore` under the id's hash. :meth:`WebSession.rotate` issues a new id and
retires the old one, and is called at every privilege change (R24).

Idle expiry (``RESETFLOW_SESSION_IDLE_SECONDS``): the store ends a session unused for its
``idle_seconds``; a save marks it used, and a request that changes nothing marks it used
with :meth:`SessionStore.touch`, one small write, but only once more than
``TOUCH_FRACTION`` of the idle window has passed since the last mark. So a session in
steady use costs one write per ~3 minutes (of 30), not one per request, and ends between
90 % and 100 % of the idle window after its last use: early, never late.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resetflow.clock import Clock
from resetflow.crypto import new_token, sha256_hex
from resetflow.errors import ServiceUnavailable
from resetflow.storage.sessions import SessionRecord, SessionStore
from resetflow.web.error_json import error_response
from resetflow.web.prefix import prefix_of, route_path
from resetflow.web.security import MACHINE_ENDPOINTS

log = logging.getLogger("resetflow.sessions")
# The share of the idle window after which a read-only request marks the session used.
TOUCH_FRACTION = 0.1

# Asked by host applications and reverse proxies on every page view (web/integration.py):
# they read the session themselves, in one store read, and never write it or set a cookie.
SESSION_READERS = frozenset({"/sessions/whoami", "/auth/check"})
# In a signed-in session's data: when the person signed in (a later new id keeps it).
AUTHENTICATED_AT = "authenticated_at"


class WebSession:
    """One browser's session for the length of one request."""

    def __init__(self, *, session_id: str | None, record: SessionRecord) -> None:
        self.id = session_id
        self.record = record
        self.modified = False
        self.ended = False
        self.retired_id: str | None = None
        # Due for a touch: its idle deadline should slide although nothing changed.
        self.stale = False

    @property
    def user_id(self) -> str | None:
        return self.record.user_id

    def get(self, key: str, default: Any = None) -> Any:
        return self.record.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.record.data[key] = value
        self.modified = True

    def pop(self, key: str) -> Any:
        self.modified = self.modified or key in self.record.data
        return self.record.data.pop(key, None)

    def csrf_token(self) -> str:
        token = self.get("csrf")
        if not token:
            token = new_token()
            self.set("csrf", token)
        return str(token)

    def rotate(self) -> None:
        """New id for the same record; the old id stops working when the answer goes out."""
        if self.id is not None and self.retired_id is None:
            self.retired_id = self.id
        self.id = None
        self.modified = True

    def sign_in(self, user_id: str) -> None:
        self.rotate()
        self.record.user_id = user_id
        # A fresh CSRF token too: the old one was seen by a less privileged session.
        self.record.data = {"csrf": new_token()}

    def restart(self) -> None:
        """Drop everything (sign-out, after a reset): an anonymous session with a new id."""
        self.rotate()
        self.record.user_id = None
        self.record.data = {"csrf": new_token()}


class SessionMiddleware:
    """Pure ASGI, so that the session is saved before the first byte of the answer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: SessionStore,
        clock: Clock,
        cookie_name: Callable[[str], str],
        secure: bool,
        ttl_seconds: int,
        still_valid: Callable[[SessionRecord], Awaitable[bool]] | None = None,
        cookie_path: str | None = None,
        base_path: str = "",
    ) -> None:
        """``cookie_name(path)`` names the cookie for its path (config.Settings.cookie_name);
        ``cookie_path`` unset means the mount prefix (web/prefix.py), ``/`` unmounted."""
        self.app = app
        self._store = store
        self._clock = clock
        self._cookie_name = cookie_name
        self._cookie_path = cookie_path
        self._base_path = base_path
        self._secure = secure
        self._ttl = timedelta(seconds=ttl_seconds)
        self._still_valid = still_valid

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _sessionless(route_path(scope)):
            await self.app(scope, receive, send)
            return
        path = self._cookie_path or prefix_of(scope, self._base_path) or "/"
        cookie = _Cookie(name=self._cookie_name(path), path=path, secure=self._secure)
        try:
            session = await self._load(scope, cookie.name)
        except Exception:
            log.exception("session_store_unavailable")
            await _unavailable(scope, receive, send)
            return
        scope.setdefault("state", {})["session"] = session

        replaced = False

        async def send_with_cookie(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                try:
                    header = await self._persist(session, cookie)
                except Exception:
                    # The store is down: the answer must not claim a state change that
                    # was not kept. Swap it for a 503 before any byte has gone out.
                    log.exception("session_store_unavailable")
                    replaced = True
                    await _unavailable(scope, receive, send)
                    return
                if header is not None:
                    MutableHeaders(scope=message).append("set-cookie", header)
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _load(self, scope: Scope, cookie_name: str) -> WebSession:
        now = self._clock.now()
        session_id = _cookie_value(scope, cookie_name)
        record = None
        if session_id and len(session_id) <= 128:
            record = await self._store.load(sha256_hex(session_id), now=now)
        # A signed-in session that the account has since voided (a reset elsewhere).
        if (
            record is not None
            and record.user_id
            and self._still_valid is not None
            and not await self._still_valid(record)
        ):
            record = None
        if record is None:
            # Unknown ids are never adopted: a made-up id gets a new one (no fixation).
            return WebSession(
                session_id=None,
                record=SessionRecord(
                    user_id=None,
                    data={},
                    created_at=now,
                    expires_at=now + self._ttl,
                    last_seen_at=now,
                ),
            )
        session = WebSession(session_id=session_id, record=record)
        session.stale = needs_touch(record, idle_seconds=self._store.idle_seconds, now=now)
        return session

    async def _persist(self, session: WebSession, cookie: _Cookie) -> str | None:
        if session.retired_id is not None:
            await self._store.delete(sha256_hex(session.retired_id))
        if session.ended:
            return cookie.header("", max_age=0)
        now = self._clock.now()
        if not session.modified:
            if session.stale and session.id is not None:
                await self._store.touch(sha256_hex(session.id), now=now)
            return None
        if session.id is None:
            session.id = new_token()
            session.record.created_at = now
            session.record.expires_at = now + self._ttl
            if session.record.user_id is not None:
                session.record.data.setdefault(AUTHENTICATED_AT, now.isoformat())
        session.record.last_seen_at = now
        await self._store.save(sha256_hex(session.id), session.record)
        return cookie.header(session.id)


def needs_touch(record: SessionRecord, *, idle_seconds: float | None, now: datetime) -> bool:
    """Whether a use of this session should be marked in the store now: with an idle
    expiry, once ``TOUCH_FRACTION`` of the window has passed since the last mark."""
    if idle_seconds is None:
        return False
    return (now - record.seen_at).total_seconds() >= idle_seconds * TOUCH_FRACTION


@dataclass(frozen=True)
class _Cookie:
    """The session cookie's name and attributes for one request (R23)."""

    name: str
    path: str
    secure: bool

    def header(self, value: str, *, max_age: int | None = None) -> str:
        parts = [f"{self.name}={value}", f"Path={self.path}", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def _sessionless(path: str) -> bool:
    """Probes, metrics, static files and provider webhooks neither need nor touch a
    session, so that they keep answering while the session store is down; the session
    readers load it themselves. Nor does the operator API: bearer tokens only, so that no
    browser cookie can drive it (R60)."""
    return (
        path in MACHINE_ENDPOINTS
        or path in SESSION_READERS
        or path.startswith(("/static/", "/webhooks/", "/admin/api/"))
    )


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    await error_response(ServiceUnavailable(), headers={"retry-after": "5"})(scope, receive, send)


def _cookie_value(scope: Scope, name: str) -> str | None:
    # Starlette's parser, as browsers read cookies: a malformed cookie of some other app
    # on the same host skips that pair only (http.cookies.SimpleCookie dropped the whole
    # header, and with it this session).
    return HTTPConnection(scope).cookies.get(name)
