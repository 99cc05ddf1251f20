"""The provider port.

A provider sends one rendered message over one channel. An implementation must:

- return a :class:`SendResult` only once the provider has accepted the message, with the
  provider's own message id when it gives one;
- raise :class:`ProviderError` for every failure, with ``retryable=True`` when the same
  request may succeed later (timeouts, 5xx, 429, connection errors) and ``False`` when it
  never will (bad recipient, refused number, 4xx); the reason must never contain the
  message body, which holds the code;
- set ``uncertain=True`` (with ``retryable=True``) when the request may have reached the
  provider and been accepted although no answer came back (a read timeout, a connection
  dropped after the request went out); a provider that can look its messages up then
  implements :meth:`Provider.find_accepted`, which the worker calls before sending such a
  job again, so that a slow answer does not become a second message;
- set ``recipient=True`` (with ``retryable=False``) when the failure is about the
  recipient rather than the provider (an inactive or suppressed address, an unsubscribed
  or invalid number): no other provider of that channel would do better, so the worker
  moves straight on to the recipient's next channel;
- be safe to call concurrently, and own any client it opens (closed by :meth:`close`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from resetflow.accounts.models import Channel
from resetflow.notify.messages import RenderedMessage


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_message_id: str | None


# Ends the reason of an ``uncertain`` error, and so the delivery log's attempt: the worker
# finds there that a job's earlier attempt may have been accepted.
OUTCOME_UNKNOWN = "outcome unknown"


class ProviderError(Exception):
    """A send that did not go through; ``str(error)`` is safe to log."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        recipient: bool = False,
        configuration: bool = False,
        uncertain: bool = False,
    ) -> None:
        if uncertain:
            reason = f"{reason[:250]} ({OUTCOME_UNKNOWN})"
        super().__init__(reason[:300])
        # The provider may have accepted the message (see the module docstring).
        self.uncertain = uncertain
        self.retryable = retryable
        self.recipient = recipient
        # Our side is misconfigured (bad credentials): never retried, but the channel's
        # next provider is still tried.
        self.configuration = configuration


@runtime_checkable
class ProfileSync(Protocol):
    """A provider that keeps a profile per person (Courier: the tutorial's profile merge).
    The worker asks for this capability, not for a provider class, when it runs a
    profile job (notify/worker.py)."""

    async def merge_profile(self, user_id: str, profile: Mapping[str, Any]) -> None:
        """Merge ``profile`` into the stored profile of ``user_id`` (creating it); raise
        :class:`ProviderError` on failure."""


class Provider(ABC):
    name: str
    channels: frozenset[Channel]

    @abstractmethod
    async def send(self, message: RenderedMessage) -> SendResult: ...

    async def find_accepted(
        self, message: RenderedMessage, *, since: datetime
    ) -> SendResult | None:
        """After an ``uncertain`` failure: the message the provider accepted for this
        ``message`` (same recipient and text) at or after ``since``, or ``None`` when it
        has none. Raise :class:`ProviderError` when it cannot tell. The default cannot
        look anything up and answers ``None`` (the message is sent again)."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook with nothing to do by default
        """Release clients; the default holds none."""
