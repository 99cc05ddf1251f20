"""The values that flow through the engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from resetflow.accounts.models import Channel


class Notification(StrEnum):
    """Every message resetflow sends; each has a template per channel."""

    PASSWORD_RESET_TOKEN = "password-reset-token"
    VERIFY_CONTACT = "verify-contact"
    PASSWORD_CHANGED = "password-changed"
    ACCOUNT_EXISTS = "account-exists"
    CONTACT_CHANGED = "contact-changed"
    # Sent only by `resetflow send-test`, straight to a provider; carries no code.
    TEST_MESSAGE = "test-message"
    # Not a message: merges the account's profile into Courier (no templates).
    COURIER_PROFILE = "courier-profile"


# The notifications that are rendered from templates and sent to a person.
RENDERED_NOTIFICATIONS = tuple(n for n in Notification if n is not Notification.COURIER_PROFILE)


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
    # The account it is for (None: no account) and the values the templates were rendered
    # with, for providers that keep profiles and render their own templates (Courier).
    # ``variables`` may hold the code, just as ``text`` does: never log it.
    recipient_id: str | None = None
    variables: Mapping[str, object] = field(default_factory=dict)
    # When the code the message carries stops working (None: no code, or no expiry);
    # providers that can drop an undelivered message after a while use it (Twilio).
    expires_at: datetime | None = None
