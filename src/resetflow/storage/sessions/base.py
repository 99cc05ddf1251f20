"""The session store port.

A session is named by an opaque random id that only the browser holds (R22). Stores key
their records by ``sha256(id)``, so a copy of the store cannot be replayed as cookies.

A session has two deadlines: ``expires_at``, fixed when it starts (the absolute lifetime,
``RESETFLOW_SESSION_TTL_SECONDS``), and an idle one, ``last_seen_at + idle`` (a store's
``idle_seconds``, ``RESETFLOW_SESSION_IDLE_SECONDS``), which each use slides forward
(:meth:`SessionStore.save`, :meth:`SessionStore.touch`). It ends at whichever comes
first: sliding never carries a session past ``expires_at``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class SessionRecord:
    """What the server remembers about one browser session.

    ``user_id`` is set while someone is signed in (it is also what
    :meth:`SessionStore.delete_user` matches); ``data`` holds flow state such as the CSRF
    token and the reset attempt, and must be JSON-serialisable.
    """

    user_id: str | None
    data: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    # When it was last used (saved or touched); None: at ``created_at``.
    last_seen_at: datetime | None = None

    @property
    def seen_at(self) -> datetime:
        return self.last_seen_at or self.created_at


class SessionStore(ABC):
    """Where sessions live. An implementation must:

    - take ``idle_seconds`` (``None``: no idle limit) and keep it in :attr:`idle_seconds`;
    - return ``None`` from :meth:`load` for an unknown or expired id (never raise):
      expired at ``now >= expires_at`` or, with an idle limit, at
      ``now >= last_seen_at + idle_seconds`` (``created_at`` when never seen since);
    - make :meth:`save` an upsert keyed by the id hash, ``last_seen_at`` included;
    - make :meth:`touch` slide the idle deadline of a live session to ``now`` without any
      other change: never create a session (a deleted or expired one stays gone), never
      move ``last_seen_at`` back, never outlive ``expires_at``;
    - make :meth:`delete_user` end every session whose ``user_id`` matches, so that the
      next :meth:`load` of any of them returns ``None`` (R27);
    - be safe to call from many tasks (and, for shared stores, many processes) at once.
    """

    @abstractmethod
    async def load(self, id_hash: str, *, now: datetime) -> SessionRecord | None: ...

    idle_seconds: float | None = None

    @abstractmethod
    async def save(self, id_hash: str, record: SessionRecord) -> None: ...

    @abstractmethod
    async def touch(self, id_hash: str, *, now: datetime) -> bool:
        """Mark a live session used at ``now``; returns whether it moved."""

    def idle_expired(self, record: SessionRecord, now: datetime) -> bool:
        """Whether ``record`` went unused for the idle limit (or longer) by ``now``."""
        if self.idle_seconds is None:
            return False
        return (now - record.seen_at).total_seconds() >= self.idle_seconds

    def live(self, record: SessionRecord, now: datetime) -> bool:
        """Neither past its absolute lifetime nor idle for too long at ``now``."""
        return record.expires_at > now and not self.idle_expired(record, now)

    @abstractmethod
    async def delete(self, id_hash: str) -> None: ...

    @abstractmethod
    async def delete_user(self, user_id: str) -> int:
        """End every session of ``user_id``; returns how many ended."""

    async def purge_expired(self, *, now: datetime) -> int:
        """Delete sessions that expired (or went idle) before ``now``; stores that expire keys by
        themselves (Redis) need not do anything. Returns how many went."""
        return 0

    async def ping(self) -> None:  # noqa: B027 - optional hook, nothing to check by default
        """Raise if the store cannot be reached (readiness checks); the default can."""

    async def close(self) -> None:  # noqa: B027 - optional hook with nothing to do by default
        """Release connections; the default has none."""
