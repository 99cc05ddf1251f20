"""Email over SMTP (aiosmtplib): a multipart/alternative message, text and HTML."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, ProviderError, SendResult


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
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout

    async def send(self, message: RenderedMessage) -> SendResult:
        email = EmailMessage()
        email["From"] = self._sender
        email["To"] = message.to
        email["Subject"] = message.subject or ""
        message_id = make_msgid(domain=self._sender.rpartition("@")[2] or "localhost")
        email["Message-ID"] = message_id
        email.set_content(message.text)
        if message.html:
            email.add_alternative(message.html, subtype="html")
        try:
            await aiosmtplib.send(
                email,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._starttls,
                timeout=self._timeout,
                tls_context=ssl.create_default_context() if self._starttls else None,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [response.code for response in error.recipients]
            retryable = all(400 <= code < 500 for code in codes)
            raise ProviderError(f"recipient refused ({codes})", retryable=retryable) from None
        except aiosmtplib.SMTPResponseException as error:
            raise ProviderError(f"SMTP {error.code}", retryable=400 <= error.code < 500) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise ProviderError(
                f"SMTP unavailable: {type(error).__name__}", retryable=True
            ) from None
        return SendResult(provider_message_id=message_id.strip("<>"))
