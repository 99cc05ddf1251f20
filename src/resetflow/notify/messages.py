"""The values that flow through the engine."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from resetflow.accounts.models import Channel


class Notification(StrEnum):
    """Every message resetflow sends; each has a template per channel."""

    PASSWORD_RESET_TOKEN = "password-reset-token"
    VERIFY_CONTACT = "verify-contact"
    PASSWORD_CHANGED = "password-changed"
    ACCOUNT_EXISTS = "account-exists"
    CONTACT_CHANGED = "contact-changed"


@dataclass(frozen=True, slots=True)
class Route:
    """One way to reach the recipient, tried in order until one works."""

    channel: Channel
    to: str


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A message ready for a provider. ``subject`` and ``html`` are for email only."""

    notification: str
    channel: Channel
    to: str
    text: str
    subject: str | None = None
    html: str | None = None
    # Stable per job, so a provider that supports idempotency keys can drop repeats.
    idempotency_key: str = ""
