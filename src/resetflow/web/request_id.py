"""A request id on every answer (``X-Request-ID``) and every log line of that request.

An id sent by a trusted front end (a load balancer that already assigned one) is kept if
it looks like an id; anything else is replaced, so that log lines cannot be forged
through the header.
"""

from __future__ import annotations

import re
import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resetflow.logs import request_id

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next(
            (value.decode("latin-1") for key, value in scope["headers"] if key == b"x-request-id"),
            "",
        )
        current = incoming if SAFE_ID.match(incoming) else secrets.token_hex(8)
        token = request_id.set(current)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = current
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
