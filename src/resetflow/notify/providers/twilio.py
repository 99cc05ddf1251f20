"""SMS through Twilio's Messages API.

``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded
``To``/``From``/``Body`` (or ``MessagingServiceSid`` instead of, or beside, ``From``), HTTP
basic auth with the account SID and auth token; Twilio
answers ``201`` with the message resource (its ``sid`` is our provider message id), or
an error body ``{"code", "message", "more_info", "status"}``.

With ``status_callback`` (a public https URL, ``<base>/webhooks/twilio``), each message
also carries ``StatusCallback``: Twilio then posts the message's later states (``sent``,
``delivered``, ``undelivered``, ``failed``) there, signed (see ``web/webhooks.py``).

A message that carries a code with an expiry also carries ``ValidityPeriod``: the code's
remaining life in whole seconds (Twilio allows 1..36000), so that Twilio drops, rather
than delivers late, a message still queued when its code has died.

Errors: 21211/21610/21614 are about the recipient (next channel); 20003 (authentication)
is a configuration error, not retried, though the channel's next provider is tried;
429/20429 and 5xx are retryable; any other 4xx is permanent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, ProviderError, SendResult

# Errors about the number itself (21211 invalid 'To', 21610 unsubscribed, 21614 not a
# mobile number): another SMS provider would fare no better, so the next channel is tried.
RECIPIENT_ERRORS = frozenset({21211, 21610, 21614})
# Where Twilio's status callbacks arrive, under RESETFLOW_BASE_URL.
STATUS_CALLBACK_PATH = "/webhooks/twilio"
# Bad credentials: no retry will help, but another provider may have good ones.
CONFIGURATION_ERRORS = frozenset({20003})
# Twilio's "too many requests".
RATE_LIMITED = 20429
# Twilio's bounds for ValidityPeriod, in seconds.
MIN_VALIDITY_SECONDS = 1
MAX_VALIDITY_SECONDS = 36000


class TwilioProvider(Provider):
    name = "twilio"
    channels = frozenset({Channel.SMS})

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        sender: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str = "https://api.twilio.com",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        status_callback: str | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if not sender and not messaging_service_sid:
            raise ValueError("Twilio needs a sender number or a messaging service SID")
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._sender = sender
        self._messaging_service_sid = messaging_service_sid
        self._now = now or (lambda: datetime.now(UTC))
        self._status_callback = status_callback
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def send(self, message: RenderedMessage) -> SendResult:
        form = {"To": message.to, "Body": message.text}
        if self._sender:
            form["From"] = self._sender
        if self._messaging_service_sid:
            form["MessagingServiceSid"] = self._messaging_service_sid
        if message.expires_at is not None:
            form["ValidityPeriod"] = str(validity_period(message.expires_at, self._now()))
        if self._status_callback:
            form["StatusCallback"] = self._status_callback
        try:
            response = await self._client.post(self._url, data=form, auth=self._auth)
        except httpx.HTTPError as error:
            raise ProviderError(
                f"Twilio unreachable: {type(error).__name__}", retryable=True
            ) from None
        if response.status_code in (200, 201):
            sid = _json(response).get("sid")
            return SendResult(provider_message_id=str(sid) if sid else None)
        body = _json(response)
        code = body.get("code")
        reason = f"Twilio {response.status_code} code {code if code is not None else '?'}"
        retryable = (
            response.status_code == 429 or response.status_code >= 500 or code == RATE_LIMITED
        )
        configuration = not retryable and code in CONFIGURATION_ERRORS
        recipient = not retryable and code in RECIPIENT_ERRORS
        raise ProviderError(
            reason, retryable=retryable, recipient=recipient, configuration=configuration
        )

    async def close(self) -> None:
        await self._client.aclose()


def validity_period(expires_at: datetime, now: datetime) -> int:
    """The code's remaining life in whole seconds, within Twilio's 1..36000."""
    remaining = int((expires_at - now).total_seconds())
    return max(MIN_VALIDITY_SECONDS, min(MAX_VALIDITY_SECONDS, remaining))


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
