"""Server-side session stores: the port in ``base``, one adapter per module."""

from resetflow.storage.sessions.base import SessionRecord, SessionStore

__all__ = ["SessionRecord", "SessionStore"]
