"""Accounts: sign-up with contact verification, and password sign-in."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.contact_rules import ContactRules
from resetflow.accounts.contacts import mask
from resetflow.accounts.models import Channel, User
from resetflow.accounts.passwords import PasswordPolicy
from resetflow.audit import AuditEvent
from resetflow.client import ClientInfo
from resetflow.errors import InvalidCode, InvalidCredentials
from resetflow.flow import FlowKit, FlowService
from resetflow.notify.events import UserDeletedReason
from resetflow.notify.messages import Notification, Route
from resetflow.ratelimit import destination_key
from resetflow.recovery.codes import verify_purpose
from resetflow.storage.sessions import SessionRecord
from resetflow.storage.users import UserRepository, read_user

# The destination-limit purpose of notices (not codes) sent because of someone else's
# request: "someone tried to sign up with your address", "your contact changed" (R55).
NOTICE = "notice"


@dataclass(frozen=True, slots=True)
class SignUp:
    """What a sign-up did: the new account (``None`` when a contact was taken), and
    whether the code could be sent (False when the destination limit refused it)."""

    user_id: str | None
    code_sent: bool
    # The preferred contact's destination-limit key: a resend for a taken contact
    # counts against the same limit as one for a new account (R17).
    destination_key: str


@dataclass(frozen=True, slots=True)
class NewAccount:
    name: str
    email: str
    phone: str
    password: str
    preference: Channel
    locale: str = "en"


class AccountService(FlowService):
    def __init__(self, *, kit: FlowKit, policy: PasswordPolicy, contacts: ContactRules) -> None:
        super().__init__(kit=kit)
        self._policy = policy
        self.contacts = contacts  # public: the web layer reads typed contacts by these rules

    async def sign_up(
        self,
        account: NewAccount,
        *,
        attempt_id: str,
        verify: bool = True,
        client: ClientInfo | None = None,
    ) -> str | None:
        """:meth:`register`, for callers that only need the new account's id."""
        result = await self.register(account, attempt_id=attempt_id, verify=verify, client=client)
        return result.user_id

    async def register(
        self,
        account: NewAccount,
        *,
        attempt_id: str,
        verify: bool = True,
        client: ClientInfo | None = None,
    ) -> SignUp:
        """Create the account and send a code to its preferred contact.

        The result's ``user_id`` is ``None`` when the email or phone is taken: then nothing
        is created and the existing owner is told instead, and the caller must answer
        exactly as for a new account (R52, R54). ``code_sent`` is False when the preferred
        contact's destination limit refused the code: the account is created all the same,
        unverified, and the person asks for a new code later. It depends only on the
        limit, never on whether the contact was taken.

        Only the contact's owner typing the code marks it verified (R53); ``verify=False``
        is for operators (``resetflow users create``), who vouch for both contacts.
        """
        email, phone = self.contacts.both(email=account.email, phone=account.phone)
        self._check_sms_allowed(phone, account.preference)
        await self._policy.check(account.password, personal=(account.name, email, phone))
        preferred = email if account.preference is Channel.EMAIL else phone
        other = phone if account.preference is Channel.EMAIL else email
        if verify:
            # Counted before the look-up, for taken and free contacts alike (R17): the
            # code (or the notice) to the preferred contact, and a possible notice to the
            # other one, each against the address it would go to (R55).
            may_send = await self._limiter.allow_destination(preferred, purpose="verify")
            may_notify_other = await self._limiter.allow_destination(other, purpose=NOTICE)
        else:
            may_send = may_notify_other = False
        password_hash = await self._hasher.hash(account.password)
        await self._outbox.admit()  # backpressure from an in-process worker (Outbox)
        now = self._clock.now()
        user_id = secrets.token_hex(16)
        async with self._db.write() as conn:
            users = UserRepository(conn)
            # Taken means verified by its owner: an address some sign-up only typed
            # reserves nothing (the first to verify it takes it over, verify_contact).
            by_email = await users.verified_holder(Channel.EMAIL, email)
            by_phone = await users.verified_holder(Channel.SMS, phone)
            existing = by_email or by_phone
            if existing is not None:
                allowed = {preferred: may_send, other: may_notify_other}
                # Each owner hears at the address they verified and someone reused, if
                # that address's own limit allows (R55).
                for owner, contact in ((by_email, email), (by_phone, phone)):
                    if owner is not None and allowed[contact]:
                        await self._tell_existing_owner(conn, owner, contact=contact)
                user_id_or_none: str | None = None
            else:
                await users.insert(
                    user_id=user_id,
                    name=account.name,
                    email=email,
                    phone=phone,
                    password_hash=password_hash,
                    preference=account.preference,
                    locale=account.locale,
                    now=now,
                )
                if not verify:
                    # An operator vouches for both contacts (the CLI); never a web sign-up.
                    # Like a typed code, that takes them from accounts that only typed them.
                    for channel, contact in ((Channel.EMAIL, email), (Channel.SMS, phone)):
                        released = await users.release_unverified(
                            channel, contact, taken_by=user_id, now=now
                        )
                        await self._events.users_removed(
                            conn, released, reason=UserDeletedReason.TAKEN_OVER, now=now
                        )
                        await users.mark_verified(user_id, channel, now=now)
                elif may_send:
                    user = await users.get(user_id)
                    assert user is not None
                    await self._send_verification(
                        conn, user, account.preference, attempt_id=attempt_id
                    )
                # else: over the limit. The account stays unverified (R53); a resend later
                # sends the code.
                await self._outbox.profile_changed(conn, user_id=user_id, now=now)
                await self._events.user_created(conn, user_id, now=now)  # with the account
                user_id_or_none = user_id
            await self._audit.record(
                AuditEvent.SIGN_UP,
                outcome="created" if user_id_or_none else "contact_taken",
                client=client,
                user_id=user_id_or_none or (existing.id if existing else None),
                conn=conn,
                destination=mask(preferred),
                limited="yes" if verify and not may_send else None,
            )
        self._outbox.wake()
        return SignUp(
            user_id=user_id_or_none,
            code_sent=may_send,
            destination_key=destination_key(preferred),
        )

    async def request_verification(
        self,
        *,
        user_id: str | None,
        channel: Channel,
        attempt_id: str,
        destination_key: str | None = None,
        client: ClientInfo | None = None,
    ) -> None:
        """Send a fresh code to the account's ``channel`` contact if it is unverified.

        Replaces any earlier verification code for that contact. A ``None`` account (a
        sign-up whose address was taken) does the same work and sends nothing (R52); its
        ``destination_key`` (:attr:`SignUp.destination_key`) is counted as the contact
        would be.
        """
        if user_id is None:
            # The sign-up's limit is hit as it would be for a new account (R17).
            if destination_key is not None:
                await self._limiter.allow_destination_key(destination_key, purpose="verify")
            self._codes.decoy(purpose=verify_purpose(channel.value))
            return
        async with self._db.write() as conn:
            user = await UserRepository(conn).get(user_id)
            contact = user.contact(channel) if user else None
            if user is None or contact is None or user.is_verified(channel):
                return
            if channel is Channel.SMS:
                self._check_sms_allowed(contact, channel)
            if not await self._limiter.allow_destination(contact, purpose="verify"):
                outcome = "limited"
            else:
                await self._send_verification(conn, user, channel, attempt_id=attempt_id)
                outcome = "code_queued"
            await self._audit.record(
                AuditEvent.CONTACT_VERIFICATION_SENT,
                outcome=outcome,
                client=client,
                user_id=user.id,
                conn=conn,
                channel=channel.value,
            )
        self._outbox.wake()

    async def verify_contact(
        self,
        *,
        user_id: str | None,
        channel: Channel,
        attempt_id: str | None,
        code: str,
        client: ClientInfo | None = None,
    ) -> str:
        """Mark the ``channel`` contact verified and return the account's id, or raise
        :class:`InvalidCode` (also for a sign-up whose contact was taken, R54)."""
        user = await read_user(self._db, user_id) if user_id else None
        await self._codes.accept(
            user_id=user.id if user else None,
            purpose=verify_purpose(channel.value),
            attempt_id=attempt_id,
            submitted=code,
            client=client,
        )
        assert user is not None
        now = self._clock.now()
        try:
            async with self._db.write() as conn:
                users = UserRepository(conn)
                current = await users.get(user.id, for_update=True)
                contact = current.contact(channel) if current else None
                holder = await users.verified_holder(channel, contact) if contact else None
                if current is None or contact is None or (holder and holder.id != user.id):
                    raise _Taken()
                # Whoever else only typed this address loses it, and an account left with
                # nothing verified goes (issue 11 item 7).
                released = await users.release_unverified(
                    channel, contact, taken_by=user.id, now=now
                )
                await self._events.users_removed(
                    conn, released, reason=UserDeletedReason.TAKEN_OVER, now=now
                )
                await users.mark_verified(user.id, channel, now=now)
                # No Courier profile merge: a verification changes none of its fields
                # (the sign-up's or the contact change's job carries the contact).
                await self._events.contact_verified(conn, user, channel, now=now)
                await self._audit.record(
                    AuditEvent.CONTACT_VERIFIED,
                    outcome="ok",
                    client=client,
                    user_id=user.id,
                    conn=conn,
                    channel=channel.value,
                    released=len(released) or None,
                )
        except (_Taken, IntegrityError):
            # Verified by another account since the code was sent (the partial unique
            # index catches a race): answered like a wrong code.
            await self._audit.record(
                AuditEvent.CONTACT_VERIFIED,
                outcome="contact_taken",
                client=client,
                user_id=user.id,
                channel=channel.value,
            )
            raise InvalidCode() from None
        if self._events.enabled:
            self._outbox.wake()
        return user.id

    async def authenticate(
        self,
        *,
        email: str | None,
        phone: str | None,
        password: str,
        client: ClientInfo | None = None,
    ) -> User:
        """The account these credentials open, or :class:`InvalidCredentials`.

        Unknown accounts cost one dummy hash check, like known ones (R38). A hash made
        with weaker parameters than today's is replaced on success (R37).
        """
        async with self._db.read() as conn:
            users = UserRepository(conn)
            user = await (users.by_email(email) if email else users.by_phone(phone or ""))
        # Failed sign-ins per account (R57): unknown contacts are counted too (under one
        # key), so that both take the same steps; past the limit even the right password
        # is answered like a wrong one, after the same hash check (R21, R38).
        failures = self._limiter.signin
        key = failures.account_key(user.id) if user else failures.unknown_key()
        stopped = await failures.stopped(key)
        matched = await self._hasher.verify(user.password_hash if user else None, password)
        if stopped or not matched:
            await failures.failed(key)
            if user is None:
                outcome = "unknown_account"
            else:
                outcome = "too_many_failures" if stopped else "wrong_password"
            await self._audit.record(
                AuditEvent.SIGN_IN,
                outcome=outcome,
                client=client,
                user_id=user.id if user else None,
            )
            raise InvalidCredentials()
        assert user is not None
        await failures.succeeded(key)
        if self._hasher.needs_rehash(user.password_hash):
            # Weaker parameters, or a hash imported from another system (bcrypt, Django,
            # scrypt, the tutorial's SHA3): today's Argon2id replaces exactly the hash
            # just verified, in one conditional UPDATE (R37, SPEC §9).
            new_hash = await self._hasher.hash(password)
            async with self._db.write() as conn:
                await UserRepository(conn).replace_password_hash(
                    user.id, verified=user.password_hash, new=new_hash, now=self._clock.now()
                )
        await self._audit.record(AuditEvent.SIGN_IN, outcome="ok", client=client, user_id=user.id)
        return user

    def _check_sms_allowed(self, phone: str, channel: Channel) -> None:
        """SMS only to the regions the operator allows (SMS pumping)."""
        if channel is Channel.SMS:
            self.contacts.check_sms(phone, field="preference", advice="Choose email for codes.")

    async def session_is_current(self, record: SessionRecord) -> bool:
        """False for a signed-in session of a deleted account, or one older than the
        account's last reset or contact change."""
        if record.user_id is None:
            return True
        user = await self.get(record.user_id)
        return user is not None and user.accepts_session_from(record.created_at)

    async def get(self, user_id: str) -> User | None:
        return await read_user(self._db, user_id)

    async def _send_verification(
        self, conn: AsyncConnection, user: User, channel: Channel, *, attempt_id: str
    ) -> None:
        contact = user.contact(channel)
        assert contact is not None
        issued = await self._codes.issue(
            conn, user_id=user.id, purpose=verify_purpose(channel.value), attempt_id=attempt_id
        )
        await self._outbox.enqueue(
            conn,
            notification=Notification.VERIFY_CONTACT,
            routes=[Route(channel=channel, to=contact)],
            context={
                "name": user.name,
                "token": issued.code,
                "contact_kind": channel.noun,
                "base_url": self._base_url,
                "ttl_minutes": int(self._codes.ttl.total_seconds() // 60),
            },
            locale=user.locale,
            user_id=user.id,
            now=self._clock.now(),
            expires_at=issued.expires_at,
        )

    async def _tell_existing_owner(
        self, conn: AsyncConnection, owner: User, *, contact: str
    ) -> None:
        """Tell the owner, at the very contact that was reused (its limit was counted)."""
        channel = Channel.EMAIL if owner.email == contact else Channel.SMS
        await self._outbox.enqueue(
            conn,
            notification=Notification.ACCOUNT_EXISTS,
            routes=[Route(channel=channel, to=contact)],
            context={"name": owner.name, "base_url": self._base_url},
            locale=owner.locale,
            user_id=owner.id,
            now=self._clock.now(),
        )


class _Taken(Exception):
    """The contact was verified by another account in the meantime."""
