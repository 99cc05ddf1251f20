"""Email over SMTP (aiosmtplib): a multipart/alternative message, text and HTML.

Cost per message is kept low in two ways:

- **Connections are pooled.** A provider keeps up to ``pool_size`` (default 4) SMTP
  sessions open and sends one message at a time on each (MAIL, RCPT, DATA; no RSET
  after a successful transaction). The worker sends up to a batch (20) of jobs at once:
  a single session would make them queue behind each other's round trips to a remote
  relay, while one session per job (what a connection per message amounted to) is more
  than many relays allow one client. The name sent in EHLO is looked up once per
  provider (``socket.getfqdn`` in a thread, the name aiosmtplib would have sent), not
  once per connection.
- **The message is written directly** as RFC 5322 / MIME bytes (:func:`format_email`)
  instead of through :class:`email.message.EmailMessage`, whose header parser was most
  of the cost.

A session that the server closed while idle is noticed when it is taken from the pool
and replaced. If a reused session fails with a disconnect or a ``421`` *before DATA*
(MAIL or RCPT), the message is sent once more on a new session: the server cannot have
accepted it. A failure during or after DATA is never repeated here, since the server
may have accepted the message (the job's own retry decides, as before). Sessions idle
for ``idle_seconds`` (default 30) are closed with QUIT, as are all of them on
:meth:`SmtpProvider.close`. A send waits at most ``timeout`` for a free session.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import re
import socket
import ssl
from base64 import b64encode
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from secrets import token_hex

import aiosmtplib
from aiosmtplib.email import parse_address

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, ProviderError, SendResult

DEFAULT_POOL_SIZE = 4
DEFAULT_IDLE_SECONDS = 30.0
# The most a QUIT may take when a session is closed (idle, or on close()).
QUIT_TIMEOUT_SECONDS = 2.0
# Lines longer than this are sent quoted-printable (RFC 5322 2.1.1: SHOULD <= 78).
_MAX_PLAIN_LINE = 78
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Not for a 7bit body (RFC 2045 2.7): controls other than tab and line breaks.
_CONTROL_IN_BODY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class SmtpProvider(Provider):
    name = "smtp"
    channels = frozenset({Channel.EMAIL})

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
        pool_size: int = DEFAULT_POOL_SIZE,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        local_hostname: str | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout
        self._pool_size = pool_size
        self._idle_seconds = idle_seconds
        # None: socket.getfqdn(), looked up once, on the first connection.
        self._local_hostname = local_hostname
        self._tls_context: ssl.SSLContext | None = None
        try:
            self._envelope_from: str | None = parse_address(sender)
            self._from_header: str | None = _address_header(sender)
        except ValueError:
            # Not fatal here: send() raises the ValueError, as the old code did.
            self._envelope_from = self._from_header = None
        self._msgid_domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
        self._pool: _Pool | None = None

    async def send(self, message: RenderedMessage) -> SendResult:
        # Invalid addresses are refused here, before any connection is touched, and never
        # retried: a bad sender is our configuration, a bad recipient the account's.
        sender, from_header = self._envelope_from, self._from_header
        if sender is None or from_header is None:
            raise ProviderError(
                "invalid sender address (RESETFLOW_EMAIL_FROM)",
                retryable=False,
                configuration=True,
            )
        try:
            recipient = parse_address(message.to)
            to_header = recipient if recipient == message.to else _address_header(message.to)
        except ValueError:
            raise ProviderError(
                "invalid recipient address", retryable=False, recipient=True
            ) from None
        utf8 = not (sender.isascii() and recipient.isascii())
        message_id = make_msgid(domain=self._msgid_domain)
        raw = format_email(
            message, from_header=from_header, to_header=to_header, message_id=message_id
        )
        try:
            await self._deliver(sender, recipient, raw, utf8=utf8)
        except aiosmtplib.SMTPRecipientRefused as error:
            codes = [error.code]
            retryable = all(400 <= code < 500 for code in codes)
            # A permanent refusal is about this address: the next channel, not the next
            # email provider, is what may reach the person.
            raise ProviderError(
                f"recipient refused ({codes})", retryable=retryable, recipient=not retryable
            ) from None
        except aiosmtplib.SMTPAuthenticationError as error:
            raise ProviderError(
                f"SMTP login refused ({error.code}): check RESETFLOW_SMTP_USERNAME/_PASSWORD",
                retryable=False,
                configuration=True,
            ) from None
        except aiosmtplib.SMTPResponseException as error:
            raise ProviderError(f"SMTP {error.code}", retryable=400 <= error.code < 500) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise ProviderError(
                f"SMTP unavailable: {type(error).__name__}", retryable=True
            ) from None
        return SendResult(provider_message_id=message_id.strip("<>"))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if pool.loop is not asyncio.get_running_loop():
            pool.abandon()
            return
        await pool.shut()

    # The pool -------------------------------------------------------------------------

    def _current_pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None or pool.loop is not loop:
            # First use, or a new event loop (asyncio.run again): the old loop's sessions
            # cannot be used from this one.
            if pool is not None:
                pool.abandon()
            pool = self._pool = _Pool(loop=loop, slots=asyncio.Semaphore(self._pool_size))
        return pool

    async def _deliver(self, sender: str, recipient: str, raw: bytes, *, utf8: bool) -> None:
        pool = self._current_pool()
        # A free session is waited for at most one timeout: behind a hung server the
        # queue would otherwise hold a job well past its lease (TimeoutError: retryable).
        async with asyncio.timeout(self._timeout):
            await pool.slots.acquire()
        try:
            await self._deliver_on(pool, sender, recipient, raw, utf8=utf8)
        finally:
            pool.slots.release()

    async def _deliver_on(
        self, pool: _Pool, sender: str, recipient: str, raw: bytes, *, utf8: bool
    ) -> None:
        session, reused = pool.take(self._idle_seconds), True
        if session is None:
            session, reused = await self._connect(), False
        try:
            try:
                await _envelope(session, sender, recipient, len(raw), utf8=utf8)
            except (ConnectionError, aiosmtplib.SMTPResponseException) as error:
                if not (reused and _server_gone(error)):
                    raise
                # The server dropped a pooled session before taking the message:
                # once more, on a new session.
                session.close()
                session = await self._connect()
                await _envelope(session, sender, recipient, len(raw), utf8=utf8)
            await session.data(raw)
        except aiosmtplib.SMTPResponseException as error:
            await self._recover(pool, session, error)
            raise
        except BaseException:
            # Disconnected, timed out, cancelled: the session's state is unknown.
            session.close()
            raise
        pool.put(session, self._idle_seconds)

    async def _recover(
        self, pool: _Pool, session: aiosmtplib.SMTP, error: aiosmtplib.SMTPResponseException
    ) -> None:
        """After a refusal: keep the session (RSET) only for a permanent (5xx) refusal of
        this message; a 4xx may mean the session itself is unwelcome (421, limits)."""
        if 500 <= error.code < 600 and session.is_connected:
            try:
                await session.rset()
            except (aiosmtplib.SMTPException, OSError):
                session.close()
                return
            except BaseException:
                session.close()
                raise
            pool.put(session, self._idle_seconds)
            return
        pool.retire(session)

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        if self._starttls and self._tls_context is None:
            self._tls_context = await asyncio.to_thread(ssl.create_default_context)
        session = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            username=self._username,
            password=self._password,
            start_tls=self._starttls,
            timeout=self._timeout,
            tls_context=self._tls_context if self._starttls else None,
            local_hostname=self._local_hostname,
        )
        await session.connect()
        try:
            if session.is_ehlo_or_helo_needed:
                try:
                    await session.ehlo()
                except aiosmtplib.SMTPHeloError:
                    if not session.is_connected:
                        raise
                    await session.helo()
        except BaseException:
            session.close()
            raise
        return session


async def _envelope(
    session: aiosmtplib.SMTP, sender: str, recipient: str, size: int, *, utf8: bool
) -> None:
    """MAIL FROM and RCPT TO: nothing of the message has been sent yet."""
    options = []
    if session.supports_extension("size"):
        options.append(f"SIZE={size}")
    if utf8:
        if not session.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported(
                "An address containing non-ASCII characters was provided, but "
                "SMTPUTF8 is not supported by this server"
            )
        options.append("SMTPUTF8")
        if session.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
    encoding = "utf-8" if utf8 else "ascii"
    await session.mail(sender, options=options, encoding=encoding)
    await session.rcpt(recipient, encoding=encoding)


def _server_gone(error: BaseException) -> bool:
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return error.code == 421
    return isinstance(error, ConnectionError)


@dataclass(eq=False)
class _Pool:
    """The sessions of one provider in one event loop; ``slots`` bounds how many."""

    loop: asyncio.AbstractEventLoop
    slots: asyncio.Semaphore
    # Idle sessions and when each went idle (loop time); the last is the warmest.
    idle: list[tuple[aiosmtplib.SMTP, float]] = field(default_factory=list)
    reaper: asyncio.TimerHandle | None = None
    quitting: set[asyncio.Task[None]] = field(default_factory=set)
    closed: bool = False

    def take(self, idle_seconds: float) -> aiosmtplib.SMTP | None:
        now = self.loop.time()
        while self.idle:
            session, since = self.idle.pop()
            if session.is_connected and now - since < idle_seconds:
                return session
            self.retire(session)
        return None

    def put(self, session: aiosmtplib.SMTP, idle_seconds: float) -> None:
        if self.closed or not session.is_connected:
            session.close()
            return
        self.idle.append((session, self.loop.time()))
        if self.reaper is None:
            self.reaper = self.loop.call_later(idle_seconds, self._reap, idle_seconds)

    def _reap(self, idle_seconds: float) -> None:
        self.reaper = None
        now = self.loop.time()
        # A small tolerance: timers may fire up to the clock's resolution early.
        expired = [entry for entry in self.idle if now - entry[1] >= idle_seconds - 0.01]
        self.idle = [entry for entry in self.idle if now - entry[1] < idle_seconds - 0.01]
        for session, _ in expired:
            self.retire(session)
        if self.idle:
            oldest = min(since for _, since in self.idle)
            self.reaper = self.loop.call_later(
                oldest + idle_seconds - now, self._reap, idle_seconds
            )

    def retire(self, session: aiosmtplib.SMTP) -> None:
        """Close a session politely (QUIT) in the background."""
        if not session.is_connected:
            session.close()
            return
        task = self.loop.create_task(_quit(session))
        self.quitting.add(task)
        task.add_done_callback(self.quitting.discard)

    async def shut(self) -> None:
        for session in self._take_all_idle():
            self.retire(session)
        if self.quitting:
            await asyncio.gather(*self.quitting, return_exceptions=True)

    def abandon(self) -> None:
        """Drop everything without awaiting: the pool's loop is not the running one."""
        for session in self._take_all_idle():
            # Its loop may be closed: the socket then goes with the transport.
            with contextlib.suppress(RuntimeError):
                session.close()

    def _take_all_idle(self) -> list[aiosmtplib.SMTP]:
        """Close the pool to new sends, stop the idle reaper, hand over the idle sessions."""
        self.closed = True
        if self.reaper is not None:
            self.reaper.cancel()
            self.reaper = None
        idle, self.idle = self.idle, []
        return [session for session, _ in idle]


async def _quit(session: aiosmtplib.SMTP) -> None:
    try:
        await session.quit(timeout=QUIT_TIMEOUT_SECONDS)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        pass
    finally:
        session.close()


# The message ------------------------------------------------------------------------------


def format_email(
    message: RenderedMessage,
    *,
    from_header: str,
    to_header: str,
    message_id: str,
    date: datetime | None = None,
) -> bytes:
    """The message as sent after DATA: RFC 5322 headers (the subject RFC 2047-encoded when
    it is not plain ASCII), MIME 1.0, text/plain or multipart/alternative (text/plain,
    text/html) in UTF-8, each part 7bit or quoted-printable; CRLF line ends, lines of at
    most 78 characters (an unusually long header aside)."""
    head = "\r\n".join(
        [
            f"From: {from_header}",
            f"To: {to_header}",
            _unstructured("Subject", message.subject or ""),
            f"Date: {format_datetime(date or datetime.now(UTC))}",
            f"Message-ID: {message_id}",
            # RFC 3834: vacation responders and the like must not answer a code message.
            "Auto-Submitted: auto-generated",
            "MIME-Version: 1.0",
        ]
    )
    if message.html is None:
        return f"{head}\r\n{_part(message.text, 'plain')}".encode()
    # "=_" cannot occur in a quoted-printable body, and a 7bit body holding these 32
    # random hex digits is not a concern: the boundary needs no check against the parts.
    # The CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1).
    boundary = f"=_{token_hex(16)}"
    return (
        f'{head}\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\n{_part(message.text, 'plain')}"
        f"\r\n--{boundary}\r\n{_part(message.html, 'html')}"
        f"\r\n--{boundary}--\r\n"
    ).encode()


def _part(text: str, subtype: str) -> str:
    """A text part's headers, blank line and body, ending with CRLF: 7bit when the text
    is ASCII with short lines and no control characters, else quoted-printable UTF-8.
    Like EmailMessage's set_content, the text gets a final line break if it has none."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if (
        text.isascii()
        and not _CONTROL_IN_BODY.search(text)
        and max(map(len, text.split("\n"))) <= _MAX_PLAIN_LINE
    ):
        encoding, body = "7bit", text.replace("\n", "\r\n")
    else:
        encoding = "quoted-printable"
        body = binascii.b2a_qp(text.encode(), istext=True).decode("ascii").replace("\n", "\r\n")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n{body}"
    )


def _unstructured(name: str, value: str) -> str:
    """``Name: value`` folded to 78 columns, as is when it is printable ASCII, else as
    RFC 2047 encoded words (UTF-8, base64; no character split between words)."""
    words = value.split(" ")
    if value.isascii() and value.isprintable() and "=?" not in value and max(map(len, words)) < 900:
        lines, line = [], f"{name}:"
        for word in words:
            if word and line.strip() and len(line) + 1 + len(word) > _MAX_PLAIN_LINE:
                lines.append(line)
                line = ""
            line += f" {word}"
        return "\r\n".join([*lines, line])
    data = value.encode()
    # An encoded word is at most 75 characters and a line holding one at most 76.
    first = max((76 - len(name) - 2 - len("=?utf-8?b??=")) // 4 * 3, 6)
    rest = (75 - len("=?utf-8?b??=")) // 4 * 3
    words, start, limit = [], 0, first
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            end -= 1
        words.append(f"=?utf-8?b?{b64encode(data[start:end]).decode('ascii')}?=")
        start, limit = end, rest
    return f"{name}: " + "\r\n ".join(words)


def _address_header(value: str) -> str:
    """An address header's value: a display name is RFC 2047-encoded if it is not ASCII
    (an address that is not ASCII goes as it is: it is only sent with SMTPUTF8)."""
    if _CONTROL.search(value):
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    name, address = parseaddr(value)
    if not name or not address:
        return address or value
    try:
        return formataddr((name, address), charset="utf-8")
    except UnicodeEncodeError:
        return value
