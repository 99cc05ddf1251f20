"""``resetflow serve``'s check that it can listen, before it starts anything.

uvicorn reports a port already taken as a JSON log line and exit status 3; with one
process only after the application has started up, with ``--workers`` after migrations
ran. :func:`check_can_listen` finds out first and says so in one line.

It only probes: uvicorn still binds the listening socket(s) itself, so ``--host`` and
``--port`` mean what they always meant. (TCP_NODELAY on the connections, missing with
``--workers`` because of how uvicorn binds that socket, uvicorn issue #3149, is set by
:mod:`resetflow.web.nodelay`.) A port taken between the probe and uvicorn's bind still
fails, with uvicorn's message.
"""

from __future__ import annotations

import errno
import socket


class ListenError(Exception):
    """``serve`` cannot listen on the address asked for; the message is one line."""


def display_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_can_listen(host: str, port: int) -> None:
    """Bind, then release at once, a TCP socket on every address ``host`` resolves to,
    as asyncio's ``create_server`` would (``SO_REUSEADDR``; ``IPV6_V6ONLY`` for IPv6). An
    address that is not available here (``::1`` without IPv6) is skipped if another one
    could be bound.

    Raises :class:`ListenError` if the port is in use, the host is not an address of
    this machine or cannot be resolved, or the port needs privileges."""
    where = display_address(host, port)
    try:
        found = socket.getaddrinfo(
            host or None,
            port,
            type=socket.SOCK_STREAM,
            proto=socket.IPPROTO_TCP,
            flags=socket.AI_PASSIVE,
        )
    except (socket.gaierror, UnicodeError) as error:
        raise ListenError(f"cannot listen on {where}: cannot resolve {host!r} ({error})") from None
    bound = 0
    unavailable: OSError | None = None
    for family, kind, proto, _, address in dict.fromkeys(found):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # a family this machine does not support (asyncio skips it too)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                if error.errno != errno.EADDRNOTAVAIL:
                    raise ListenError(f"cannot listen on {where}: {_reason(error, port)}") from None
                unavailable = error  # e.g. ::1 for "localhost" on a machine without IPv6
                continue
            bound += 1
    if not bound:
        reason = "no address" if unavailable is None else _reason(unavailable, port)
        raise ListenError(f"cannot listen on {where}: {reason}")


def _reason(error: OSError, port: int) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} is already in use (is another server running?)"
    if error.errno == errno.EACCES:
        return f"permission denied (port {port} needs privileges)"
    if error.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine"
    return (error.strerror or str(error)).lower()
