"""The benchmarks' SMTP sink: the tests' aiosmtpd server (tests/support/servers.py) with
a handler that only notes the arrival time and the raw message (parsing waits until
after the run, off the hot path), then reads the code out of each."""

from __future__ import annotations

import contextlib
import email
import email.policy
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import SmtpSink, smtp_server

CODE = re.compile(r"\b(\d{6})\b")
LINK = re.compile(r"https?://\S+")


@dataclass
class Message:
    arrived: float  # time.time()
    to: str
    code: str | None  # a 6-digit code, else the first link (a peer's reset link), else None


@dataclass
class TimedSink(SmtpSink):
    """Keeps (arrival time, recipients, raw bytes) of each message."""

    raw: list[tuple[float, tuple[str, ...], bytes]] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.time()
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        with self._lock:
            self.raw.append((arrived, tuple(envelope.rcpt_tos), content))
        return "250 Message accepted"

    def count(self) -> int:
        with self._lock:
            return len(self.raw)

    def clear(self) -> None:
        with self._lock:
            self.raw.clear()

    def received(self) -> list[Message]:
        with self._lock:
            raw = list(self.raw)
        out: list[Message] = []
        for arrived, rcpts, content in raw:
            parsed = email.message_from_bytes(content, policy=email.policy.default)
            body = parsed.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""
            code, link = CODE.search(text), LINK.search(text)
            key = code.group(1) if code else link.group(0) if link else None
            out += [Message(arrived, to.lower(), key) for to in rcpts]
        return out


@contextlib.contextmanager
def running_sink() -> Iterator[TimedSink]:
    """A :class:`TimedSink` on a free loopback port (``sink.port``) while the block runs."""
    sink = TimedSink()
    with smtp_server(sink) as (_, port):
        sink.port = port
        yield sink
