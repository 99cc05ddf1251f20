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

A create request whose answer never came (a read timeout, a connection dropped after the
request went out) may still have been accepted: it fails as ``uncertain``, and before the
job is tried again the worker asks :meth:`TwilioProvider.find_accepted`, which reads the
Messages list resource (``GET`` on the same URL, ``To`` and ``From`` filters, first with
``DateSent>`` = the day of the first attempt, then without it, since a message Twilio has
not sent yet has no ``date_sent``) for a message with the same text created at or after
the job. The text is compared in memory and never logged (it holds the code). A connect
timeout or refused connection is certain: the request never left.

Errors: 21211/21610/21614 are about the recipient (next channel); 20003 (authentication)
is a configuration error, not retried, though the channel's next provider is tried;
429/20429 and 5xx are retryable; any other 4xx is permanent.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage
from resetflow.notify.providers.base import ProviderError, SendResult
from resetflow.notify.providers.http import HttpProvider, json_object, retryable_status, unreachable

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
# Failures after which the request may have been accepted (it went out, no answer came);
# a connect timeout, a refused connection or a full pool never sent anything.
_MAYBE_ACCEPTED = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
# The list look-up after an uncertain failure: messages per page, and pages read at most
# per query (newest first: the job's message, if any, is on the first).
LOOKUP_PAGE_SIZE = 50
LOOKUP_MAX_PAGES = 3
# Twilio's answer for a message it could not send at all: not a copy to stand by.
_NOT_SENT_STATUSES = frozenset({"failed", "canceled"})


class TwilioProvider(HttpProvider):
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
        self._base_url = base_url.rstrip("/")
        self._url = f"{self._base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._sender = sender
        self._messaging_service_sid = messaging_service_sid
        self._now = now or (lambda: datetime.now(UTC))
        self._status_callback = status_callback
        super().__init__(client=client, timeout=timeout)

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
            response = await self.client.post(self._url, data=form, auth=self._auth)
        except httpx.HTTPError as error:
            raise unreachable(
                "Twilio", error, uncertain=isinstance(error, _MAYBE_ACCEPTED)
            ) from None
        if response.status_code in (200, 201):
            sid = json_object(response).get("sid")
            return SendResult(provider_message_id=str(sid) if sid else None)
        body = json_object(response)
        code = body.get("code")
        reason = f"Twilio {response.status_code} code {code if code is not None else '?'}"
        retryable = retryable_status(response.status_code) or code == RATE_LIMITED
        configuration = not retryable and code in CONFIGURATION_ERRORS
        recipient = not retryable and code in RECIPIENT_ERRORS
        raise ProviderError(
            reason, retryable=retryable, recipient=recipient, configuration=configuration
        )

    async def find_accepted(
        self, message: RenderedMessage, *, since: datetime
    ) -> SendResult | None:
        """The message Twilio accepted for ``message`` at or after ``since`` (see the
        module docstring), or ``None``; :class:`ProviderError` when Twilio cannot be asked."""
        filters = {"To": message.to, "PageSize": str(LOOKUP_PAGE_SIZE)}
        if self._sender:
            filters["From"] = self._sender
        since = since.astimezone(UTC).replace(microsecond=0)
        day = since.date().isoformat()
        for query in ({**filters, "DateSent>": day}, filters):
            sid = await self._search(query, message.text, since)
            if sid is not None:
                return SendResult(provider_message_id=sid)
        return None

    async def _search(self, query: dict[str, str], text: str, since: datetime) -> str | None:
        url: str | None = self._url
        params: dict[str, str] | None = query
        for _ in range(LOOKUP_MAX_PAGES):
            if url is None:
                break
            try:
                response = await self.client.get(url, params=params, auth=self._auth)
            except httpx.HTTPError as error:
                raise ProviderError(
                    f"Twilio look-up failed: {type(error).__name__}", retryable=True, uncertain=True
                ) from None
            if response.status_code != 200:
                code = json_object(response).get("code", "?")
                raise ProviderError(
                    f"Twilio look-up {response.status_code} code {code}",
                    retryable=True,
                    uncertain=True,
                )
            page = json_object(response)
            messages = page.get("messages")
            if not isinstance(messages, list):
                break
            older = False
            for item in messages:
                if not isinstance(item, dict):
                    continue
                created = _rfc_2822(item.get("date_created"))
                if created is None or created < since:
                    older = True
                    continue
                body = item.get("body")
                # A trial account's messages start with "Sent from your Twilio trial account - ".
                same = isinstance(body, str) and (body == text or body.endswith(" - " + text))
                if same and item.get("status") not in _NOT_SENT_STATUSES and item.get("sid"):
                    return str(item["sid"])
            next_uri = page.get("next_page_uri")
            # Newest first: a page that reached back past ``since`` ends the search.
            url = f"{self._base_url}{next_uri}" if isinstance(next_uri, str) and not older else None
            params = None
        return None


def validity_period(expires_at: datetime, now: datetime) -> int:
    """The code's remaining life in whole seconds, within Twilio's 1..36000."""
    remaining = int((expires_at - now).total_seconds())
    return max(MIN_VALIDITY_SECONDS, min(MAX_VALIDITY_SECONDS, remaining))


def _rfc_2822(value: object) -> datetime | None:
    """Twilio's ``date_created`` (``Fri, 24 May 2019 17:44:46 +0000``), or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
