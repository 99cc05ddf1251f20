"""Email and SMS through Courier, the tutorial's notification API.

Two calls, both with ``Authorization: Bearer <auth token>``:

1. :meth:`CourierProvider.merge_profile`, the profile merge the tutorial does when a user
   signs up or changes contacts (a ``courier-profile`` job of its own, enqueued by the
   account services, never part of a send): ``POST {base}/profiles/{user_id}`` with
   ``{"profile": {"email", "phone_number", "name", "custom": {"preference"}}}``. ``POST``
   merges into the stored profile (``PUT`` would replace it, ``PATCH`` takes JSON Patch
   operations); Courier answers ``200 {"status": "SUCCESS"}``.
2. The send: ``POST {base}/send`` with ``{"message": {...}}`` and the header
   ``Idempotency-Key``, answered ``202 {"requestId"}`` (our provider message id).

resetflow has already chosen the channel and the verified address, so the message pins
both: ``to`` is ``{"user_id", "email"}`` or ``{"user_id", "phone_number"}`` (the address
inline, so that Courier cannot pick another one from the profile) and ``routing`` is
``{"method": "single", "channels": ["email" | "sms"]}``. The content is, for the reset code
with ``RESETFLOW_COURIER_TEMPLATE`` set, the tutorial's template with the message's
variables (``token``, ``name``…) as ``data``; otherwise the text resetflow rendered, as
Courier's content shorthand ``{"title": subject, "body": text}`` (the title is empty for
SMS, where Courier shows none). Courier renders its own email HTML from the body, and
replaces ``{…}`` placeholders in it with profile values.

The idempotency key is the job id and the channel: a retry after a timeout, when Courier
may well have accepted the first request, gets the first request's answer instead of a
second message, and the other channel of the same job is still a message of its own.
Courier accepts a message before it delivers it, so its failures about the recipient
arrive later (in its logs and webhooks), never as an error here.

Errors are ``{"message", "type"}`` with ``400`` (``invalid_request_error``), ``401``
(``authentication_error``), ``429`` and ``5xx``; the message text may quote the request,
so only the status and type are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from resetflow.accounts.models import Channel
from resetflow.notify.messages import Notification, RenderedMessage
from resetflow.notify.providers.base import ProviderError, SendResult
from resetflow.notify.providers.http import HttpProvider, json_object, retryable_status, unreachable

# The one notification the tutorial has a Courier template for.
TEMPLATED = Notification.PASSWORD_RESET_TOKEN.value
_ADDRESS_FIELD = {Channel.EMAIL: "email", Channel.SMS: "phone_number"}


class CourierProvider(HttpProvider):
    name = "courier"
    channels = frozenset({Channel.EMAIL, Channel.SMS})

    def __init__(
        self,
        *,
        auth_token: str,
        template: str | None = None,
        base_url: str = "https://api.courier.com",
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Accept": "application/json", "Authorization": f"Bearer {auth_token}"}
        self._template = template
        super().__init__(client=client, timeout=timeout)

    async def send(self, message: RenderedMessage) -> SendResult:
        address = {_ADDRESS_FIELD[message.channel]: message.to}
        to: dict[str, str] = dict(address)
        if message.recipient_id:
            to = {"user_id": message.recipient_id, **address}
        body: dict[str, Any] = {
            "to": to,
            "routing": {"method": "single", "channels": [message.channel.value]},
        }
        if self._template and message.notification == TEMPLATED:
            body["template"] = self._template
            body["data"] = dict(message.variables)
        else:
            title = (message.subject or "") if message.channel is Channel.EMAIL else ""
            body["content"] = {"title": title, "body": message.text}
        headers: dict[str, str] = {}
        if message.idempotency_key:
            headers["Idempotency-Key"] = f"{message.idempotency_key}-{message.channel.value}"
        response = await self._post("/send", {"message": body}, what="send", headers=headers)
        if response.status_code in (200, 202):
            answer = json_object(response)
            request_id = answer.get("requestId") or answer.get("messageId")
            return SendResult(provider_message_id=str(request_id) if request_id else None)
        raise _error("send", response)

    async def merge_profile(self, user_id: str, profile: Mapping[str, Any]) -> None:
        """Merge ``profile`` into the stored profile of ``user_id`` (creating it)."""
        path = f"/profiles/{quote(user_id, safe='')}"
        merged = await self._post(path, {"profile": dict(profile)}, what="profile merge")
        if merged.status_code != 200:
            raise _error("profile merge", merged)

    async def _post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        what: str,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return await self.client.post(
                self._base + path, json=body, headers={**self._headers, **(headers or {})}
            )
        except httpx.HTTPError as error:
            raise unreachable(f"Courier {what}", error) from None


def _error(what: str, response: httpx.Response) -> ProviderError:
    kind = json_object(response).get("type", "?")
    return ProviderError(
        f"Courier {what} {response.status_code} {kind}",
        retryable=retryable_status(response.status_code),
    )
