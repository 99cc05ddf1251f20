"""What the providers behind an HTTP API share (Postmark, Twilio, Courier): one httpx
client per provider (closed with it), their JSON answers read defensively, a network
failure turned into a retryable :class:`ProviderError`, and which HTTP statuses are worth
a retry. Each provider keeps only its own request shape and error codes."""

from __future__ import annotations

import httpx

from resetflow.notify.providers.base import Provider, ProviderError


class HttpProvider(Provider):
    """A provider that talks to an HTTP API through ``self.client`` (an
    ``httpx.AsyncClient``; tests pass one with ``httpx.MockTransport``)."""

    def __init__(self, *, client: httpx.AsyncClient | None, timeout: float) -> None:
        self.client = client or httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self.client.aclose()


def json_object(response: httpx.Response) -> dict[str, object]:
    """The answer's JSON object, or ``{}`` for anything else (an HTML error page, a list,
    nothing): error reports must never fail on the provider's body."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def unreachable(what: str, error: httpx.HTTPError, *, uncertain: bool = False) -> ProviderError:
    """``what`` could not be asked (connection, timeout): worth a retry. ``uncertain``
    when the request may have reached the provider anyway (Twilio's look-up decides)."""
    return ProviderError(
        f"{what} unreachable: {type(error).__name__}", retryable=True, uncertain=uncertain
    )


def retryable_status(status: int) -> bool:
    """Rate-limited or the provider's own failure: another try may succeed."""
    return status == 429 or status >= 500
