"""Operator API tokens (R60): random, shown once, stored only as a hash.

A token is ``rfat_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits).
It is stored as its SHA-256: a slow password hash (Argon2) guards *guessable* secrets,
and a 256-bit random value cannot be guessed, so a fast hash already makes a leaked
table useless, and a request can be checked by one indexed look-up. The look-up is by
hash, then the stored and computed hashes are compared with :func:`hmac.compare_digest`
(constant time; the database's index search only ever sees a hash, never the token).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage.tables import admin_tokens

TOKEN_PREFIX = "rfat_"
MAX_TOKEN_LENGTH = 128


@dataclass(frozen=True, slots=True)
class AdminToken:
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenNameTaken(Exception):
    pass


def new_admin_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminTokenRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create(self, name: str, token: str, *, now: datetime) -> None:
        taken = select(admin_tokens.c.id).where(admin_tokens.c.name == name)
        if (await self._conn.execute(taken)).first() is not None:
            raise TokenNameTaken(name)
        await self._conn.execute(
            insert(admin_tokens).values(name=name, token_hash=token_hash(token), created_at=now)
        )

    async def list(self) -> list[AdminToken]:
        rows = await self._conn.execute(select(admin_tokens).order_by(admin_tokens.c.id))
        return [
            AdminToken(
                name=m["name"],
                created_at=m["created_at"],
                last_used_at=m["last_used_at"],
                revoked_at=m["revoked_at"],
            )
            for m in (row._mapping for row in rows)
        ]

    async def revoke(self, name: str, *, now: datetime) -> bool:
        result = await self._conn.execute(
            update(admin_tokens)
            .where((admin_tokens.c.name == name) & admin_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return result.rowcount == 1

    async def any_active(self) -> bool:
        query = select(admin_tokens.c.id).where(admin_tokens.c.revoked_at.is_(None)).limit(1)
        return (await self._conn.execute(query)).first() is not None

    async def name_for(self, token: str) -> str | None:
        """The name of the live token ``token``, or None (unknown, revoked, malformed)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            return None
        wanted = token_hash(token)
        query = select(admin_tokens.c.name, admin_tokens.c.token_hash).where(
            (admin_tokens.c.token_hash == wanted) & admin_tokens.c.revoked_at.is_(None)
        )
        row = (await self._conn.execute(query)).first()
        if row is None or not hmac.compare_digest(row.token_hash.encode(), wanted.encode()):
            return None
        return str(row.name)

    async def touch(self, name: str, *, now: datetime) -> None:
        await self._conn.execute(
            update(admin_tokens).where(admin_tokens.c.name == name).values(last_used_at=now)
        )
