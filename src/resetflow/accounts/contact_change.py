"""Changing a signed-in account's email address or phone number, and where codes go (R42).

A change needs the current password, and the NEW contact must prove itself with a
6-digit code before it replaces the old one: until then nothing on the account changes.
The code's purpose is ``change-email`` / ``change-phone``, and it is bound to the
browser's attempt *and* to the new value, so a code sent to one address can never
confirm another. When the change completes, the contact is replaced and marked verified,
the OLD contact is told, and every session of the account ends (the web layer keeps the
current one signed in under a new id).

A new contact that already belongs to another account is answered exactly like a free
one (as sign-up does, R52), and so is one over its destination limit (R15, R17): a code is
issued in the same way, but bound to a throw-away attempt that nobody holds, so no
submission can ever match it, and the message becomes a decoy job that no worker sends
(the same writes, R20). Confirming checks again that the value is still free.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from resetflow.accounts.contact_rules import ContactRules
from resetflow.accounts.contacts import mask
from resetflow.accounts.models import Channel, User
from resetflow.accounts.service import NOTICE
from resetflow.audit import AuditEvent
from resetflow.client import ClientInfo
from resetflow.crypto import new_token
from resetflow.errors import InvalidCode, InvalidCredentials, InvalidInput, NotSignedIn
from resetflow.flow import FlowKit, FlowService
from resetflow.notify.events import SessionsRevokedReason, UserDeletedReason
from resetflow.notify.messages import Notification, Route
from resetflow.notify.outbox import DECOY_ROUTE
from resetflow.recovery.codes import RESET
from resetflow.recovery.service import end_sessions
from resetflow.storage.codes import CodeRepository
from resetflow.storage.sessions import SessionStore
from resetflow.storage.users import UserRepository, read_user

log = logging.getLogger("resetflow.accounts")

WRONG_PASSWORD = "That password is not right."


def change_purpose(channel: Channel) -> str:
    return "change-email" if channel is Channel.EMAIL else "change-phone"


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A requested change, kept in the requesting browser's server-side session."""

    user_id: str
    channel: Channel
    value: str
    attempt_id: str


class ContactChangeService(FlowService):
    def __init__(self, *, kit: FlowKit, sessions: SessionStore, contacts: ContactRules) -> None:
        super().__init__(kit=kit)
        self._sessions = sessions
        self._contacts = contacts

    def normalise(self, channel: Channel, raw: str) -> str:
        """The new contact normalised (R47), or :class:`InvalidInput` on ``value``.

        A phone must also be in a region that SMS may go to (SMS pumping), since its
        code goes by SMS.
        """
        if channel is Channel.EMAIL:
            return self._contacts.email(raw, field="value")
        phone = self._contacts.phone(raw, field="value")
        self._contacts.check_sms(phone, field="value")
        return phone

    async def request_change(
        self,
        *,
        user_id: str,
        channel: Channel,
        value: str,
        password: str,
        client: ClientInfo | None = None,
    ) -> PendingChange:
        """Check the password, then send a code to the new contact; changes nothing yet.

        Raises :class:`InvalidCredentials` for a wrong password (a vanished account costs
        the same dummy hash check, R38). A value taken by another account, or over its
        destination limit, gets the same answer and the same writes, but no message and
        a code nobody can ever use.
        """
        new_value = self.normalise(channel, value)
        purpose = change_purpose(channel)
        user = await read_user(self._db, user_id)
        if not await self._hasher.verify(user.password_hash if user else None, password):
            await self._audit.record(
                AuditEvent.CONTACT_VERIFICATION_SENT,
                outcome="wrong_password",
                client=client,
                user_id=user_id,
                purpose=purpose,
            )
            raise InvalidCredentials(WRONG_PASSWORD, fields={"password": WRONG_PASSWORD})
        assert user is not None
        if user.contact(channel) == new_value:
            message = f"This is already your {channel.noun}."
            raise InvalidInput(message, fields={"value": message})
        # Counted before the look-up, for taken and free contacts alike (R17); in the same
        # bucket as sign-up's confirmation codes, so the two flows cannot double the spam.
        allowed = await self._limiter.allow_destination(new_value, purpose="verify")
        attempt_id = new_token()
        now = self._clock.now()
        async with self._db.write() as conn:
            users = UserRepository(conn)
            # Taken means verified by another account (an unverified holder is taken
            # over when this change completes, as a sign-up's verification does).
            owner = await users.verified_holder(channel, new_value)
            real = owner is None and allowed
            # Otherwise the code is bound to an attempt nobody holds: it can never match.
            issued = await self._codes.issue(
                conn,
                user_id=user.id,
                purpose=purpose,
                attempt_id=_binding(attempt_id if real else new_token(), channel, new_value),
            )
            await self._outbox.enqueue(
                conn,
                notification=Notification.VERIFY_CONTACT,
                routes=[Route(channel=channel, to=new_value) if real else DECOY_ROUTE],
                context={
                    "name": user.name,
                    "token": issued.code,
                    "contact_kind": f"new {channel.noun}",
                    "base_url": self._base_url,
                    "ttl_minutes": int(self._codes.ttl.total_seconds() // 60),
                },
                locale=user.locale,
                user_id=user.id,
                now=now,
                expires_at=issued.expires_at,
                decoy=not real,
            )
            await self._audit.record(
                AuditEvent.CONTACT_VERIFICATION_SENT,
                outcome=(
                    "code_queued" if real else "contact_taken" if owner is not None else "limited"
                ),
                client=client,
                user_id=user.id,
                conn=conn,
                purpose=purpose,
                destination=mask(new_value),
            )
        if real:
            self._outbox.wake()
        return PendingChange(
            user_id=user.id, channel=channel, value=new_value, attempt_id=attempt_id
        )

    async def confirm_change(
        self,
        *,
        user_id: str,
        pending: PendingChange | None,
        code: str,
        client: ClientInfo | None = None,
    ) -> Channel:
        """Accept the new contact's code, then replace the contact; returns its channel.

        Raises :class:`InvalidCode` for a wrong, expired or used code, for no pending
        change, and when the value belongs to another account (R21-style, one answer).
        Ends every session of the account; the caller rotates its own.
        """
        if pending is not None and pending.user_id != user_id:
            pending = None  # another account's change: refused like a wrong code
        channel = pending.channel if pending is not None else Channel.EMAIL
        await self._codes.accept(
            user_id=user_id,
            purpose=change_purpose(channel),
            attempt_id=(_binding(pending.attempt_id, channel, pending.value) if pending else None),
            submitted=code,
            client=client,
        )
        assert pending is not None  # accept() refuses every submission without one
        now = self._clock.now()
        # The notice to the old contact counts against that address's limit (R55). It goes
        # out even when over: it is the owner's warning (R42), and each one needs a code.
        if old_value := pending_old_contact(await read_user(self._db, user_id), channel):
            await self._limiter.allow_destination(old_value, purpose=NOTICE)
        try:
            async with self._db.write() as conn:
                users = UserRepository(conn)
                user = await users.get(user_id, for_update=True)
                owner = await users.verified_holder(channel, pending.value)
                if user is None or (owner is not None and owner.id != user.id):
                    raise _Taken()
                released = await users.release_unverified(
                    channel, pending.value, taken_by=user.id, now=now
                )
                await self._events.users_removed(
                    conn, released, reason=UserDeletedReason.TAKEN_OVER, now=now
                )
                await users.set_contact(user.id, channel, pending.value, verified_at=now)
                await users.void_sessions(user.id, now=now)
                await self._events.contact_changed(
                    conn, user, channel, current=pending.value, now=now
                )
                await self._events.sessions_revoked(
                    conn, user.id, reason=SessionsRevokedReason.CONTACT_CHANGED, now=now
                )
                await self._outbox.profile_changed(conn, user_id=user.id, now=now)
                # A reset code already sent to the old contact must not outlive the change.
                await CodeRepository(conn).void(user_id=user.id, purpose=RESET)
                for route in _old_contact_routes(user, channel):
                    await self._outbox.enqueue(
                        conn,
                        notification=Notification.CONTACT_CHANGED,
                        routes=[route],
                        context={
                            "name": user.name,
                            "contact_kind": channel.noun,
                            "other_kind": channel.other.noun,
                            "changed_at": now.strftime("%Y-%m-%d %H:%M"),
                            "base_url": self._base_url,
                        },
                        locale=user.locale,
                        user_id=user.id,
                        now=now,
                    )
                await self._audit.record(
                    AuditEvent.CONTACT_VERIFIED,
                    outcome="contact_changed",
                    client=client,
                    user_id=user.id,
                    conn=conn,
                    purpose=change_purpose(channel),
                    destination=mask(pending.value),
                )
        except (_Taken, IntegrityError):
            # Taken by a sign-up or another change since the code was sent (the unique
            # index catches a race on PostgreSQL): answered like a wrong code.
            await self._audit.record(
                AuditEvent.CONTACT_VERIFIED,
                outcome="contact_taken",
                client=client,
                user_id=user_id,
                purpose=change_purpose(channel),
            )
            raise InvalidCode() from None
        self._outbox.wake()
        ended = await end_sessions(self._sessions, user_id)
        await self._audit.record(
            AuditEvent.SESSIONS_ENDED,
            outcome="contact_changed",
            client=client,
            user_id=user_id,
            count=ended,
        )
        return channel

    async def set_preference(self, *, user_id: str, preference: Channel) -> None:
        """Send codes to ``preference`` from now on; only a verified contact will do."""
        async with self._db.write() as conn:
            users = UserRepository(conn)
            user = await users.get(user_id, for_update=True)
            if user is None:
                raise NotSignedIn()
            if not user.is_verified(preference):
                message = f"Verify your {preference.noun} before codes can go to it."
                raise InvalidInput(message, fields={"preference": message})
            await users.set_preference(user.id, preference, now=self._clock.now())
            await self._outbox.profile_changed(conn, user_id=user.id, now=self._clock.now())
        self._outbox.wake()
        log.info("preference_changed", extra={"user_id": user_id, "channel": preference.value})


def pending_old_contact(user: User | None, channel: Channel) -> str | None:
    """Where the "contact changed" notice for ``channel`` will go."""
    routes = _old_contact_routes(user, channel) if user is not None else []
    return routes[0].to if routes else None


class _Taken(Exception):
    """The new value belongs to another account by now."""


def _binding(attempt_id: str, channel: Channel, value: str) -> str:
    """What the code is bound to: the browser's attempt and the exact new value."""
    return f"{attempt_id}:{channel.value}:{value}"


def _old_contact_routes(user: User, channel: Channel) -> list[Route]:
    """The old contact; an account that had none on this channel hears on the other one."""
    old = user.contact(channel)
    if old is not None:
        return [Route(channel=channel, to=old)]
    other = user.contact(channel.other)
    if other is not None and user.is_verified(channel.other):
        return [Route(channel=channel.other, to=other)]
    return []
