"""One-time code rows. Each state change is a single conditional UPDATE, so that two
requests racing on the same code cannot both win (R5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage.tables import one_time_codes as codes


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
        """Store a new code for (user, purpose), voiding any older one (R6)."""
        await self._conn.execute(
            delete(codes).where((codes.c.user_id == user_id) & (codes.c.purpose == purpose))
        )
        await self._conn.execute(
            insert(codes).values(
                id=code_id,
                user_id=user_id,
                purpose=purpose,
                attempt_hash=attempt_hash,
                code_mac=code_mac,
                created_at=now,
                expires_at=expires_at,
            )
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
