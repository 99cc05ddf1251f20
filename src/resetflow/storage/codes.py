"""One-time code rows. Each state change is a single conditional UPDATE, so that two
requests racing on the same code cannot both win (R5); a new code replaces the old one in
a single upsert, so that two requests issuing codes for the same account and purpose at
once both succeed (R6, and R19/R20 for the decoy rows of unknown contacts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage import batch
from resetflow.storage.prepared import Prepared
from resetflow.storage.tables import one_time_codes as codes

# What a code starts with: no failed tries, not consumed, no grant spent. ``replace``
# writes these on the updated row too, so that it is identical to a freshly inserted one.
_FRESH_STATE: dict[str, Any] = {"failed_tries": 0, "consumed_at": None, "grant_used_at": None}


def _upsert(insert: postgresql.Insert | sqlite.Insert) -> Executable:
    """``INSERT … ON CONFLICT (user_id, purpose) DO UPDATE`` that overwrites every other
    column with the new row's value. Every column is a bind parameter of its own name, so a
    column added to the table later fails loudly here until ``replace`` supplies it."""
    statement = insert.values({column: bindparam(column.name) for column in codes.c})
    conflict = ("user_id", "purpose")  # uq_one_time_codes_user_purpose
    return statement.on_conflict_do_update(
        index_elements=conflict,
        set_={c.name: statement.excluded[c.name] for c in codes.c if c.name not in conflict},
    )


# Built once: every /send-token issues a code (a decoy one for unknown contacts).
_REPLACE: dict[str, Prepared] = {
    "postgresql": Prepared(_upsert(postgresql.insert(codes))),
    "sqlite": Prepared(_upsert(sqlite.insert(codes))),
}


@dataclass(frozen=True, slots=True)
class StoredCode:
    id: str
    user_id: str
    purpose: str
    attempt_hash: str
    code_mac: bytes
    expires_at: datetime
    failed_tries: int
    consumed_at: datetime | None
    grant_used_at: datetime | None


class CodeRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def replace(
        self,
        *,
        code_id: str,
        user_id: str,
        purpose: str,
        attempt_hash: str,
        code_mac: bytes,
        now: datetime,
        expires_at: datetime,
    ) -> None:
        """Store a new code for (user, purpose), voiding any older one (R6).

        One atomic upsert: the older row, if any, is overwritten in place, id and state
        included, so it cannot be consumed or granted any more; concurrent replacements of
        the same (user, purpose) queue on its row lock instead of violating
        ``uq_one_time_codes_user_purpose``. (Nothing references ``one_time_codes.id``; the
        old id simply stops existing, as with a delete.) In a write batch (storage/batch.py),
        sent with the batch.
        """
        await batch.write(
            self._conn,
            _REPLACE[self._conn.dialect.name],
            {
                "id": code_id,
                "user_id": user_id,
                "purpose": purpose,
                "attempt_hash": attempt_hash,
                "code_mac": code_mac,
                "created_at": now,
                "expires_at": expires_at,
                **_FRESH_STATE,
            },
        )

    async def void(self, *, user_id: str, purpose: str) -> None:
        """Forget the account's live code for ``purpose`` (it can no longer be used)."""
        await self._conn.execute(
            delete(codes).where((codes.c.user_id == user_id) & (codes.c.purpose == purpose))
        )

    async def current(self, *, user_id: str, purpose: str) -> StoredCode | None:
        row = (
            await self._conn.execute(
                select(codes).where((codes.c.user_id == user_id) & (codes.c.purpose == purpose))
            )
        ).first()
        if row is None:
            return None
        m = row._mapping
        return StoredCode(
            id=m["id"],
            user_id=m["user_id"],
            purpose=m["purpose"],
            attempt_hash=m["attempt_hash"],
            code_mac=bytes(m["code_mac"]),
            expires_at=m["expires_at"],
            failed_tries=m["failed_tries"],
            consumed_at=m["consumed_at"],
            grant_used_at=m["grant_used_at"],
        )

    async def add_failed_try(self, code_id: str) -> None:
        await self._conn.execute(
            update(codes).where(codes.c.id == code_id).values(failed_tries=codes.c.failed_tries + 1)
        )

    async def consume(self, code_id: str, *, max_tries: int, now: datetime) -> bool:
        """Mark the code used if it is still live; True for exactly one caller."""
        result = await self._conn.execute(
            update(codes)
            .where(
                (codes.c.id == code_id)
                & codes.c.consumed_at.is_(None)
                & (codes.c.failed_tries < max_tries)
                & (codes.c.expires_at > now)
            )
            .values(consumed_at=now)
        )
        return result.rowcount == 1

    async def use_grant(self, code_id: str, *, granted_after: datetime, now: datetime) -> bool:
        """Spend the reset grant a code gave when it was consumed after ``granted_after``;
        True for exactly one caller (R25)."""
        result = await self._conn.execute(
            update(codes)
            .where(
                (codes.c.id == code_id)
                & (codes.c.consumed_at > granted_after)
                & codes.c.grant_used_at.is_(None)
            )
            .values(grant_used_at=now)
        )
        return result.rowcount == 1

    async def purge_expired(self, *, before: datetime) -> int:
        result = await self._conn.execute(delete(codes).where(codes.c.expires_at < before))
        return result.rowcount
