"""The password-reset flow: request a code, prove it, choose a new password.

The web layer keeps the flow's state in the server-side session and passes it in; this
service never sees cookies.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.contacts import mask
from resetflow.accounts.models import Channel, User
from resetflow.accounts.passwords import PasswordPolicy
from resetflow.audit import AuditEvent
from resetflow.client import ClientInfo
from resetflow.errors import InvalidCredentials, InvalidInput, RateLimited, ResetNotAllowed
from resetflow.flow import FlowKit, FlowService
from resetflow.notify.events import SessionsRevokedReason
from resetflow.notify.messages import Notification, Route
from resetflow.notify.outbox import DECOY_ROUTE
from resetflow.recovery.codes import RESET
from resetflow.storage.codes import CodeRepository
from resetflow.storage.sessions import SessionStore
from resetflow.storage.users import DECOY_USER_ID, UserRepository, read_user


@dataclass(frozen=True, slots=True)
class ResetGrant:
    """What a verified code allows: one password change for ``user_id``, for a while."""

    user_id: str
    code_id: str
    granted_at: datetime


class RecoveryService(FlowService):
    def __init__(
        self,
        *,
        kit: FlowKit,
        policy: PasswordPolicy,
        sessions: SessionStore,
        grant_ttl_seconds: int = 600,
    ) -> None:
        super().__init__(kit=kit)
        self._policy = policy
        self._sessions = sessions
        self._grant_ttl = timedelta(seconds=grant_ttl_seconds)

    async def request_reset(
        self,
        *,
        email: str | None,
        phone: str | None,
        attempt_id: str,
        client: ClientInfo | None = None,
        count_action: str | None = None,
    ) -> str | None:
        """Queue a code for the account with this (normalised) contact, if there is one.

        Returns the account id for the caller's session, or ``None``; the caller must
        answer the same either way (R19). Nothing about the account changes (R8). Only
        verified contacts receive the code, the preferred one first (R42). At most
        ``RESETFLOW_LIMIT_DESTINATION`` codes go to one contact, known or not (R15, R17).

        Unknown, unverified and rate-limited requests do the same database work as a
        real one, on the decoy account and a decoy job that the worker renders and
        drops without sending (R20).

        ``count_action``: the POST's action, when its client's and the global limits are
        still to be counted (web/edge.py): counted here in the same step as the
        contact's (one round trip on Redis), :class:`RateLimited` when over them.
        """
        destination = email or phone or ""
        if count_action is None:
            allowed = await self._limiter.allow_destination(destination, purpose=RESET)
        else:
            allowed = await self._count(count_action, destination, client)
        await self._outbox.admit()  # backpressure from an in-process worker (Outbox)
        now = self._clock.now()

        async def record(conn: AsyncConnection) -> User | None:
            # The decoy account stands in for an unknown contact (read like a real one).
            found = await UserRepository(conn).by_contact_or_decoy(email=email, phone=phone)
            routes = _routes(found, found.verified_channels)  # none for the decoy
            user = found if found.id != DECOY_USER_ID else None
            real = user is not None and bool(routes) and allowed
            target = user if real and user is not None else None
            issued = await self._codes.issue(
                conn,
                user_id=target.id if target else DECOY_USER_ID,
                # Decoys spread over many rows, so that concurrent unknown requests do not
                # queue on one row lock while real ones touch different accounts.
                purpose=RESET if target else f"{RESET}#{secrets.randbelow(DECOY_SLOTS)}",
                attempt_id=attempt_id,
            )
            await self._outbox.enqueue(
                conn,
                notification=Notification.PASSWORD_RESET_TOKEN,
                routes=routes if target else [DECOY_ROUTE],
                # An unknown contact's decoy message speaks to the decoy account (its row).
                context=self._context(target or found, token=issued.code),
                locale=(target or found).locale,
                user_id=target.id if target else None,
                now=now,
                expires_at=issued.expires_at,
                decoy=target is None,
            )
            if not allowed:
                outcome = "limited"
            elif user is None:
                outcome = "unknown_contact"
            elif not routes:
                outcome = "no_verified_contact"
            else:
                outcome = "code_queued"
            await self._audit.record(
                AuditEvent.RESET_REQUESTED,
                outcome=outcome,
                client=client,
                user_id=user.id if user else None,
                conn=conn,
                destination=mask(destination),
            )
            return user

        # Nothing in here refuses on its own terms (the outcome is recorded, not raised),
        # so concurrent requests may share one transaction: one commit on SQLite. On
        # PostgreSQL the code, the job, the audit record and the workers' wake-up go out
        # as one statement after the look-up: two round trips, known or not (R20).
        user = await self._db.write_batched(record)
        # The worker treats decoy jobs like real ones (it renders them, then drops them),
        # so waking it for both keeps the work after the answer alike too.
        self._outbox.wake()
        return user.id if user else None

    async def _count(self, action: str, destination: str, client: ClientInfo | None) -> bool:
        client = client or ClientInfo.system()
        try:
            return await self._limiter.check_request_and_destination(
                action=action, ip=client.ip, destination=destination, purpose=RESET
            )
        except RateLimited:
            await self._audit.record(
                AuditEvent.LIMIT_HIT, outcome="client", client=client, action=action
            )
            raise

    async def verify_code(
        self,
        *,
        user_id: str | None,
        attempt_id: str | None,
        code: str,
        client: ClientInfo | None = None,
    ) -> ResetGrant:
        """Accept the code of this attempt, or raise :class:`InvalidCode` (R5, R6, R11)."""
        code_id = await self._codes.accept(
            user_id=user_id, purpose=RESET, attempt_id=attempt_id, submitted=code, client=client
        )
        assert user_id is not None
        return ResetGrant(user_id=user_id, code_id=code_id, granted_at=self._clock.now())

    async def reset_password(
        self,
        *,
        grant: ResetGrant | None,
        new_password: str,
        confirmation: str,
        client: ClientInfo | None = None,
    ) -> None:
        """Set the new password once per grant, end every session, tell every contact."""
        now = self._clock.now()
        if grant is None or now - grant.granted_at > self._grant_ttl:
            raise ResetNotAllowed()
        _check_confirmation(new_password, confirmation)
        user = await read_user(self._db, grant.user_id)
        if user is None:
            raise ResetNotAllowed()
        await self._policy.check(new_password, personal=(user.name, user.email, user.phone))
        password_hash = await self._hasher.hash(new_password)
        async with self._db.write() as conn:
            spent = await CodeRepository(conn).use_grant(
                grant.code_id, granted_after=now - self._grant_ttl, now=now
            )
            if not spent:
                raise ResetNotAllowed()
            await self._events.password_reset(conn, user, now=now)  # committed with the change
            await self._apply_new_password(
                conn,
                user,
                password_hash,
                reason=SessionsRevokedReason.PASSWORD_RESET,
                client=client,
                now=now,
            )
        await self._after_new_password(user, client=client)

    async def change_password(
        self,
        *,
        user_id: str,
        current_password: str,
        new_password: str,
        confirmation: str,
        client: ClientInfo | None = None,
    ) -> None:
        """A signed-in person's own change: the current password, then the same steps as
        a reset (policy, every session ended, every verified contact told, events).

        A wrong current password is :class:`InvalidCredentials` on ``currentPassword`` and
        counts against the account's failed sign-ins (R57): it is a password guess too.
        The caller signs the browser that asked in again under a new session id.
        """
        now = self._clock.now()
        user = await read_user(self._db, user_id)
        failures = self._limiter.signin
        key = failures.account_key(user_id)
        stopped = await failures.stopped(key)
        matched = await self._hasher.verify(user.password_hash if user else None, current_password)
        if user is None or stopped or not matched:
            await failures.failed(key)
            await self._audit.record(
                AuditEvent.PASSWORD_CHANGED,
                outcome="too_many_failures" if stopped else "wrong_password",
                client=client,
                user_id=user_id,
            )
            message = "This is not your current password."
            raise InvalidCredentials(message, fields={"currentPassword": message})
        _check_confirmation(new_password, confirmation)
        try:
            await self._policy.check(new_password, personal=(user.name, user.email, user.phone))
        except InvalidInput as error:
            # The policy names its field "password"; this form's is "newPassword".
            reason = error.fields.get("password", error.message)
            raise type(error)(error.message, fields={"newPassword": reason}) from None
        password_hash = await self._hasher.hash(new_password)
        async with self._db.write() as conn:
            await self._events.password_changed(conn, user, now=now)
            await self._apply_new_password(
                conn,
                user,
                password_hash,
                reason=SessionsRevokedReason.PASSWORD_CHANGED,
                client=client,
                now=now,
            )
        await self._after_new_password(user, client=client)

    async def _apply_new_password(
        self,
        conn: AsyncConnection,
        user: User,
        password_hash: str,
        *,
        reason: SessionsRevokedReason,
        client: ClientInfo | None,
        now: datetime,
    ) -> None:
        """In the change's transaction: the hash, every session void, the notices."""
        users = UserRepository(conn)
        await users.set_password_hash(user.id, password_hash, now=now)
        # Committed with the new password: the sessions end even if the clean-up after
        # the commit fails (R27).
        await users.void_sessions(user.id, now=now)
        await self._events.sessions_revoked(conn, user.id, reason=reason, now=now)
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
        await self._audit.record(
            AuditEvent.PASSWORD_CHANGED, outcome="ok", client=client, user_id=user.id, conn=conn
        )

    async def _after_new_password(self, user: User, *, client: ClientInfo | None) -> None:
        self._outbox.wake()
        # The new password opens the account at once, whatever failed before (R57).
        signin = self._limiter.signin
        await signin.succeeded(signin.account_key(user.id))
        ended = await end_sessions(self._sessions, user.id)
        await self._audit.record(
            AuditEvent.SESSIONS_ENDED, outcome="ok", client=client, user_id=user.id, count=ended
        )

    def _context(self, user: User, **extra: str) -> dict[str, object]:
        return {
            "name": user.name,
            "base_url": self._base_url,
            "ttl_minutes": int(self._codes.ttl.total_seconds() // 60),
            **extra,
        }


log = logging.getLogger("resetflow.recovery")
DECOY_SLOTS = 64


async def end_sessions(store: SessionStore, user_id: str) -> int:
    """Delete the account's sessions from the store, best effort: they are already void
    (``users.sessions_valid_after``), so a store that is down now only delays the
    clean-up, and the change that was committed is still reported as done."""
    try:
        return await store.delete_user(user_id)
    except Exception:
        log.warning("session_cleanup_failed", exc_info=True, extra={"user_id": user_id})
        return 0


def _routes(user: User, channels: list[Channel]) -> list[Route]:
    return [Route(channel=c, to=contact) for c in channels if (contact := user.contact(c))]


def _check_confirmation(new_password: str, confirmation: str) -> None:
    """:class:`InvalidInput` on ``newPasswordConfirm`` when the two typed passwords differ."""
    if new_password != confirmation:
        message = "The two passwords do not match."
        raise InvalidInput(message, fields={"newPasswordConfirm": message})
