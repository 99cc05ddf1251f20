"""SMS through Twilio's Messages API.

``POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded
``To``/``From``/``Body``, HTTP basic auth with the account SID and auth token; Twilio
answers ``201`` with the message resource (its ``sid`` is our provider message id), or
an error body ``{"code", "message", "more_info", "status"}``.

With ``status_callback`` (a public https URL, ``<base>/webhooks/twilio``), each message
also carries ``StatusCallback``: Twilio then posts the message's later states (``sent``,
``delivered``, ``undelivered``, ``failed``) there, signed (see ``web/webhooks.py``).
"""

from __future__ import annotations

import httpx

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import Provider, ProviderError, SendResult

# Errors about the number itself (21211 invalid 'To', 21610 unsubscribed, 21614 not a
# mobile number): another SMS provider would fare no better, so the next channel is tried.
RECIPIENT_ERRORS = frozenset({21211, 21610, 21614})
# Where Twilio's status callbacks arrive, under RESETFLOW_BASE_URL.
STATUS_CALLBACK_PATH = "/webhooks/twilio"


class TwilioProvider(Provider):
    name = "twilio"
    channels = frozenset({Channel.SMS})

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        sender: str,
        base_url: str = "https://api.twilio.com",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        status_callback: str | None = None,
    ) -> None:
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._sender = sender
        self._status_callback = status_callback
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def send(self, message: RenderedMessage) -> SendResult:
        form = {"To": message.to, "From": self._sender, "Body": message.text}
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
        reason = f"Twilio {response.status_code} code {body.get('code', '?')}"
        retryable = response.status_code == 429 or response.status_code >= 500
        recipient = not retryable and body.get("code") in RECIPIENT_ERRORS
        raise ProviderError(reason, retryable=retryable, recipient=recipient)

    async def close(self) -> None:
        await self._client.aclose()


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
