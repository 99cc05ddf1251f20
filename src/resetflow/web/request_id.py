"""A request id on every answer (``X-Request-ID``) and every log line of that request.

An id sent by a trusted front end (a load balancer that already assigned one) is kept if
it looks like an id; anything else is replaced, so that log lines cannot be forged
through the header.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resetflow.logs import request_id

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
HEADER = b"x-request-id"
# Ids made from one read of the system's random source (a system call per request cost
# more than the rest of this middleware): 64 random bits each, as secrets.token_hex(8).
IDS_PER_READ = 256


def fresh_ids() -> Iterator[str]:
    """Endless new request ids: 16 hex digits each, from ``os.urandom``."""
    while True:
        pool = os.urandom(8 * IDS_PER_READ).hex()
        for start in range(0, len(pool), 16):
            yield pool[start : start + 16]


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._ids = fresh_ids()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (value.decode("latin-1") for key, value in scope["headers"] if key == HEADER),
            "",
        )
        current = incoming if SAFE_ID.match(incoming) else next(self._ids)
        token = request_id.set(current)
        ours = (HEADER, current.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Replaces one the app may have set, in one pass over the list.
                message["headers"] = [
                    pair for pair in message.get("headers", ()) if pair[0] != HEADER
                ] + [ours]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
