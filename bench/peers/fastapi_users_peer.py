"""The fastapi-users peer: its reset-password router (``POST /auth/forgot-password``) on
SQLite with the SQLAlchemy adapter, as its documentation sets it up, mailing the reset
token from ``on_after_forgot_password`` with aiosmtplib; run by uvicorn in the
``fastapi-users`` environment (bench/peers/envs.py). Settings from the environment:

- ``PEER_DATABASE_URL``: ``sqlite+aiosqlite:////abs/path.db``
- ``PEER_SMTP_PORT``: the SMTP sink on 127.0.0.1

    uvicorn fastapi_users_peer:app --port 8002 --workers 2 --no-access-log
    python fastapi_users_peer.py setup EMAILS_FILE   # tables, then one user per address

``POST /auth/forgot-password`` (JSON ``{"email": ...}``) answers 202 whether the address
is known or not; ``GET /healthz`` answers a constant JSON body.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from fastapi import Depends, FastAPI, Request
from fastapi_users import BaseUserManager, FastAPIUsers, UUIDIDMixin
from fastapi_users.authentication import AuthenticationBackend, BearerTransport, JWTStrategy
from fastapi_users.db import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

DATABASE_URL = os.environ.get("PEER_DATABASE_URL", "sqlite+aiosqlite:///./peer.db")
SMTP_PORT = int(os.environ.get("PEER_SMTP_PORT", "25"))
SECRET = os.environ.get("PEER_SECRET_KEY", "bench-peer-not-a-secret-" + "x" * 40)
PASSWORD = "bench password, never used to sign in"


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


engine = create_async_engine(DATABASE_URL)
session_maker = async_sessionmaker(engine, expire_on_commit=False)


async def get_async_session() -> AsyncIterator[AsyncSession]:
    async with session_maker() as session:
        yield session


async def get_user_db(
    session: AsyncSession = Depends(get_async_session),  # noqa: B008 (FastAPI's idiom)
) -> AsyncIterator[SQLAlchemyUserDatabase[User, uuid.UUID]]:
    yield SQLAlchemyUserDatabase(session, User)


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET

    async def on_after_forgot_password(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        message = EmailMessage()
        message["From"] = "accounts@example.com"
        message["To"] = user.email
        message["Subject"] = "Reset your password"
        message.set_content(
            f"Choose a new password here:\nhttp://127.0.0.1/reset-password?token={token}\n"
        )
        await aiosmtplib.send(message, hostname="127.0.0.1", port=SMTP_PORT)


async def get_user_manager(
    user_db: Any = Depends(get_user_db),  # noqa: B008 (FastAPI's idiom)
) -> AsyncIterator[UserManager]:
    yield UserManager(user_db)


def get_jwt_strategy() -> JWTStrategy[User, uuid.UUID]:
    return JWTStrategy(secret=SECRET, lifetime_seconds=3600)


auth_backend = AuthenticationBackend(
    name="jwt",
    transport=BearerTransport(tokenUrl="auth/jwt/login"),
    get_strategy=get_jwt_strategy,
)
fastapi_users = FastAPIUsers[User, uuid.UUID](get_user_manager, [auth_backend])

app = FastAPI()
app.include_router(fastapi_users.get_reset_password_router(), prefix="/auth")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def setup(emails: list[str]) -> None:
    """The tables, then one active, verified user per address (one shared hash)."""
    from fastapi_users.password import PasswordHelper

    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    hashed = PasswordHelper().hash(PASSWORD)
    table = User.__table__
    async with engine.begin() as conn:
        for start in range(0, len(emails), 10_000):
            await conn.execute(
                table.insert(),
                [
                    {
                        "id": uuid.uuid4(),
                        "email": address,
                        "hashed_password": hashed,
                        "is_active": True,
                        "is_superuser": False,
                        "is_verified": True,
                    }
                    for address in emails[start : start + 10_000]
                ],
            )
    await engine.dispose()


if __name__ == "__main__" and sys.argv[1:2] == ["setup"]:
    asyncio.run(setup(Path(sys.argv[2]).read_text().split()))
