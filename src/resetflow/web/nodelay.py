"""uvicorn's HTTP protocols with TCP_NODELAY set on every accepted connection.

Why: with ``serve --workers N`` (N > 1) uvicorn's supervisor binds the listening socket
itself as ``socket.socket(family)``, i.e. with ``proto`` 0, and hands it to the worker
processes. asyncio sets TCP_NODELAY on accepted connections only when the listening
socket's ``proto`` is ``IPPROTO_TCP``, so in that mode Nagle's algorithm stayed on: a
response written in two pieces (headers, then body) waited for the client's delayed ACK,
about 40 ms per keep-alive request (/healthz fell from ~2,600 to ~725 req/s; uvicorn
issue #3149). A single process was not affected (``loop.create_server(host, port)`` makes
``IPPROTO_TCP`` sockets).

(uvloop, when installed with uvicorn[standard], sets the option itself; asyncio, the
event loop without it, does not.) The fix does not depend on how or by whom the listening
socket was made: the protocol sets the option itself when a connection is made, for one
process or many, on either loop. ``resetflow serve`` passes :data:`HTTP_PROTOCOL` as
uvicorn's ``http=`` option: an import string of a module-level class, because with
``--workers`` each child process rebuilds its configuration by importing it.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol

# uvicorn's ``http=`` option for ``resetflow serve``.
HTTP_PROTOCOL = f"{__name__}:NoDelayHTTPProtocol"


def set_nodelay(transport: asyncio.BaseTransport) -> bool:
    """Turn Nagle's algorithm off on a TCP transport's socket; returns whether it did
    (False for Unix sockets, or a connection already gone)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # reset by the peer before we got to it: nothing left to speed up
        return False
    return True


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with TCP_NODELAY."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)


NoDelayHTTPProtocol: type[asyncio.Protocol] = NoDelayH11Protocol
"""The protocol ``http="auto"`` would pick (httptools when installed, else h11), with
TCP_NODELAY."""

try:  # httptools is optional (uvicorn[standard]); its protocol module imports it
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:
    pass
else:

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, with TCP_NODELAY."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            set_nodelay(transport)
            super().connection_made(transport)

    if issubclass(AutoHTTPProtocol, HttpToolsProtocol):
        NoDelayHTTPProtocol = NoDelayHttpToolsProtocol
