"""The provider port.

A provider sends one rendered message over one channel. An implementation must:

- return a :class:`SendResult` only once the provider has accepted the message, with the
  provider's own message id when it gives one;
- raise :class:`ProviderError` for every failure, with ``retryable=True`` when the same
  request may succeed later (timeouts, 5xx, 429, connection errors) and ``False`` when it
  never will (bad recipient, refused number, 4xx); the reason must never contain the
  message body, which holds the code;
- set ``recipient=True`` (with ``retryable=False``) when the failure is about the
  recipient rather than the provider (an inactive or suppressed address, an unsubscribed
  or invalid number): no other provider of that channel would do better, so the worker
  moves straight on to the recipient's next channel;
- be safe to call concurrently, and own any client it opens (closed by :meth:`close`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_message_id: str | None


class ProviderError(Exception):
    """A send that did not go through; ``str(error)`` is safe to log."""

    def __init__(
        self, reason: str, *, retryable: bool, recipient: bool = False, configuration: bool = False
    ) -> None:
        super().__init__(reason[:300])
        self.retryable = retryable
        self.recipient = recipient
        # Our side is misconfigured (bad credentials): never retried, but the channel's
        # next provider is still tried.
        self.configuration = configuration


class Provider(ABC):
    name: str
    channels: frozenset[Channel]

    @abstractmethod
    async def send(self, message: RenderedMessage) -> SendResult: ...

    async def close(self) -> None:  # noqa: B027 - optional hook with nothing to do by default
        """Release clients; the default holds none."""
