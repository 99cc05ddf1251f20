"""Email through Postmark's Email API.

``POST {base}/email`` with the headers ``X-Postmark-Server-Token``, ``Accept`` and
``Content-Type: application/json``, and a JSON body ``From``/``To``/``Subject``/
``TextBody``/``HtmlBody``/``MessageStream`` (plus ``Tag``: the notification's name, which
Postmark's statistics group by). Postmark answers ``200`` with
``{"To", "SubmittedAt", "MessageID", "ErrorCode": 0, "Message": "OK"}`` (``MessageID`` is
our provider message id), or an error status with ``{"ErrorCode", "Message"}``:
``401`` for a bad token, ``422`` for a request it will not take (``ErrorCode`` 406: the
recipient is inactive after a hard bounce, a spam complaint or a manual suppression),
``429`` when rate-limited, ``5xx`` when it is down.

Postmark takes no idempotency key: a request that timed out may have been sent, and its
retry may send the message twice. That is the lesser harm for a one-time code.
"""

from __future__ import annotations

import httpx

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import ProviderError, SendResult
from resetflow.notify.providers.http import HttpProvider, json_object, retryable_status, unreachable

INACTIVE_RECIPIENT = 406
# "Invalid email request": the request itself is wrong; sending it again will not help.
INVALID_REQUEST = 300
# "Bad or missing API token" (HTTP 401): a configuration error, not retried, though the
# channel's next provider is tried.
BAD_TOKEN = 10


class PostmarkProvider(HttpProvider):
    name = "postmark"
    channels = frozenset({Channel.EMAIL})

    def __init__(
        self,
        *,
        server_token: str,
        sender: str,
        message_stream: str = "outbound",
        base_url: str = "https://api.postmarkapp.com",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/email"
        self._headers = {
            "Accept": "application/json",
            "X-Postmark-Server-Token": server_token,
        }
        self._sender = sender
        self._stream = message_stream
        super().__init__(client=client, timeout=timeout)

    async def send(self, message: RenderedMessage) -> SendResult:
        body: dict[str, str] = {
            "From": self._sender,
            "To": message.to,
            "Subject": message.subject or "",
            "TextBody": message.text,
            "Tag": message.notification,
            "MessageStream": self._stream,
        }
        if message.html:
            body["HtmlBody"] = message.html
        try:
            response = await self.client.post(self._url, json=body, headers=self._headers)
        except httpx.HTTPError as error:
            raise unreachable("Postmark", error) from None
        answer = json_object(response)
        error_code = answer.get("ErrorCode")
        if response.status_code == 200 and error_code == 0:
            message_id = answer.get("MessageID")
            return SendResult(provider_message_id=str(message_id) if message_id else None)
        # Postmark's "Message" may quote the recipient's address: only the codes are kept.
        reason = f"Postmark {response.status_code} ErrorCode {answer.get('ErrorCode', '?')}"
        retryable = retryable_status(response.status_code) and error_code != INVALID_REQUEST
        configuration = not retryable and (error_code == BAD_TOKEN or response.status_code == 401)
        recipient = not retryable and error_code == INACTIVE_RECIPIENT
        raise ProviderError(
            reason, retryable=retryable, recipient=recipient, configuration=configuration
        )
