"""What an account is, independent of how it is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

# The role that may see the operators' pages (/admin/...).
ADMIN_ROLE = "admin"
USER_ROLE = "user"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"

    @classmethod
    def preferred(cls, value: object) -> Channel:
        """A preference as given: "sms", or the tutorial's "phone", is SMS; anything else
        is email."""
        return cls.SMS if value in ("sms", "phone") else cls.EMAIL

    @property
    def other(self) -> Channel:
        return Channel.SMS if self is Channel.EMAIL else Channel.EMAIL

    @property
    def noun(self) -> str:
        """What the contact is called in pages and messages: "email address", "phone
        number"."""
        return "email address" if self is Channel.EMAIL else "phone number"

    @property
    def place(self) -> str:
        """Where a code went, in a short sentence: "your email address", "your phone"."""
        return "email address" if self is Channel.EMAIL else "phone"


@dataclass(frozen=True, slots=True)
class User:
    """An account. ``email`` and ``phone`` are normalised (lower-cased domain, E.164)."""

    id: str
    name: str
    email: str | None
    phone: str | None
    password_hash: str
    preference: Channel
    locale: str
    email_verified_at: datetime | None
    phone_verified_at: datetime | None
    code_failures: int
    code_failure_at: datetime | None
    created_at: datetime
    # "user", or "admin" for operators (``resetflow users grant-admin``).
    role: str = "user"
    # Sessions created before this moment no longer count (a reset, a contact change).
    sessions_valid_after: datetime | None = None

    def accepts_session_from(self, created_at: datetime) -> bool:
        return self.sessions_valid_after is None or created_at >= self.sessions_valid_after

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN_ROLE

    def contact(self, channel: Channel) -> str | None:
        return self.email if channel is Channel.EMAIL else self.phone

    def is_verified(self, channel: Channel) -> bool:
        verified_at = self.email_verified_at if channel is Channel.EMAIL else self.phone_verified_at
        return verified_at is not None and self.contact(channel) is not None

    @property
    def verified_channels(self) -> list[Channel]:
        """Verified channels, the preferred one first: the routing order for recovery."""
        order = [self.preference, self.preference.other]
        return [channel for channel in order if self.is_verified(channel)]

    def profile(self) -> dict[str, Any]:
        """The account as other software sees it (``whoami``, the operator API, SPEC §9):
        ids, contacts and their state, preference and locale; never a hash or a date of
        the account's security (password, sessions)."""
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "email_verified": self.is_verified(Channel.EMAIL),
            "phone_verified": self.is_verified(Channel.SMS),
            "preference": self.preference.value,
            "locale": self.locale,
        }
