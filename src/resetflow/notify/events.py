"""Events for the host application: what changed on an account, as signed webhooks.

:meth:`Events.publish` writes one delivery job per interested endpoint on the caller's
connection, so the event commits or rolls back together with the change it reports
(the outbox, as for messages). The worker sends it (notify/webhooks_out.py), signed per
the Standard Webhooks specification, retried with the usual backoff, and visible in the
delivery log with channel ``webhook``.

``data`` carries ids and contact data only: never a code, a password or its hash, a
session id or any token (R44, R61). The body is fixed when the change happens (its
``timestamp`` is the change's), sealed at rest like every job's payload, and erased when
the job ends.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.models import Channel, User
from resetflow.crypto import Keyring
from resetflow.storage.deliveries import EVENT_CHANNEL, DeliveryRepository
from resetflow.storage.users import UserRepository

# The job's ``provider`` in the delivery log (and its filters).
WEBHOOK_PROVIDER = "webhook"


class EventType(StrEnum):
    """Every event the host application can receive (SPEC §9, "events for your app")."""

    USER_CREATED = "user.created"
    CONTACT_VERIFIED = "contact.verified"
    PASSWORD_RESET = "password.reset"
    PASSWORD_CHANGED = "password.changed"
    CONTACT_CHANGED = "contact.changed"
    SESSIONS_REVOKED = "sessions.revoked"
    USER_DELETED = "user.deleted"


class SessionsRevokedReason(StrEnum):
    """Why every session of an account ended (``sessions.revoked``'s ``reason``)."""

    PASSWORD_RESET = "password_reset"
    PASSWORD_CHANGED = "password_changed"  # the signed-in person's own change
    CONTACT_CHANGED = "contact_changed"
    OPERATOR = "operator"  # resetflow users end-sessions, the operator API


class UserDeletedReason(StrEnum):
    """Why an account went (``user.deleted``'s ``reason``)."""

    OPERATOR = "operator"  # the operator API
    UNVERIFIED_EXPIRED = "unverified_expired"  # RESETFLOW_UNVERIFIED_TTL_HOURS passed
    TAKEN_OVER = "taken_over"  # another account verified the address it had only typed


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where events go: a URL, its ``whsec_`` secret, and the events it wants (``None``:
    all). Several endpoints each get their own job (and so their own ``webhook-id``)."""

    url: str
    secret: SecretStr
    events: frozenset[EventType] | None = None

    def wants(self, event_type: EventType) -> bool:
        return self.events is None or event_type in self.events

    @property
    def key(self) -> bytes:
        """The HMAC key: the base64 part of ``whsec_...``, decoded."""
        return decode_secret(self.secret.get_secret_value())


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; :class:`ValueError` (saying nothing
    of the value) when it is not one."""
    import base64
    import binascii

    if not secret.startswith("whsec_"):
        raise ValueError("must start with whsec_ (the Standard Webhooks format)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ must be base64") from None
    if len(key) < 24:
        raise ValueError("must hold at least 24 random bytes (base64 after whsec_)")
    return key


def event_timestamp(now: datetime) -> str:
    """ISO-8601 in UTC, milliseconds, ``Z``: 2026-12-03T20:25:00.123Z."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_data(user: User) -> dict[str, Any]:
    """The account's ids and contacts, as every event about it carries them."""
    return {"user_id": user.id, "email": user.email, "phone": user.phone}


class Events:
    """Publishes events into the outbox; does nothing when no endpoint is configured."""

    def __init__(
        self, *, endpoints: Iterable[WebhookEndpoint] = (), keyring: Keyring | None
    ) -> None:
        self._endpoints = tuple(endpoints)
        if self._endpoints and keyring is None:
            raise ValueError("sealing events needs the keyring")
        self._keyring = keyring

    @classmethod
    def disabled(cls) -> Events:
        return cls(endpoints=(), keyring=None)

    @property
    def enabled(self) -> bool:
        return bool(self._endpoints)

    async def publish(
        self,
        conn: AsyncConnection,
        event_type: EventType,
        data: Mapping[str, Any],
        *,
        now: datetime,
        user_id: str | None = None,
    ) -> list[str]:
        """Queue ``event_type`` with ``data`` for every endpoint that wants it, in the
        caller's transaction; returns the job ids (each is its ``webhook-id``)."""
        event_type = EventType(event_type)
        wanted = [endpoint for endpoint in self._endpoints if endpoint.wants(event_type)]
        if not wanted:
            return []
        assert self._keyring is not None
        body = json.dumps(
            {"type": event_type.value, "timestamp": event_timestamp(now), "data": dict(data)},
            separators=(",", ":"),
            ensure_ascii=False,
        )
        repo = DeliveryRepository(conn)
        job_ids = []
        for endpoint in wanted:
            job_id = secrets.token_hex(16)
            sealed = self._keyring.seal(
                json.dumps({"url": endpoint.url, "body": body}).encode(),
                context=job_id.encode(),
            )
            await repo.enqueue(
                job_id=job_id,
                user_id=user_id or data.get("user_id"),
                notification=event_type.value,
                locale="-",
                sealed_payload=sealed,
                expires_at=None,
                now=now,
                channel=EVENT_CHANNEL,
                provider=WEBHOOK_PROVIDER,
            )
            job_ids.append(job_id)
        await repo.wake_workers()
        return job_ids

    def open(self, job_id: str, sealed: bytes) -> tuple[str, bytes]:
        """The endpoint URL and the exact body of an event job."""
        assert self._keyring is not None
        payload = json.loads(self._keyring.open(sealed, context=job_id.encode()))
        return str(payload["url"]), str(payload["body"]).encode()

    def endpoint(self, url: str) -> WebhookEndpoint | None:
        return next((e for e in self._endpoints if e.url == url), None)

    # One method per event, at the places where the changes happen -------------------

    async def user_created(self, conn: AsyncConnection, user_id: str, *, now: datetime) -> None:
        """For the account ``user_id`` just written on ``conn``."""
        if not self.enabled:
            return
        user = await UserRepository(conn).get(user_id)
        assert user is not None
        await self.publish(
            conn,
            EventType.USER_CREATED,
            {
                **user_data(user),
                "name": user.name,
                "preference": user.preference.value,
                "locale": user.locale,
                "email_verified": user.email_verified_at is not None,
                "phone_verified": user.phone_verified_at is not None,
            },
            now=now,
        )

    async def contact_verified(
        self, conn: AsyncConnection, user: User, channel: Channel, *, now: datetime
    ) -> None:
        await self.publish(
            conn,
            EventType.CONTACT_VERIFIED,
            {**user_data(user), "channel": channel.value, "contact": user.contact(channel)},
            now=now,
        )

    async def password_reset(self, conn: AsyncConnection, user: User, *, now: datetime) -> None:
        await self.publish(conn, EventType.PASSWORD_RESET, user_data(user), now=now)

    async def password_changed(self, conn: AsyncConnection, user: User, *, now: datetime) -> None:
        await self.publish(conn, EventType.PASSWORD_CHANGED, user_data(user), now=now)

    async def contact_changed(
        self, conn: AsyncConnection, user: User, channel: Channel, *, current: str, now: datetime
    ) -> None:
        """``user`` as it was before its ``channel`` contact became ``current``."""
        after = user_data(user) | {"email" if channel is Channel.EMAIL else "phone": current}
        data = {**after, "channel": channel.value, "previous": user.contact(channel)}
        await self.publish(conn, EventType.CONTACT_CHANGED, {**data, "current": current}, now=now)

    async def sessions_revoked(
        self,
        conn: AsyncConnection,
        user_id: str,
        *,
        reason: SessionsRevokedReason,
        now: datetime,
    ) -> None:
        await self.publish(
            conn,
            EventType.SESSIONS_REVOKED,
            {"user_id": user_id, "reason": SessionsRevokedReason(reason).value},
            now=now,
        )

    async def user_deleted(self, conn: AsyncConnection, user: User, *, now: datetime) -> None:
        """For the operator API's delete (in the transaction that deletes the row)."""
        data = {**user_data(user), "reason": UserDeletedReason.OPERATOR.value}
        await self.publish(conn, EventType.USER_DELETED, data, now=now)

    async def users_removed(
        self,
        conn: AsyncConnection,
        user_ids: list[str],
        *,
        reason: UserDeletedReason,
        now: datetime,
    ) -> None:
        """Accounts resetflow removed itself, in the transaction that removed them: a
        sign-up that verified nothing in time, or one left with nothing once another
        account verified the address it had only typed. The data holds no contact: those
        were never proven, and may well be somebody else's."""
        for user_id in user_ids:
            data = {"user_id": user_id, "reason": UserDeletedReason(reason).value}
            await self.publish(conn, EventType.USER_DELETED, data, now=now)
