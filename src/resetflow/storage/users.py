"""User rows in and out. Look-ups are exact matches on unique indexes (R48)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.models import Channel, User
from resetflow.storage.database import Database
from resetflow.storage.prepared import Prepared
from resetflow.storage.tables import one_time_codes, users

# The decoy account (migration 0003): requests for unknown addresses write to it, so that
# they cost what real ones cost. It has no usable password and nothing verified.
DECOY_USER_ID = "0" * 32


async def read_user(database: Database, user_id: str) -> User | None:
    """The account with this id, read on its own (:meth:`Database.read_first`, no
    transaction): each signed-in request's session check and whoami, and any service
    that needs the account once, outside a transaction of its own."""
    row = await database.read_first(_BY_ID, {"id": user_id})
    return _to_user(row) if row else None


class UserRepository:
    """Reads and writes ``users`` on the connection (and transaction) it is given."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def insert(
        self,
        *,
        user_id: str,
        name: str,
        email: str,
        phone: str | None,
        password_hash: str,
        preference: Channel,
        locale: str,
        now: datetime,
    ) -> None:
        await self._conn.execute(
            insert(users).values(
                id=user_id,
                name=name,
                email=email,
                phone=phone,
                password_hash=password_hash,
                preference=preference.value,
                locale=locale,
                created_at=now,
                updated_at=now,
            )
        )

    async def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        """``for_update`` locks the row until the transaction ends (PostgreSQL; SQLite's
        write transactions are exclusive anyway)."""
        if for_update:
            return await self._one(users.c.id == user_id, for_update=True)
        # Prepared: every signed-in request reads its account (the session check, whoami).
        row = await _BY_ID.first(self._conn, {"id": user_id})
        return _to_user(row) if row else None

    async def by_email(self, email: str) -> User | None:
        row = await _BY_EMAIL.first(self._conn, {"contact": email})
        return _to_user(row) if row else None

    async def by_phone(self, phone: str) -> User | None:
        row = await _BY_PHONE.first(self._conn, {"contact": phone})
        return _to_user(row) if row else None

    async def by_contact_or_decoy(self, *, email: str | None, phone: str | None) -> User:
        """The account with this email (else phone), or the decoy account (its id is
        ``DECOY_USER_ID``) when there is none.

        One statement, and one row comes back and is read either way, so that a request
        for an unknown contact does the work of a known one (R20): both look the contact
        up, both look the decoy up, and one row of the same shape is turned into a User.
        """
        statement = _BY_EMAIL_OR_DECOY if email is not None else _BY_PHONE_OR_DECOY
        contact = email if email is not None else phone or ""
        row = await statement.first(self._conn, {"contact": contact, "decoy": DECOY_USER_ID})
        assert row is not None, "the decoy account is missing (migration 0003)"
        return _to_user(row)

    async def exists_with(self, *, email: str, phone: str | None) -> bool:
        condition = users.c.email == email
        if phone is not None:
            condition = condition | (users.c.phone == phone)
        found = await self._conn.execute(select(users.c.id).where(condition).limit(1))
        return found.first() is not None

    async def verified_holder(self, channel: Channel, value: str) -> User | None:
        """The account that holds ``value`` verified (only one can: uq_users_*_verified)."""
        column, verified_at = _columns(channel)
        return await self._one((column == value) & verified_at.is_not(None))

    async def release_unverified(
        self, channel: Channel, value: str, *, taken_by: str, now: datetime
    ) -> list[str]:
        """``taken_by`` has just verified ``value``: every other account that held it
        unverified loses it, and one left with nothing verified is deleted. Returns the
        ids of the deleted accounts (their sessions no longer count: the account is gone).
        """
        column, verified_at = _columns(channel)
        others = (column == value) & verified_at.is_(None) & (users.c.id != taken_by)
        found = await self._conn.execute(select(users.c.id).where(others))
        ids = [row[0] for row in found if row[0] != DECOY_USER_ID]
        if not ids:
            return []
        await self._conn.execute(
            update(users).where(users.c.id.in_(ids)).values({column.name: None, "updated_at": now})
        )
        return await self._delete_where(users.c.id.in_(ids) & _never_verified())

    async def delete_never_verified(self, *, created_before: datetime) -> list[str]:
        """Delete sign-ups that never verified a contact and are older than
        ``created_before`` (``RESETFLOW_UNVERIFIED_TTL_HOURS``), with their codes."""
        return await self._delete_where(
            _never_verified()
            & (users.c.created_at < created_before)
            & (users.c.id != DECOY_USER_ID)
        )

    async def _delete_where(self, condition: Any) -> list[str]:
        ids = [row[0] for row in await self._conn.execute(select(users.c.id).where(condition))]
        if ids:
            await self._conn.execute(
                delete(one_time_codes).where(one_time_codes.c.user_id.in_(ids))
            )
            await self._conn.execute(delete(users).where(users.c.id.in_(ids)))
        return ids

    async def list(self, *, limit: int = 100, offset: int = 0) -> list[User]:
        rows = await self._conn.execute(
            select(users)
            .where(users.c.id != DECOY_USER_ID)
            .order_by(users.c.created_at, users.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [_to_user(row._mapping) for row in rows]

    async def count(self) -> int:
        query = select(func.count()).select_from(users).where(users.c.id != DECOY_USER_ID)
        return int((await self._conn.execute(query)).scalar_one())

    async def set_password_hash(self, user_id: str, password_hash: str, *, now: datetime) -> None:
        await self._conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=password_hash, updated_at=now)
        )

    async def replace_password_hash(
        self, user_id: str, *, verified: str, new: str, now: datetime
    ) -> bool:
        """Swap the hash a sign-in just verified (``verified``) for ``new``, only if it is
        still the stored one: a reset or a change that landed meanwhile wins. True when
        replaced."""
        result = await self._conn.execute(
            update(users)
            .where((users.c.id == user_id) & (users.c.password_hash == verified))
            .values(password_hash=new, updated_at=now)
        )
        return bool(result.rowcount)

    async def mark_verified(self, user_id: str, channel: Channel, *, now: datetime) -> None:
        column = "email_verified_at" if channel is Channel.EMAIL else "phone_verified_at"
        await self._conn.execute(
            update(users).where(users.c.id == user_id).values({column: now, "updated_at": now})
        )

    async def set_contact(
        self, user_id: str, channel: Channel, value: str, *, verified_at: datetime
    ) -> None:
        """Replace the ``channel`` contact with ``value``, verified at ``verified_at``."""
        if channel is Channel.EMAIL:
            values = {"email": value, "email_verified_at": verified_at}
        else:
            values = {"phone": value, "phone_verified_at": verified_at}
        await self._conn.execute(
            update(users).where(users.c.id == user_id).values({**values, "updated_at": verified_at})
        )

    async def set_preference(self, user_id: str, preference: Channel, *, now: datetime) -> None:
        await self._conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(preference=preference.value, updated_at=now)
        )

    async def set_role(self, user_id: str, role: str, *, now: datetime) -> bool:
        """Give the account ``role``; False when it already had it (or does not exist)."""
        result = await self._conn.execute(
            update(users)
            .where((users.c.id == user_id) & (users.c.role != role))
            .values(role=role, updated_at=now)
        )
        return result.rowcount == 1

    async def void_sessions(self, user_id: str, *, now: datetime) -> None:
        """Every session of the account created before ``now`` stops counting."""
        await self._conn.execute(
            update(users).where(users.c.id == user_id).values(sessions_valid_after=now)
        )

    async def add_code_failure(self, user_id: str, *, now: datetime) -> None:
        # Increment in SQL, not read-modify-write: concurrent failures all count.
        await self._conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(code_failures=users.c.code_failures + 1, code_failure_at=now)
        )

    async def clear_code_failures(self, user_id: str) -> None:
        await self._conn.execute(update(users).where(users.c.id == user_id).values(code_failures=0))

    async def _one(self, condition: Any, *, for_update: bool = False) -> User | None:
        query = select(users).where(condition)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _to_user(row._mapping) if row else None


def _columns(channel: Channel) -> tuple[Any, Any]:
    if channel is Channel.EMAIL:
        return users.c.email, users.c.email_verified_at
    return users.c.phone, users.c.phone_verified_at


def _never_verified() -> Any:
    return users.c.email_verified_at.is_(None) & users.c.phone_verified_at.is_(None)


def _holder_order(verified_at: Any) -> tuple[Any, ...]:
    """Several accounts may hold an address unverified (migration 0006): the one that
    verified it comes first, then the oldest."""
    return (case((verified_at.is_(None), 1), else_=0), users.c.created_at, users.c.id)


def _by(column: Any, verified_at: Any) -> Prepared:
    return Prepared(
        select(users)
        .where(column == bindparam("contact"))
        .order_by(*_holder_order(verified_at))
        .limit(1)
    )


# Built once: every /send-token looks its contact up.
_BY_ID = Prepared(select(users).where(users.c.id == bindparam("id")))

_BY_EMAIL = _by(users.c.email, users.c.email_verified_at)
_BY_PHONE = _by(users.c.phone, users.c.phone_verified_at)


def _or_decoy(contact: Any, verified_at: Any) -> Prepared:
    """The account whose ``contact`` column matches, else the decoy: both rows are
    looked up, ``pick`` puts the account first (a verified holder before unverified
    ones, 0 before 1 before 2), and one row is returned."""
    rank = case((verified_at.is_(None), 1), else_=0)
    found = select(users, rank.label("pick")).where(contact == bindparam("contact"))
    decoy = select(users, literal_column("2").label("pick")).where(users.c.id == bindparam("decoy"))
    both = union_all(found, decoy).subquery()
    return Prepared(
        select(*[both.c[c.name] for c in users.c])
        .order_by(both.c.pick, both.c.created_at, both.c.id)
        .limit(1)
    )


_BY_EMAIL_OR_DECOY = _or_decoy(users.c.email, users.c.email_verified_at)
_BY_PHONE_OR_DECOY = _or_decoy(users.c.phone, users.c.phone_verified_at)


def _to_user(row: Any) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        phone=row["phone"],
        password_hash=row["password_hash"],
        preference=Channel(row["preference"]),
        locale=row["locale"],
        email_verified_at=row["email_verified_at"],
        phone_verified_at=row["phone_verified_at"],
        code_failures=row["code_failures"],
        code_failure_at=row["code_failure_at"],
        created_at=row["created_at"],
        role=row["role"],
        sessions_valid_after=row["sessions_valid_after"],
    )
