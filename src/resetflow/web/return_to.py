"""``return_to``: where a person goes once they have signed in, signed up or reset (R59).

The host application sends people to ``/login``, ``/new-user`` or ``/forgot-password``
with ``?return_to=<absolute URL>``; the URL is kept in the server-side session through the
flow and followed at its end, but only when it starts with an entry of
``RESETFLOW_RETURN_TO_ALLOWED`` (a comma-separated list of URL prefixes): the same scheme,
host and port exactly, then a path under the prefix's path on a segment boundary
(``/app`` allows ``/app``, ``/app/x`` and ``/app?x``, not ``/application``).

The check is strict rather than clever, because browsers, proxies and the host's own
framework each parse URLs a little differently and an open redirect lives in the gaps:
only printable ASCII (no whitespace, control characters or backslashes), an explicit
``http://`` or ``https://``, no user information and no percent sign in the authority,
and no dot segments, doubled slashes, backslashes or control characters in the path
even once percent-decoded. Anything else is refused, logged, and the flow goes where it
would have gone without it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from starlette.requests import Request

from resetflow.web.inputs import session_of

MAX_LENGTH = 2048
SESSION_KEY = "return_to"
DEFAULT_PORTS = {"http": 80, "https": 443}
# A DNS name, already lower-cased: dot-separated labels of letters, digits and inner hyphens.
_HOSTNAME = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

log = logging.getLogger("resetflow.return_to")


class Refused(ValueError):
    """A ``return_to`` that is not followed; ``reason`` is a short snake_case word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Url:
    scheme: str
    host: str
    port: int
    path: str
    rest: str  # the query and fragment, with their leading "?" or "#"


def _first_of(text: str, marks: str) -> int:
    """Where the first of ``marks`` stands in ``text``; its length when none does."""
    found = [at for at in map(text.find, marks) if at != -1]
    return min(found, default=len(text))


def _parse(url: object) -> _Url:
    if not isinstance(url, str) or not url:
        raise Refused("empty")
    if len(url) > MAX_LENGTH:
        raise Refused("too_long")
    if not _PRINTABLE_ASCII.fullmatch(url):
        raise Refused("bad_character")
    if "\\" in url:
        raise Refused("backslash")
    head, separator, after = url.partition("://")
    scheme = head.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        raise Refused("scheme")
    end = _first_of(after, "/?#")
    authority, remainder = after[:end], after[end:]
    if "@" in authority:
        raise Refused("userinfo")
    if "%" in authority:
        raise Refused("encoded_authority")
    host, port = _host_and_port(authority.lower(), default=DEFAULT_PORTS[scheme])
    cut = _first_of(remainder, "?#")
    path, rest = remainder[:cut], remainder[cut:]
    _check_path(path)
    if _CONTROL.search(_decoded(rest)):
        raise Refused("encoded_control")
    return _Url(scheme=scheme, host=host, port=port, path=path, rest=rest)


def _host_and_port(authority: str, *, default: int) -> tuple[str, int]:
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise Refused("host")
        host, after = authority[: close + 1], authority[close + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise Refused("host") from None
        if after and not after.startswith(":"):
            raise Refused("host")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_or_empty = authority.partition(":")
        port_text = port_text_or_empty if colon else None
        if len(host) > 253 or not _HOSTNAME.fullmatch(host):
            raise Refused("host")
    if port_text is None:
        return host, default
    if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) < 65536:
        raise Refused("port")
    return host, int(port_text)


def _check_path(path: str) -> None:
    """Dot segments, doubled slashes, backslashes and control characters are refused as
    written and once decoded (as far as any layer might decode: until nothing changes)."""
    for form in (path, _decoded(path)):
        if "\\" in form:
            raise Refused("backslash")
        if _CONTROL.search(form):
            raise Refused("encoded_control")
        if "//" in form:
            raise Refused("double_slash")
        if any(segment in (".", "..") for segment in form.split("/")):
            raise Refused("dot_segment")


def _decoded(text: str) -> str:
    for _ in range(4):
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    return text


@dataclass(frozen=True, slots=True)
class _Prefix:
    scheme: str
    host: str
    port: int
    path: str  # without a trailing "/": "" allows every path of the origin

    def covers(self, url: _Url) -> bool:
        if (url.scheme, url.host, url.port) != (self.scheme, self.host, self.port):
            return False
        return not self.path or url.path == self.path or url.path.startswith(self.path + "/")


class AllowList:
    """The URL prefixes ``return_to`` may go to. An empty list allows nothing."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        parsed = []
        for entry in prefixes:
            try:
                url = _parse(entry)
            except Refused as refusal:
                raise ValueError(f"{entry!r} is not an allowed prefix ({refusal.reason})") from None
            if url.rest:
                raise ValueError(f"{entry!r} is not an allowed prefix (query or fragment)")
            parsed.append(
                _Prefix(scheme=url.scheme, host=url.host, port=url.port, path=url.path.rstrip("/"))
            )
        self._prefixes = tuple(parsed)

    @classmethod
    def from_setting(cls, value: str) -> AllowList:
        """From ``RESETFLOW_RETURN_TO_ALLOWED``: prefixes separated by commas."""
        return cls(item.strip() for item in value.split(",") if item.strip())

    def __bool__(self) -> bool:
        return bool(self._prefixes)

    def check(self, url: object) -> str:
        """``url`` itself when it may be followed; raises :class:`Refused` otherwise."""
        parsed = _parse(url)
        if not any(prefix.covers(parsed) for prefix in self._prefixes):
            raise Refused("not_allowed")
        assert isinstance(url, str)
        return url


def loggable(value: object) -> str:
    """What a log line may say about a refused value: no query or fragment (they may carry
    the host application's tokens), at most 100 characters, control and non-ASCII
    characters escaped."""
    if not isinstance(value, str):
        return type(value).__name__
    cut = min((i for i in (value.find("?"), value.find("#")) if i != -1), default=len(value))
    shown = value[: min(cut, 100)]
    return shown.encode("unicode_escape").decode("ascii")


# Through a flow ---------------------------------------------------------------------------


def allowed(request: Request, value: object, *, source: str) -> str | None:
    """``value`` when the allow-list lets it through; None, with a log line, otherwise."""
    if value is None:
        return None
    allow_list = AllowList.from_setting(request.app.state.services.settings.return_to_allowed)
    try:
        return allow_list.check(value)
    except Refused as refusal:
        log.warning(
            "return_to_refused",
            extra={"reason": refusal.reason, "source": source, "return_to": loggable(value)},
        )
        return None


def remember(request: Request, value: object, *, source: str = "body") -> None:
    """Keep an allowed ``value`` in the session for the rest of the flow."""
    url = allowed(request, value, source=source)
    if url is not None:
        session_of(request).set(SESSION_KEY, url)


def remember_from_query(request: Request) -> None:
    """A page opened with ``?return_to=``: remember it (its form also carries it)."""
    value = request.query_params.get("return_to")
    if value is not None:
        remember(request, value, source="query")


def pending(request: Request, *, sent: object = None) -> str | None:
    """Where the flow will go at its end: ``sent`` with the request, else the session's."""
    if sent is not None:
        return allowed(request, sent, source="body")
    kept = session_of(request).get(SESSION_KEY)
    return allowed(request, kept, source="session") if kept is not None else None


def destination(request: Request, *, default: str, sent: object = None) -> str:
    """At a flow's success: where to send the person. Uses the session's value up."""
    url = pending(request, sent=sent)
    session_of(request).pop(SESSION_KEY)
    return url or default


def restart_keeping(request: Request) -> None:
    """``session.restart()`` (after a reset), carrying ``return_to`` over to the new
    session: the flow goes on to sign-in, and ends there."""
    session = session_of(request)
    kept = session.get(SESSION_KEY)
    session.restart()
    if kept is not None:
        session.set(SESSION_KEY, kept)
