"""Headers on every answer, the body size limit and, in prod, HTTPS only.

- R29: ``Cache-Control: no-store`` on every page and answer (static files excepted).
- R41, R50: ``Referrer-Policy: no-referrer``, ``nosniff``, a CSP without inline script
  and with ``frame-ancestors 'none'``.
- R49: in prod, HSTS for a year, and plain-http requests are redirected, not served;
  except the machine endpoints ``/healthz``, ``/readyz`` and ``/metrics``, which load
  balancers and Prometheus ask of the process itself, on its private address (a redirect
  to https there reaches nothing; ``/metrics`` wants its token in prod, app.py).
- R46: bodies over the limit are refused with 413 before they are read whole.
"""

from __future__ import annotations

import ipaddress

from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resetflow.errors import PayloadTooLarge
from resetflow.web.error_json import error_response
from resetflow.web.prefix import route_path

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def content_security_policy(*, logo_url: str | None = None) -> str:
    """The pages' CSP. An operator's https:// logo (RESETFLOW_LOGO_URL) is allowed as an
    image by its exact URL, nothing more of its host."""
    if logo_url is None or not logo_url.startswith("https://"):
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace("img-src 'self'", f"img-src 'self' {logo_url}")


# /docs loads Swagger UI's script and styles from a CDN; it is a developer page only.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; frame-ancestors 'none'"
)

# The operator API's bulk import streams NDJSON of any length (each line bounded, and the
# bearer token checked before the body is read): no whole-body limit there.
STREAMED_UPLOADS = ("/admin/api/v1/users/import",)

# Developer pages (Swagger UI) with their own CSP.
DOCS_PAGES = frozenset({"/docs", "/docs/oauth2-redirect"})

# Asked of the process by probes and Prometheus, never by a browser: no https redirect.
MACHINE_ENDPOINTS = frozenset({"/healthz", "/readyz", "/metrics"})


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        https_only: bool,
        trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
        public_host: str = "localhost",
        policy: str = CONTENT_SECURITY_POLICY,
    ) -> None:
        """``public_host`` is the host (and port) of ``RESETFLOW_BASE_URL``: the https
        redirect goes there, never to the request's ``Host`` header (R40, R49)."""
        self.app = app
        self._public_host = public_host
        self._max_body = max_body_bytes
        self._https_only = https_only
        self._trusted = trusted_proxies
        # The headers of every answer, encoded once: (docs page, static file) -> headers.
        self._headers = {
            (docs, static): _encoded(
                _answer_headers(
                    policy=DOCS_CONTENT_SECURITY_POLICY if docs else policy,
                    no_store=not static,
                    https_only=https_only,
                )
            )
            for docs in (False, True)
            for static in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if self._https_only and self._scheme(scope) != "https" and path not in MACHINE_ENDPOINTS:
            await self._redirect_to_https(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        streamed = path.endswith(STREAMED_UPLOADS)
        if (
            not streamed
            and declared is not None
            and (not declared.isdigit() or int(declared) > self._max_body)
        ):
            # Answered before the app (and its headers middleware) runs: the headers every
            # answer carries, and the connection closed rather than the body read.
            too_large = error_response(
                PayloadTooLarge(),
                headers={
                    "cache-control": "no-store",
                    "x-content-type-options": "nosniff",
                    "connection": "close",
                },
            )
            await too_large(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_body and not streamed:
                    raise PayloadTooLarge()
            return message

        names, ours = self._headers[(path in DOCS_PAGES, path.startswith("/static/"))]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Ours replace any the app set under the same names (as MutableHeaders'
                # item assignment would), in one pass over the list instead of one per name.
                message["headers"] = [
                    pair for pair in message.get("headers", ()) if pair[0] not in names
                ] + ours
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)

    def _scheme(self, scope: Scope) -> str:
        scheme: str = scope.get("scheme", "http")
        client = scope.get("client")
        forwarded = _header(scope, b"x-forwarded-proto")
        if forwarded and client and _is_trusted(client[0], self._trusted):
            return forwarded.split(",")[0].strip().lower()
        return scheme

    async def _redirect_to_https(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        # raw_path: the path as the client sent it (percent-escapes kept), so that the
        # Location header stays one line of ASCII.
        path = scope.get("raw_path") or scope["path"].encode("utf-8")
        location = f"https://{self._public_host}{path.decode('latin-1')}" + (
            f"?{query}" if query else ""
        )
        await RedirectResponse(location, status_code=308)(scope, receive, send)


def _answer_headers(*, policy: str, no_store: bool, https_only: bool) -> dict[str, str]:
    """The headers the middleware puts on an answer (the module's docstring)."""
    headers = {
        "content-security-policy": policy,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
        "cross-origin-opener-policy": "same-origin",
        "permissions-policy": "interest-cohort=()",
    }
    if no_store:
        headers["cache-control"] = "no-store"
        headers["pragma"] = "no-cache"
    if https_only:
        headers["strict-transport-security"] = "max-age=31536000; includeSubDomains"
    return headers


def _encoded(headers: dict[str, str]) -> tuple[frozenset[bytes], list[tuple[bytes, bytes]]]:
    """ASGI's form: lower-case names, latin-1 bytes; with the set of names."""
    pairs = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return frozenset(name for name, _ in pairs), pairs


def _is_trusted(
    address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
