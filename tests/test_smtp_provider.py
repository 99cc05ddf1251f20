"""The SMTP provider against a real aiosmtpd server on loopback: pooled sessions (one
connection for many messages, at most ``pool_size`` at once), the reconnect rule (once,
only on a pooled session and only before DATA), idle close, close(), the unchanged error
classes, and the message it writes (parsed back with the standard library)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from resetflow.accounts.models import Channel
from resetflow.clock import Clock
from resetflow.config import Settings
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers import smtp as smtp_module
from resetflow.notify.providers.base import ProviderError
from resetflow.notify.providers.registry import build_providers
from resetflow.notify.providers.smtp import SmtpProvider, format_email
from resetflow.notify.templates import TemplateRenderer
from resetflow.storage.database import Database
from resetflow.storage.dev_mailbox import DevMailbox
from tests.support.servers import SmtpSink, free_port, run, smtp_server

SENDER = "resetflow@example.org"
EHLO_NAME = "worker-1.example.org"


@dataclass
class WatchedSink(SmtpSink):
    """An SmtpSink that also counts sessions (one EHLO each), QUITs and raw messages, and
    can drop connections: all of them, at the next MAIL commands, or right after DATA."""

    ehlo_names: list[str] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    quits: int = 0
    raw: list[bytes] = field(default_factory=list)
    # Close the connection, unanswered, at the next this-many MAIL commands.
    drop_at_mail: int = 0
    # Answer the next MAIL commands with these replies instead of 250.
    mail_replies: list[str] = field(default_factory=list)
    # Keep the next this-many messages, then close the connection before the reply.
    drop_after_data: int = 0
    _servers: list[Any] = field(default_factory=list)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self._lock:
            self.ehlo_names.append(hostname)
            self.peers.add(session.peer)
            self._servers.append(server)
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        with self._lock:
            if self.drop_at_mail:
                self.drop_at_mail -= 1
                server.transport.close()
                return "421 4.3.0 never sent"
            if self.mail_replies:
                return self.mail_replies.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        status = await super().handle_DATA(server, session, envelope)
        with self._lock:
            self.raw.append(envelope.original_content)
            if self.drop_after_data:
                self.drop_after_data -= 1
                server.transport.close()
        return status

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.quits += 1
        return "221 Bye"

    @property
    def sessions(self) -> int:
        with self._lock:
            return len(self.ehlo_names)

    def drop_connections(self) -> None:
        """Close every connection from the server's side (as an idle timeout would), and
        return once the sockets are closed."""
        with self._lock:
            servers = list(self._servers)
        for server in servers:
            closed = threading.Event()
            server.loop.call_soon_threadsafe(_close_transport, server, closed)
            assert closed.wait(10), "the server did not close the connection"


def _close_transport(server: Any, closed: threading.Event) -> None:
    if server.transport is not None:
        server.transport.close()  # the socket closes in a callback scheduled now...
    server.loop.call_soon(closed.set)  # ...so it is closed when this one runs


@pytest.fixture
def sink() -> Iterator[tuple[WatchedSink, int]]:
    with smtp_server(WatchedSink()) as (server_sink, port):
        assert isinstance(server_sink, WatchedSink)
        yield server_sink, port


def _provider(port: int, **options: Any) -> SmtpProvider:
    options.setdefault("local_hostname", EHLO_NAME)
    options.setdefault("timeout", 5.0)
    return SmtpProvider(host="127.0.0.1", port=port, sender=SENDER, **options)


def _message(to: str, *, text: str = "Your code is 123456\n", **fields: Any) -> RenderedMessage:
    fields.setdefault("subject", "Your password reset token")
    fields.setdefault("html", "<p>Your code is <strong>123456</strong></p>")
    return RenderedMessage(
        notification="password-reset-token", channel=Channel.EMAIL, to=to, text=text, **fields
    )


def _in_loop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    run(scenario())


async def _until(condition: Callable[[], bool], what: str, *, timeout: float = 10.0) -> None:
    """Wait for something the server does on its own time (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _ids(found: WatchedSink) -> list[str]:
    with found._lock:
        return [str(mail.message["Message-ID"]) for mail in found.messages]


# One connection, many messages --------------------------------------------------------


def test_sequential_messages_share_one_connection(sink: tuple[WatchedSink, int]) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        results = [await provider.send(_message(f"user{i}@example.com")) for i in range(10)]
        await provider.close()
        assert [f"<{r.provider_message_id}>" for r in results] == _ids(server)

    _in_loop(scenario)
    assert len(server.messages) == 10
    assert server.sessions == 1 and len(server.peers) == 1
    assert server.ehlo_names == [EHLO_NAME]
    assert [m.recipients for m in server.messages] == [[f"user{i}@example.com"] for i in range(10)]
    assert {m.sender for m in server.messages} == {SENDER}
    assert server.quits == 1  # close() said goodbye


def test_the_ehlo_name_is_looked_up_once_per_provider(
    sink: tuple[WatchedSink, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without local_hostname, socket.getfqdn (what aiosmtplib would send) runs once, not
    once per connection."""
    server, port = sink
    calls: list[int] = []

    def getfqdn(name: str = "") -> str:
        calls.append(1)
        return "host.example.net"

    # The provider module's own reference: aiosmtpd calls socket.getfqdn per connection too.
    monkeypatch.setattr(smtp_module, "socket", SimpleNamespace(getfqdn=getfqdn))

    async def scenario() -> None:
        provider = _provider(port, local_hostname=None)
        await provider.send(_message("a@example.com"))
        server.drop_connections()
        await provider.send(_message("b@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert server.ehlo_names == ["host.example.net", "host.example.net"]
    assert len(calls) == 1


def test_concurrent_sends_use_at_most_pool_size_connections(sink: tuple[WatchedSink, int]) -> None:
    server, port = sink
    addresses = [f"user{i}@example.com" for i in range(40)]

    async def scenario() -> None:
        provider = _provider(port, pool_size=4)
        first = await asyncio.gather(*(provider.send(_message(a)) for a in addresses[:20]))
        second = await asyncio.gather(*(provider.send(_message(a)) for a in addresses[20:]))
        await provider.close()
        ids = [f"<{r.provider_message_id}>" for r in (*first, *second)]
        assert sorted(ids) == sorted(_ids(server)) and len(set(ids)) == 40

    _in_loop(scenario)
    assert sorted(r for m in server.messages for r in m.recipients) == sorted(addresses)
    assert 1 <= server.sessions <= 4
    assert server.quits == server.sessions


def test_a_pool_of_one_sends_concurrent_messages_one_after_the_other(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port, pool_size=1)
        await asyncio.gather(*(provider.send(_message(f"u{i}@example.com")) for i in range(10)))
        await provider.close()

    _in_loop(scenario)
    assert len(server.messages) == 10 and server.sessions == 1


# The server closes the connection --------------------------------------------------------


def test_a_connection_the_server_closed_while_idle_is_replaced(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        await provider.send(_message("a@example.com"))
        server.drop_connections()
        await provider.send(_message("b@example.com"))
        await provider.send(_message("c@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert [m.recipients for m in server.messages] == [
        ["a@example.com"],
        ["b@example.com"],
        ["c@example.com"],
    ]
    assert server.sessions == 2


def test_a_pooled_connection_dropped_at_mail_is_retried_once_on_a_new_one(
    sink: tuple[WatchedSink, int],
) -> None:
    """The server drops the pooled session just as MAIL is sent: the message cannot have
    been accepted, so it goes once more on a new session, and arrives exactly once."""
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        await provider.send(_message("a@example.com"))
        server.drop_at_mail = 1
        result = await provider.send(_message("b@example.com"))
        assert _ids(server)[-1] == f"<{result.provider_message_id}>"
        await provider.close()

    _in_loop(scenario)
    assert [m.recipients for m in server.messages] == [["a@example.com"], ["b@example.com"]]
    assert server.sessions == 2


def test_a_421_at_mail_on_a_pooled_connection_is_retried_once(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        await provider.send(_message("a@example.com"))
        server.mail_replies.append("421 4.7.0 Too many messages in this session")
        await provider.send(_message("b@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert [m.recipients for m in server.messages] == [["a@example.com"], ["b@example.com"]]
    assert server.sessions == 2


def test_the_reconnect_happens_only_once(sink: tuple[WatchedSink, int]) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        await provider.send(_message("a@example.com"))
        server.drop_at_mail = 2
        with pytest.raises(ProviderError) as failed:
            await provider.send(_message("b@example.com"))
        assert str(failed.value) == "SMTP unavailable: SMTPServerDisconnected"
        assert failed.value.retryable
        await provider.send(_message("c@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert [m.recipients for m in server.messages] == [["a@example.com"], ["c@example.com"]]
    assert server.sessions == 3


def test_a_new_connection_dropped_at_mail_is_not_retried(sink: tuple[WatchedSink, int]) -> None:
    """Only a pooled session gets the transparent second try; a fresh one failing is an
    outage, reported (retryable) as before."""
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        server.drop_at_mail = 1
        with pytest.raises(ProviderError) as failed:
            await provider.send(_message("a@example.com"))
        assert failed.value.retryable and not failed.value.recipient
        await provider.send(_message("b@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert [m.recipients for m in server.messages] == [["b@example.com"]]
    assert server.sessions == 2


def test_a_drop_after_data_is_not_retried_so_the_message_is_not_sent_twice(
    sink: tuple[WatchedSink, int],
) -> None:
    """The server took the message and the connection died before its reply: it may have
    been accepted, so the provider reports a retryable failure instead of resending."""
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        await provider.send(_message("a@example.com"))
        server.drop_after_data = 1
        with pytest.raises(ProviderError) as failed:
            await provider.send(_message("b@example.com"))
        assert failed.value.retryable
        await provider.send(_message("c@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert [m.recipients for m in server.messages] == [
        ["a@example.com"],
        ["b@example.com"],
        ["c@example.com"],
    ]
    assert server.sessions == 2


# Idle close and close() -------------------------------------------------------------------


def test_an_idle_connection_is_closed_with_quit_and_reopened_when_needed(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port, idle_seconds=0.2)
        await provider.send(_message("a@example.com"))
        await _until(lambda: server.quits == 1, "the idle connection's QUIT")
        await provider.send(_message("b@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert len(server.messages) == 2
    assert server.sessions == 2 and server.quits == 2


def test_close_quits_every_idle_connection_and_a_later_send_reconnects(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port, pool_size=3)
        await asyncio.gather(*(provider.send(_message(f"u{i}@example.com")) for i in range(6)))
        opened = server.sessions
        await provider.close()
        assert server.quits == opened
        await provider.close()  # twice is fine
        await provider.send(_message("later@example.com"))
        await provider.close()
        assert server.sessions == opened + 1 and server.quits == opened + 1

    _in_loop(scenario)
    assert len(server.messages) == 7


def test_a_provider_used_from_a_new_event_loop_opens_a_new_connection(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink
    provider = _provider(port)
    run(provider.send(_message("a@example.com")))
    run(provider.send(_message("b@example.com")))
    run(provider.close())
    assert len(server.messages) == 2 and server.sessions == 2


# Error classes, as before -------------------------------------------------------------


def test_a_refused_recipient_is_classified_and_the_connection_kept(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink
    server.refuse["gone@example.com"] = "550 5.1.1 No such user"
    server.refuse["later@example.com"] = "450 4.2.1 Try again later"

    async def scenario() -> None:
        provider = _provider(port)
        with pytest.raises(ProviderError) as refused:
            await provider.send(_message("gone@example.com"))
        assert str(refused.value) == "recipient refused ([550])"
        # Permanent and about the address: the worker moves on to the next channel.
        assert not refused.value.retryable and refused.value.recipient
        await provider.send(_message("a@example.com"))  # same session, after RSET
        assert server.sessions == 1
        with pytest.raises(ProviderError) as deferred:
            await provider.send(_message("later@example.com"))
        assert str(deferred.value) == "recipient refused ([450])"
        assert deferred.value.retryable
        await provider.send(_message("b@example.com"))  # a 4xx retires the session
        assert server.sessions == 2
        await provider.close()

    _in_loop(scenario)
    assert [m.recipients for m in server.messages] == [["a@example.com"], ["b@example.com"]]


def test_reply_codes_and_an_unreachable_server_are_classified_as_before(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        server.mail_replies.append("554 5.7.1 Sender rejected")
        with pytest.raises(ProviderError) as rejected:
            await provider.send(_message("a@example.com"))
        assert (str(rejected.value), rejected.value.retryable) == ("SMTP 554", False)
        server.mail_replies.append("451 4.3.0 Local error")
        with pytest.raises(ProviderError) as deferred:
            await provider.send(_message("a@example.com"))
        assert (str(deferred.value), deferred.value.retryable) == ("SMTP 451", True)
        await provider.close()

        nobody = SmtpProvider(host="127.0.0.1", port=_closed_port(), sender=SENDER, timeout=2)
        with pytest.raises(ProviderError) as unreachable:
            await nobody.send(_message("a@example.com"))
        assert str(unreachable.value) == "SMTP unavailable: SMTPConnectError"
        assert unreachable.value.retryable
        await nobody.close()

    _in_loop(scenario)
    assert server.messages == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The message ----------------------------------------------------------------------------


def test_the_message_parses_back_with_subject_parts_and_headers(
    sink: tuple[WatchedSink, int],
) -> None:
    server, port = sink
    rendered = TemplateRenderer().render(
        "password-reset-token",
        channel=Channel.EMAIL,
        to="ada@example.com",
        locale="es",
        context={"name": "Ada", "token": "123456", "ttl_minutes": 15},
    )
    emoji = _message(
        "ada@example.com",
        subject="Hola, Ada 👋 Tu código para restablecer la contraseña: 123456",
        text="Hola, Ada 👋\n\nTu código: 123456\n",
        html="<p>Hola, Ada 👋</p><p>Tu código: <b>123456</b></p>\n",
    )
    results = []

    async def scenario() -> None:
        provider = _provider(port)
        for message in (rendered, emoji):
            results.append(await provider.send(message))
        await provider.close()

    _in_loop(scenario)
    assert rendered.subject == "Tu código para restablecer la contraseña"
    for message, result, mail, raw in zip(
        (rendered, emoji), results, server.messages, server.raw, strict=True
    ):
        parsed = mail.message
        assert parsed["Subject"] == message.subject
        assert parsed["From"] == SENDER and parsed["To"] == "ada@example.com"
        assert parsed["Message-ID"] == f"<{result.provider_message_id}>"
        assert parsed["MIME-Version"] == "1.0"
        assert parsed["Auto-Submitted"] == "auto-generated"  # RFC 3834: no auto-replies
        assert parsedate_to_datetime(str(parsed["Date"])).utcoffset() is not None
        assert parsed.get_content_type() == "multipart/alternative"
        parts = list(parsed.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        assert {p.get_content_charset() for p in parts} == {"utf-8"}
        assert _lf(mail.text) == message.text
        assert message.html is not None and _lf(mail.html or "") == message.html.rstrip("\n") + "\n"
        assert raw.isascii()
        assert max(len(line) for line in raw.split(b"\r\n")) <= 78
        assert not parsed.defects and not any(p.defects for p in parts)
        assert "=?utf-8?" in raw.decode("ascii")  # the subject is RFC 2047-encoded


def test_a_message_without_html_is_a_single_text_part(sink: tuple[WatchedSink, int]) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        await provider.send(_message("a@example.com", html=None, text="Código: 123456\n"))
        await provider.close()

    _in_loop(scenario)
    [mail] = server.messages
    assert mail.message.get_content_type() == "text/plain"
    assert mail.message.get_content_charset() == "utf-8"
    assert _lf(mail.text) == "Código: 123456\n" and mail.html is None


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize(
    "subject",
    [
        "",
        "Your password reset token",
        "A long plain subject " * 8,
        "Ends with a space ",
        "Looks =?utf-8?q?encoded?= but is not",
        "ñ" * 100,
        "👋" * 40,
        "Contraseña " * 12 + "👋",
    ],
)
def test_subjects_round_trip_and_lines_stay_short(subject: str) -> None:
    raw = format_email(
        _message("a@example.com", subject=subject),
        from_header=SENDER,
        to_header="a@example.com",
        message_id="<1@example.org>",
    )
    parsed = _parse(raw)
    assert parsed["Subject"] == subject
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert raw.isascii()
    assert not parsed.defects


def test_long_lines_and_special_characters_round_trip() -> None:
    text = "x" * 2000 + "\n. a dot line\nFrom here\ntrailing space \n=3D literal\nnul \x00\n"
    html = "<p>" + "é" * 1500 + "</p>"
    raw = format_email(
        _message("a@example.com", text=text, html=html),
        from_header='"Resetflow, Inc." <resetflow@example.org>',
        to_header="a@example.com",
        message_id="<1@example.org>",
    )
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = _parse(raw)
    plain = parsed.get_body(preferencelist=("plain",))
    rich = parsed.get_body(preferencelist=("html",))
    assert plain is not None and rich is not None
    assert _lf(plain.get_content()) == text
    assert _lf(rich.get_content()) == html + "\n"
    assert b"\x00" not in raw
    assert parsed["From"].addresses[0].display_name == "Resetflow, Inc."


def test_a_non_ascii_sender_name_is_encoded() -> None:
    provider = SmtpProvider(host="127.0.0.1", port=25, sender="Contraseñas <no-reply@example.org>")
    raw = format_email(
        _message("a@example.com"),
        from_header=provider._from_header or "",
        to_header="a@example.com",
        message_id="<1@example.org>",
    )
    assert raw.isascii()
    sender = _parse(raw)["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Contraseñas", "no-reply@example.org")


def test_header_injection_is_refused(sink: tuple[WatchedSink, int]) -> None:
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        with pytest.raises(ProviderError) as bad_recipient:
            await provider.send(_message("a@example.com\r\nBcc: b@example.com"))
        assert bad_recipient.value.recipient and not bad_recipient.value.retryable
        for sender in ("no-reply@example.org\r\nBcc: b@example.com", "a b@example.org"):
            bad = SmtpProvider(host="127.0.0.1", port=port, sender=sender)
            with pytest.raises(ProviderError) as bad_sender:
                await bad.send(_message("a@example.com"))
            assert bad_sender.value.configuration and not bad_sender.value.retryable
        subject = _message("a@example.com", subject="Hi\r\nBcc: b@example.com")
        await provider.send(subject)
        await provider.close()

    _in_loop(scenario)
    [mail] = server.messages
    assert mail.recipients == ["a@example.com"] and mail.message["Bcc"] is None


def test_no_thread_per_message(sink: tuple[WatchedSink, int]) -> None:
    """With a configured EHLO name, sending needs no helper thread (getfqdn, TLS context)."""
    server, port = sink
    threads: list[str] = []

    async def scenario() -> None:
        provider = _provider(port)
        loop = asyncio.get_running_loop()
        original = loop.run_in_executor

        def spy(*args: Any) -> Any:
            threads.append(threading.current_thread().name)
            return original(*args)

        loop.run_in_executor = spy  # type: ignore[method-assign]
        for i in range(5):
            await provider.send(_message(f"u{i}@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert len(server.messages) == 5 and threads == []


def test_the_subject_is_folded_at_spaces_when_plain() -> None:
    raw = format_email(
        _message("a@example.com", subject="word " * 30),
        from_header=SENDER,
        to_header="a@example.com",
        message_id="<1@example.org>",
    )
    header = re.search(rb"Subject:(.*?)\r\n(?! )", raw, re.S)
    assert header is not None and b"=?" not in header.group(1) and b"\r\n " in header.group(1)


def test_waiting_for_a_busy_pool_is_bounded_by_the_timeout(sink: tuple[WatchedSink, int]) -> None:
    """Behind a hung server the queue must not hold a job past its lease: a send that
    gets no session within the timeout fails, retryably."""
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port, pool_size=1, timeout=0.2)
        pool = provider._current_pool()
        await pool.slots.acquire()  # the one session is busy (hung)
        with pytest.raises(ProviderError) as failed:
            await provider.send(_message("a@example.com"))
        assert (str(failed.value), failed.value.retryable) == (
            "SMTP unavailable: TimeoutError",
            True,
        )
        pool.slots.release()
        await provider.send(_message("b@example.com"))
        await provider.close()

    _in_loop(scenario)
    assert [m.recipients for m in server.messages] == [["b@example.com"]]


def test_a_non_ascii_address_goes_with_smtputf8(sink: tuple[WatchedSink, int]) -> None:
    """email-validator accepts internationalised addresses; they need SMTPUTF8, as before."""
    server, port = sink

    async def scenario() -> None:
        provider = _provider(port)
        await provider.send(_message("ñandú@example.com"))
        await provider.close()

    _in_loop(scenario)
    [mail] = server.messages
    assert mail.recipients == ["ñandú@example.com"]
    assert mail.message["To"] == "ñandú@example.com"
    assert mail.message["Subject"] == "Your password reset token"


def test_a_refused_login_is_a_configuration_error() -> None:
    """535 at AUTH: our credentials are wrong, so no retry; the channel's next provider
    may still work."""

    def refuse(*_args: Any) -> AuthResult:
        return AuthResult(success=False, handled=False)

    port = free_port()
    controller = Controller(
        SmtpSink(), hostname="127.0.0.1", port=port, authenticator=refuse, auth_require_tls=False
    )
    controller.start()
    try:

        async def scenario() -> None:
            provider = _provider(port, username="ada", password="wrong")
            with pytest.raises(ProviderError) as refused:
                await provider.send(_message("a@example.com"))
            assert refused.value.configuration and not refused.value.retryable
            assert "wrong" not in str(refused.value)
            await provider.close()

        _in_loop(scenario)
    finally:
        controller.stop()


def test_the_smtp_pool_settings_reach_the_provider(
    sink: tuple[WatchedSink, int], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """RESETFLOW_SMTP_POOL_SIZE bounds the sessions, RESETFLOW_SMTP_IDLE_SECONDS closes
    an unused one (QUIT) after that long."""
    server, port = sink
    settings = make_settings(
        email_provider="smtp",
        sms_provider="console",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_pool_size=2,
        smtp_idle_seconds=0.2,
    )
    mailbox = DevMailbox(database=Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"))
    [provider] = build_providers(settings, mailbox=mailbox, clock=Clock())[Channel.EMAIL]

    async def scenario() -> None:
        await asyncio.gather(*(provider.send(_message(f"u{i}@example.com")) for i in range(12)))
        await _until(lambda: server.quits == server.sessions, "the idle sessions' QUIT")
        await provider.close()

    _in_loop(scenario)
    assert len(server.messages) == 12
    assert server.sessions == 2  # 12 at once, through two sessions
