"""What operators do to accounts through the admin API and the CLI (SPEC §9).

:class:`AdminUsers` has one method per change (create, patch, delete, revoke_sessions,
send_recovery, import_users): each is the single place where that change happens, so
that anything that must follow a change (an event for the host application) is added in
one spot. Every call is in the audit trail with the operator token's name (R60).

Unlike the public flow, operators may learn whether an account exists: a taken contact
is ``409 contact_taken``, an unknown id ``404 user_not_found``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.admin_schemas import AdminNewUser, AdminUserPatch
from resetflow.accounts.contact_rules import ContactRules
from resetflow.accounts.legacy_hashes import UnsupportedHash, check_importable
from resetflow.accounts.models import Channel, User
from resetflow.accounts.passwords import PasswordHasher, PasswordPolicy
from resetflow.audit import AuditEvent, AuditLog
from resetflow.client import ClientInfo
from resetflow.clock import Clock
from resetflow.crypto import new_token
from resetflow.errors import (
    ContactTaken,
    InvalidInput,
    ResetflowError,
    UnsupportedPasswordHash,
    UserNotFound,
)
from resetflow.notify.events import Events, SessionsRevokedReason
from resetflow.recovery.service import RecoveryService
from resetflow.storage.database import Database
from resetflow.storage.deliveries import EVENT_CHANNEL
from resetflow.storage.sessions import SessionStore
from resetflow.storage.tables import delivery_attempts, delivery_jobs, one_time_codes, users
from resetflow.storage.users import DECOY_USER_ID, UserRepository, read_user

IMPORT_BATCH = 500


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked: the admin token's name (never the token) and the client."""

    token_name: str
    client: ClientInfo | None = None


@dataclass(slots=True)
class ImportSummary:
    created: int = 0
    exists: int = 0
    errors: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def add(self, result: dict[str, Any]) -> None:
        if "error" in result:
            self.errors += 1
            self.codes[result["error"]] = self.codes.get(result["error"], 0) + 1
        elif result.get("status") == "exists":
            self.exists += 1
        else:
            self.created += 1


@dataclass(frozen=True, slots=True)
class _Row:
    """One import line, checked and normalised, ready to insert."""

    line: int
    values: dict[str, Any]


def user_json(user: User) -> dict[str, Any]:
    """The user object of the admin API: the profile and when the account was made."""
    return {**user.profile(), "created_at": user.created_at.isoformat().replace("+00:00", "Z")}


class AdminUsers:
    def __init__(
        self,
        *,
        database: Database,
        sessions: SessionStore,
        recovery: RecoveryService,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        audit: AuditLog,
        clock: Clock,
        contacts: ContactRules,
        events: Events | None = None,
    ) -> None:
        self._db = database
        # Events for the host app (notify/events.py), each in its change's transaction.
        self._events = events or Events.disabled()
        self._sessions = sessions
        self._recovery = recovery
        self._hasher = hasher
        self._policy = policy
        self._audit = audit
        self._clock = clock
        self._contacts = contacts

    # -- reading -----------------------------------------------------------------------

    def asks_to_confirm_contact(self, user: User) -> bool:
        """True at the first sign-in of an imported account that has no verified
        contact: its stored hash (read before the sign-in replaced it) is a foreign or
        older one. An account made here (sign-up, ``users create``, ``password`` in the
        API) has today's hash and is left to the flow it already has."""
        return not user.verified_channels and self._hasher.needs_rehash(user.password_hash)

    async def get(self, user_id: str) -> User:
        if user_id == DECOY_USER_ID:
            raise UserNotFound()
        user = await read_user(self._db, user_id)
        if user is None:
            raise UserNotFound()
        return user

    async def find(self, *, email: str | None, phone: str | None) -> list[User]:
        """Exact look-up by the normalised contact (an unparseable one finds nobody)."""
        try:
            contact = (
                self._contacts.email(email)
                if email is not None
                else self._contacts.phone(phone or "")
            )
        except InvalidInput:
            return []
        async with self._db.read() as conn:
            repo = UserRepository(conn)
            found = await (repo.by_email(contact) if email is not None else repo.by_phone(contact))
        return [found] if found is not None and found.id != DECOY_USER_ID else []

    # -- changes -----------------------------------------------------------------------

    async def create(self, data: AdminNewUser, *, actor: Actor) -> User:
        row = await self._prepare(data, line=0)
        async with self._db.write() as conn:
            taken = await self._taken(conn, [row])
            owner = taken.get(row.values["email"]) or taken.get(row.values["phone"] or "")
            if owner is not None:
                raise ContactTaken(user_id=owner)
            await conn.execute(insert(users).values(row.values))
            user = await UserRepository(conn).get(row.values["id"])
            assert user is not None
            await self._record(conn, "user_created", actor, user.id)
            await self._events.user_created(conn, user.id, now=row.values["created_at"])
        return user

    async def patch(self, user_id: str, changes: AdminUserPatch, *, actor: Actor) -> User:
        given = changes.model_fields_set
        values: dict[str, Any] = {}
        fields: dict[str, str] = {}
        if "name" in given:
            values["name"] = changes.name
        if "locale" in given:
            values["locale"] = changes.locale
        if "preference" in given:
            values["preference"] = Channel(str(changes.preference)).value
        if "email" in given and changes.email is None:
            fields["email"] = "An account needs an email address."
        try:
            # An empty or null phone removes it.
            email, phone = self._contacts.given(
                email=changes.email if "email" in given else None,
                phone=(changes.phone or None) if "phone" in given else None,
            )
        except InvalidInput as error:
            fields.update(error.fields)
        else:
            if email is not None:
                values["email"] = email
            if "phone" in given:
                values["phone"] = phone
        if fields:
            raise InvalidInput(fields=fields)
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = UserRepository(conn)
            user = await repo.get(user_id, for_update=True) if user_id != DECOY_USER_ID else None
            if user is None:
                raise UserNotFound()
            for column, channel in (("email", Channel.EMAIL), ("phone", Channel.SMS)):
                verified_key = f"{column}_verified"
                if column in values and values[column] != user.contact(channel):
                    other = await self._owner_of(conn, column, values[column])
                    if other is not None and other != user.id:
                        raise ContactTaken(user_id=other)
                    # A changed contact is unverified unless the patch says otherwise.
                    if verified_key not in given:
                        values[f"{column}_verified_at"] = None
                if verified_key in given:
                    flag = getattr(changes, verified_key)
                    values[f"{column}_verified_at"] = now if flag else None
            preference = Channel(values.get("preference", user.preference.value))
            phone = values.get("phone", user.phone)
            if preference is Channel.SMS and phone is None:
                raise InvalidInput(fields={"preference": "SMS needs a phone number."})
            if values:
                values["updated_at"] = now
                await conn.execute(users.update().where(users.c.id == user.id).values(values))
            patched = await repo.get(user.id)
            assert patched is not None
            await self._record(conn, "user_patched", actor, user.id, fields=",".join(sorted(given)))
            for channel in (Channel.EMAIL, Channel.SMS):
                current = patched.contact(channel)
                if current is not None and current != user.contact(channel):
                    await self._events.contact_changed(
                        conn, user, channel, current=current, now=now
                    )
        return patched

    async def delete(self, user_id: str, *, actor: Actor) -> None:
        """The account, its codes, its delivery jobs (with their attempts) and sessions."""
        async with self._db.write() as conn:
            user = await UserRepository(conn).get(user_id) if user_id != DECOY_USER_ID else None
            if user is None:
                raise UserNotFound()
            # Its messages go; its events for the host app stay queued: the app still
            # learns what happened before the deletion, then user.deleted.
            theirs = (delivery_jobs.c.user_id == user_id) & (
                delivery_jobs.c.channel != EVENT_CHANNEL
            )
            jobs = select(delivery_jobs.c.id).where(theirs)
            await conn.execute(
                delete(delivery_attempts).where(delivery_attempts.c.job_id.in_(jobs))
            )
            await conn.execute(delete(delivery_jobs).where(theirs))
            await conn.execute(delete(one_time_codes).where(one_time_codes.c.user_id == user_id))
            await conn.execute(delete(users).where(users.c.id == user_id))
            await self._record(conn, "user_deleted", actor, user_id)
            await self._events.user_deleted(conn, user, now=self._clock.now())
        # After the commit: a session left over if this fails is void anyway, because
        # session_is_current finds no account for it.
        await self._sessions.delete_user(user_id)

    async def revoke_sessions(self, user_id: str, *, actor: Actor) -> None:
        """Every session of the account ends: void in the database (the same mark a reset
        leaves, R27) and deleted from the session store."""
        async with self._db.write() as conn:
            repo = UserRepository(conn)
            if user_id == DECOY_USER_ID or await repo.get(user_id) is None:
                raise UserNotFound()
            now = self._clock.now()
            await repo.void_sessions(user_id, now=now)
            await self._events.sessions_revoked(
                conn, user_id, reason=SessionsRevokedReason.OPERATOR, now=now
            )
            await self._audit.record(
                AuditEvent.SESSIONS_ENDED,
                outcome="admin",
                client=actor.client,
                user_id=user_id,
                conn=conn,
                admin_token=actor.token_name,
            )
        await self._sessions.delete_user(user_id)

    async def send_recovery(self, user_id: str, *, actor: Actor) -> Channel | None:
        """A reset code to the account's preferred verified contact, through the normal
        flow and its limits. Returns the channel, or None when no contact is verified
        (then nothing is sent: codes only go to verified contacts, R42)."""
        user = await self.get(user_id)
        channels = user.verified_channels
        channel = channels[0] if channels else None
        await self._recovery.request_reset(
            email=user.email if channel in (Channel.EMAIL, None) else None,
            phone=user.phone if channel is Channel.SMS else None,
            attempt_id=new_token(),
            client=actor.client,
        )
        await self._audit.record(
            AuditEvent.ADMIN_CHANGE,
            outcome="recovery_sent" if channel else "no_verified_contact",
            client=actor.client,
            user_id=user.id,
            admin_token=actor.token_name,
        )
        return channel

    async def import_users(
        self, lines: AsyncIterable[tuple[int, dict[str, Any] | ResetflowError]], *, actor: Actor
    ) -> AsyncIterator[dict[str, Any]]:
        """One result per line, in order: ``{"line", "id"}`` for a new account,
        ``{"line", "id", "status": "exists"}`` when its email or phone already has one,
        ``{"line", "error", "message"}`` otherwise. Lines are written in batches of
        :data:`IMPORT_BATCH`, one transaction each; a batch that hits a conflict (a
        concurrent writer) is written again line by line, so one bad line never stops
        or half-writes another. Re-running a file creates nothing twice.
        """
        batch: list[_Row | dict[str, Any]] = []
        summary = ImportSummary()
        async for line, item in lines:
            if isinstance(item, ResetflowError):
                batch.append(_error(line, item))
            else:
                try:
                    data = AdminNewUser.model_validate(item)
                    batch.append(await self._prepare(data, line=line))
                except ValidationError as error:
                    batch.append(_error(line, InvalidInput(fields=_fields(error))))
                except ResetflowError as error:
                    batch.append(_error(line, error))
            if len(batch) >= IMPORT_BATCH:
                for result in await self._write_batch(batch):
                    summary.add(result)
                    yield result
                batch = []
        if batch:
            for result in await self._write_batch(batch):
                summary.add(result)
                yield result
        await self._audit.record(
            AuditEvent.ADMIN_CHANGE,
            outcome="users_imported",
            client=actor.client,
            admin_token=actor.token_name,
            created=summary.created,
            exists=summary.exists,
            errors=summary.errors,
        )

    # -- internals ---------------------------------------------------------------------

    async def _prepare(self, data: AdminNewUser, *, line: int) -> _Row:
        """Check and normalise one new user; hash a plain password (off the loop)."""
        fields: dict[str, str] = {}
        email = phone = None
        try:
            email, phone = self._contacts.given(email=data.email, phone=data.phone or None)
        except InvalidInput as error:
            fields.update(error.fields)
        preference = Channel.preferred(data.preference)
        if preference is Channel.SMS and not data.phone:
            fields["preference"] = "SMS needs a phone number."
        if fields:
            raise InvalidInput(fields=fields)
        if data.password_hash is not None:
            try:
                check_importable(data.password_hash)
            except UnsupportedHash as error:
                raise UnsupportedPasswordHash(fields={"password_hash": str(error)}) from None
            password_hash = data.password_hash.strip()
        else:
            assert data.password is not None
            await self._policy.check(data.password, personal=(data.name, email, phone))
            password_hash = await self._hasher.hash(data.password)
        now = self._clock.now()
        return _Row(
            line=line,
            values={
                "id": secrets.token_hex(16),
                "name": data.name,
                "email": email,
                "phone": phone,
                "password_hash": password_hash,
                "preference": preference.value,
                "locale": data.locale,
                "email_verified_at": now if data.email_verified else None,
                "phone_verified_at": now if data.phone_verified and phone else None,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def _write_batch(self, batch: list[_Row | dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [item for item in batch if isinstance(item, _Row)]
        try:
            async with self._db.write() as conn:
                outcome = await self._insert_new(conn, rows)
        except IntegrityError:
            # Someone else wrote one of these contacts meanwhile: line by line.
            outcome = {}
            for row in rows:
                try:
                    async with self._db.write() as conn:
                        outcome.update(await self._insert_new(conn, [row]))
                except IntegrityError:
                    outcome[row.line] = {"line": row.line, "error": "contact_taken"}
        return [item if isinstance(item, dict) else outcome[item.line] for item in batch]

    async def _insert_new(
        self, conn: AsyncConnection, rows: list[_Row]
    ) -> dict[int, dict[str, Any]]:
        taken = await self._taken(conn, rows)
        results: dict[int, dict[str, Any]] = {}
        new: list[dict[str, Any]] = []
        for row in rows:
            email, phone = row.values["email"], row.values["phone"]
            owner = taken.get(email) or (taken.get(phone) if phone else None)
            if owner is not None:
                results[row.line] = {"line": row.line, "id": owner, "status": "exists"}
                continue
            new.append(row.values)
            # A later line of the same batch with this contact is the same person.
            taken[email] = row.values["id"]
            if phone:
                taken[phone] = row.values["id"]
            results[row.line] = {"line": row.line, "id": row.values["id"], "status": "created"}
        if new:
            await conn.execute(insert(users), new)
        return results

    async def _taken(self, conn: AsyncConnection, rows: list[_Row]) -> dict[str, str]:
        """Contact -> owning account id, for the rows' emails and phones that have one."""
        emails = [row.values["email"] for row in rows]
        phones = [row.values["phone"] for row in rows if row.values["phone"]]
        if not rows:
            return {}
        query = select(users.c.id, users.c.email, users.c.phone).where(
            or_(users.c.email.in_(emails), users.c.phone.in_(phones))
        )
        owners: dict[str, str] = {}
        for found in await conn.execute(query):
            owners[found.email] = found.id
            if found.phone:
                owners[found.phone] = found.id
        return owners

    async def _owner_of(self, conn: AsyncConnection, column: str, value: str | None) -> str | None:
        if value is None:
            return None
        found = await conn.execute(select(users.c.id).where(users.c[column] == value))
        row = found.first()
        return str(row.id) if row else None

    async def _record(
        self, conn: AsyncConnection, outcome: str, actor: Actor, user_id: str, **detail: str
    ) -> None:
        await self._audit.record(
            AuditEvent.ADMIN_CHANGE,
            outcome=outcome,
            client=actor.client,
            user_id=user_id,
            conn=conn,
            admin_token=actor.token_name,
            **detail,
        )


def _error(line: int, error: ResetflowError) -> dict[str, Any]:
    result: dict[str, Any] = {"line": line, "error": error.code.value, "message": error.message}
    if error.fields:
        result["fields"] = error.fields
    if isinstance(error, ContactTaken) and error.user_id:
        result["id"] = error.user_id
    return result


def _fields(error: ValidationError) -> dict[str, str]:
    messages: dict[str, str] = {}
    for problem in error.errors():
        where = str(problem["loc"][0]) if problem["loc"] else "body"
        if problem["type"] == "extra_forbidden":
            messages[where] = "This field is not allowed."
        elif problem["type"] == "missing":
            messages[where] = "This field is required."
        else:
            messages[where] = str(problem["msg"]).removeprefix("Value error, ")
    return messages
