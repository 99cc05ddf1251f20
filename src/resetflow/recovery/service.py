"""The password-reset flow: request a code, prove it, choose a new password.

The web layer keeps the flow's state in the server-side session and passes it in; this
service never sees cookies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from resetflow.accounts.contacts import mask
from resetflow.accounts.models import Channel, User
from resetflow.accounts.passwords import PasswordHasher, PasswordPolicy
from resetflow.clock import Clock
from resetflow.errors import InvalidInput, ResetNotAllowed
from resetflow.notify.messages import Notification, Route
from resetflow.notify.outbox import Outbox
from resetflow.recovery.codes import RESET, OneTimeCodes
from resetflow.storage.codes import CodeRepository
from resetflow.storage.database import Database
from resetflow.storage.sessions import SessionStore
from resetflow.storage.users import UserRepository

log = logging.getLogger("resetflow.recovery")


@dataclass(frozen=True, slots=True)
class ResetGrant:
    """What a verified code allows: one password change for ``user_id``, for a while."""

    user_id: str
    code_id: str
    granted_at: datetime


class RecoveryService:
    def __init__(
        self,
        *,
        database: Database,
        codes: OneTimeCodes,
        outbox: Outbox,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        sessions: SessionStore,
        clock: Clock,
        base_url: str,
        grant_ttl_seconds: int = 600,
    ) -> None:
        self._db = database
        self._codes = codes
        self._outbox = outbox
        self._hasher = hasher
        self._policy = policy
        self._sessions = sessions
        self._clock = clock
        self._base_url = base_url
        self._grant_ttl = timedelta(seconds=grant_ttl_seconds)

    async def request_reset(
        self, *, email: str | None, phone: str | None, attempt_id: str
    ) -> str | None:
        """Queue a code for the account with this (normalised) contact, if there is one.

        Returns the account id for the caller's session, or ``None``; the caller must
        answer the same either way (R19). Nothing about the account changes (R8). Only
        verified contacts receive the code, the preferred one first (R42).
        """
        now = self._clock.now()
        async with self._db.write() as conn:
            users = UserRepository(conn)
            user = await (users.by_email(email) if email else users.by_phone(phone or ""))
            routes = _routes(user, user.verified_channels) if user else []
            if user is None or not routes:
                self._codes.decoy(purpose=RESET)
                log.info("reset_requested", extra={"outcome": "no_verified_account"})
                return user.id if user else None
            issued = await self._codes.issue(
                conn, user_id=user.id, purpose=RESET, attempt_id=attempt_id
            )
            await self._outbox.enqueue(
                conn,
                notification=Notification.PASSWORD_RESET_TOKEN,
                routes=routes,
                context=self._context(user, token=issued.code),
                locale=user.locale,
                user_id=user.id,
                now=now,
                expires_at=issued.expires_at,
            )
        self._outbox.wake()
        log.info("reset_requested", extra={"user_id": user.id, "outcome": "code_queued"})
        return user.id

    async def verify_code(
        self, *, user_id: str | None, attempt_id: str | None, code: str
    ) -> ResetGrant:
        """Accept the code of this attempt, or raise :class:`InvalidCode` (R5, R6, R11)."""
        code_id = await self._codes.accept(
            user_id=user_id, purpose=RESET, attempt_id=attempt_id, submitted=code
        )
        assert user_id is not None
        log.info("reset_code_accepted", extra={"user_id": user_id})
        return ResetGrant(user_id=user_id, code_id=code_id, granted_at=self._clock.now())

    async def reset_password(
        self, *, grant: ResetGrant | None, new_password: str, confirmation: str
    ) -> None:
        """Set the new password once per grant, end every session, tell every contact."""
        now = self._clock.now()
        if grant is None or now - grant.granted_at > self._grant_ttl:
            raise ResetNotAllowed()
        if new_password != confirmation:
            raise InvalidInput(
                "The two passwords do not match.",
                fields={"newPasswordConfirm": "The two passwords do not match."},
            )
        async with self._db.read() as conn:
            user = await UserRepository(conn).get(grant.user_id)
        if user is None:
            raise ResetNotAllowed()
        self._policy.check(new_password, personal=(user.name, user.email, user.phone))
        password_hash = await self._hasher.hash(new_password)
        async with self._db.write() as conn:
            spent = await CodeRepository(conn).use_grant(
                grant.code_id, granted_after=now - self._grant_ttl, now=now
            )
            if not spent:
                raise ResetNotAllowed()
            await UserRepository(conn).set_password_hash(user.id, password_hash, now=now)
            # One job per verified contact: each must hear of the change (R39).
            for route in _routes(user, user.verified_channels):
                await self._outbox.enqueue(
                    conn,
                    notification=Notification.PASSWORD_CHANGED,
                    routes=[route],
                    context=self._context(user, changed_at=now.strftime("%Y-%m-%d %H:%M")),
                    locale=user.locale,
                    user_id=user.id,
                    now=now,
                )
        self._outbox.wake()
        ended = await self._sessions.delete_user(user.id)
        log.info(
            "password_changed",
            extra={"user_id": user.id, "sessions_ended": ended, "to": mask(user.email)},
        )

    def _context(self, user: User, **extra: str) -> dict[str, object]:
        return {
            "name": user.name,
            "base_url": self._base_url,
            "ttl_minutes": int(self._codes.ttl.total_seconds() // 60),
            **extra,
        }


def _routes(user: User, channels: list[Channel]) -> list[Route]:
    return [Route(channel=c, to=contact) for c in channels if (contact := user.contact(c))]
