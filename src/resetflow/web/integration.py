"""What other software asks of resetflow: who is signed in (SPEC §9).

- ``GET /sessions/whoami``: the signed-in person and their session, as JSON, for a host
  application (its server, with the browser's cookie, or its pages' scripts).
- ``GET /auth/check``: the same answer as headers, for a reverse proxy guarding paths
  (nginx ``auth_request``, Caddy ``forward_auth``, Traefik ``ForwardAuth``); with
  ``?redirect=1`` an anonymous caller is sent to the sign-in page instead, with a
  ``return_to`` rebuilt from the proxy's ``X-Forwarded-*`` headers.

Both are asked on every page view of the host, so they skip the session middleware (see
``SESSION_READERS`` in web/sessions.py) and read the session here: one store read and one
account read, no session created for anonymous callers, no cookie set, no limit counted.
The session is judged as the middleware judges it: unknown or expired ids, and
signed-in sessions the account has since voided (a reset, a contact change), are nobody.

Header values are percent-encoded UTF-8 (RFC 3986): ASCII letters, digits and ``-._~@+``
stand as they are, everything else (spaces, non-ASCII letters, CR and LF) is ``%XX``,
so a name can never break a header; decode with ``urllib.parse.unquote`` or
``decodeURIComponent``. Every header is always sent, empty when the account has no such
contact, so that a proxy copying them always overwrites what a client sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from resetflow.accounts.models import User
from resetflow.client import from_trusted_proxy
from resetflow.crypto import sha256_hex
from resetflow.errors import NotSignedIn
from resetflow.storage.sessions import SessionRecord
from resetflow.web import return_to
from resetflow.web.edge import services_of
from resetflow.web.prefix import prefix_of
from resetflow.web.sessions import AUTHENTICATED_AT, needs_touch

router = APIRouter()

USER_HEADERS = {
    "id": "X-Resetflow-User-Id",
    "email": "X-Resetflow-User-Email",
    "name": "X-Resetflow-User-Name",
    "phone": "X-Resetflow-User-Phone",
}
# Longer ids are no session of ours (the middleware's bound too).
MAX_SESSION_ID = 128


async def signed_in(request: Request) -> tuple[User, SessionRecord] | None:
    """The signed-in account and its session, or None for anybody else."""
    services, settings = services_of(request), services_of(request).settings
    # The cookie the session middleware sets for this mount (web/sessions.py).
    path = settings.cookie_path or prefix_of(request.scope, settings.base_path) or "/"
    session_id = request.cookies.get(settings.cookie_name(path))
    if not session_id or len(session_id) > MAX_SESSION_ID:
        return None
    now = services.clock.now()
    key = sha256_hex(session_id)
    record = await services.sessions.load(key, now=now)
    if record is None or record.user_id is None:
        return None
    # What SessionMiddleware's still_valid asks (accounts.session_is_current), with the
    # account it reads kept for the answer rather than read twice.
    user = await services.accounts.get(record.user_id)
    if user is None or not user.accepts_session_from(record.created_at):
        return None
    # A host app's page views are use of the session too: they slide its idle expiry as
    # the middleware does (one small write per tenth of the idle window, not per call).
    if needs_touch(record, idle_seconds=services.sessions.idle_seconds, now=now):
        await services.sessions.touch(key, now=now)
    return user, record


@router.get("/sessions/whoami")
async def whoami(request: Request) -> Response:
    """Who is signed in with this session cookie: ``200`` with the account and the
    session's times, or ``401`` (``not_signed_in``)."""
    found = await signed_in(request)
    if found is None:
        raise NotSignedIn()
    user, record = found
    authenticated_at = record.data.get(AUTHENTICATED_AT)
    body: dict[str, Any] = {
        "user": user.profile(),
        "session": {
            "authenticated_at": _utc(
                datetime.fromisoformat(authenticated_at) if authenticated_at else record.created_at
            ),
            # The session ends then at the latest (sooner if the person signs out).
            "expires_at": _utc(record.expires_at),
        },
    }
    return JSONResponse(body)


@router.get("/auth/check")
async def auth_check(request: Request) -> Response:
    """For a reverse proxy: ``200`` with the ``X-Resetflow-User-*`` headers, or ``401``;
    with ``?redirect=1``, anonymous callers get a ``302`` to the sign-in page."""
    found = await signed_in(request)
    if found is not None:
        user, _ = found
        values = {"id": user.id, "email": user.email, "name": user.name, "phone": user.phone}
        return Response(
            status_code=200,
            headers={USER_HEADERS[key]: header_value(value) for key, value in values.items()},
        )
    if request.query_params.get("redirect") in ("1", "true"):
        return RedirectResponse(login_url(request), status_code=302)
    raise NotSignedIn()


def header_value(value: str | None) -> str:
    """A value safe in any header: percent-encoded UTF-8, empty for None."""
    return quote(value or "", safe="@+")


def login_url(request: Request) -> str:
    """The sign-in page, with ``return_to`` when the proxy said where the person was going
    and that place is allowed."""
    login = f"{services_of(request).settings.base_url}/login"
    going_to = return_to.allowed(request, forwarded_url(request), source="forwarded")
    return f"{login}?return_to={quote(going_to, safe='')}" if going_to else login


def forwarded_url(request: Request) -> str | None:
    """The URL the person asked the proxy for, from ``X-Forwarded-Proto``, ``-Host`` and
    ``-Uri``; believed only from a peer in ``RESETFLOW_TRUSTED_PROXIES``."""
    settings = services_of(request).settings
    peer = request.client.host if request.client else None
    if not from_trusted_proxy(peer, trusted=settings.trusted_proxy_networks):
        return None
    proto = request.headers.get("x-forwarded-proto")
    host = request.headers.get("x-forwarded-host")
    uri = request.headers.get("x-forwarded-uri")
    if not proto or not host or not uri or not uri.startswith("/"):
        return None
    # A proxy that appends to a list puts its own value last.
    proto, host = proto.split(",")[-1].strip(), host.split(",")[-1].strip()
    return f"{proto}://{host}{uri}"


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
