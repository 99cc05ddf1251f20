"""The session store port.

A session is named by an opaque random id that only the browser holds (R22). Stores key
their records by ``sha256(id)``, so a copy of the store cannot be replayed as cookies.
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


class SessionStore(ABC):
    """Where sessions live. An implementation must:

    - return ``None`` from :meth:`load` for an unknown or expired id (never raise);
    - make :meth:`save` an upsert keyed by the id hash;
    - make :meth:`delete_user` end every session whose ``user_id`` matches, so that the
      next :meth:`load` of any of them returns ``None`` (R27);
    - be safe to call from many tasks (and, for shared stores, many processes) at once.
    """

    @abstractmethod
    async def load(self, id_hash: str, *, now: datetime) -> SessionRecord | None: ...

    @abstractmethod
    async def save(self, id_hash: str, record: SessionRecord) -> None: ...

    @abstractmethod
    async def delete(self, id_hash: str) -> None: ...

    @abstractmethod
    async def delete_user(self, user_id: str) -> int:
        """End every session of ``user_id``; returns how many ended."""

    async def purge_expired(self, *, now: datetime) -> int:
        """Delete sessions that expired before ``now``; stores that expire keys by
        themselves (Redis) need not do anything. Returns how many went."""
        return 0

    async def ping(self) -> None:  # noqa: B027 - optional hook, nothing to check by default
        """Raise if the store cannot be reached (readiness checks); the default can."""

    async def close(self) -> None:  # noqa: B027 - optional hook with nothing to do by default
        """Release connections; the default has none."""
