"""The SQL repositories behave the same on SQLite and on PostgreSQL.

Each test runs once per database (the ``database_url`` fixture); on PostgreSQL the schema
comes from the same Alembic migrations as on SQLite.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from resetflow.accounts.models import Channel
from resetflow.crypto import Keyring
from resetflow.notify.messages import Notification, Route
from resetflow.notify.outbox import Outbox
from resetflow.storage.codes import CodeRepository
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.users import UserRepository

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


async def _user(db: Database, user_id: str = "u" * 32, email: str = "ada@example.com") -> str:
    async with db.write() as conn:
        await UserRepository(conn).insert(
            user_id=user_id,
            name="Ada",
            email=email,
            phone="+14155550100" if email == "ada@example.com" else None,
            password_hash="$argon2id$x",
            preference=Channel.EMAIL,
            locale="en",
            now=NOW,
        )
    return user_id


async def test_users_round_trip_with_utc_times(database_url: str) -> None:
    db = Database(database_url)
    try:
        await _user(db)
        async with db.write() as conn:
            await UserRepository(conn).mark_verified("u" * 32, Channel.SMS, now=NOW)
        async with db.read() as conn:
            users = UserRepository(conn)
            by_email = await users.by_email("ada@example.com")
            by_phone = await users.by_phone("+14155550100")
        assert by_email is not None and by_email == by_phone
        assert by_email.phone_verified_at == NOW
        assert by_email.phone_verified_at.tzinfo is not None
        assert by_email.verified_channels == [Channel.SMS]
    finally:
        await db.close()


async def test_r48_lookups_are_exact_not_substring_or_case_folded(database_url: str) -> None:
    """R48: look-ups match the normalised value exactly, never a part of it."""
    db = Database(database_url)
    try:
        await _user(db)
        async with db.read() as conn:
            users = UserRepository(conn)
            assert await users.by_email("ada@example.co") is None
            assert await users.by_email("da@example.com") is None
            assert await users.by_email("%@example.com") is None
            assert await users.by_phone("+1415555010") is None
    finally:
        await db.close()


async def test_email_and_phone_are_unique(database_url: str) -> None:
    db = Database(database_url)
    try:
        await _user(db)
        with pytest.raises(IntegrityError):
            await _user(db, user_id="v" * 32)
    finally:
        await db.close()


async def test_r05_concurrent_consumption_has_exactly_one_winner(database_url: str) -> None:
    """R5: of 20 concurrent consumptions of one code, exactly one succeeds."""
    db = Database(database_url)
    try:
        user_id = await _user(db)
        async with db.write() as conn:
            await CodeRepository(conn).replace(
                code_id="c" * 32,
                user_id=user_id,
                purpose="reset",
                attempt_hash="a" * 64,
                code_mac=b"m" * 32,
                now=NOW,
                expires_at=NOW + timedelta(minutes=5),
            )

        async def consume() -> bool:
            async with db.write() as conn:
                return await CodeRepository(conn).consume("c" * 32, max_tries=5, now=NOW)

        results = await asyncio.gather(*(consume() for _ in range(20)))
        assert results.count(True) == 1
    finally:
        await db.close()


async def test_r06_a_new_code_replaces_the_old_one(database_url: str) -> None:
    """R6: issuing a code for the same account and purpose voids the previous one."""
    db = Database(database_url)
    try:
        user_id = await _user(db)
        for code_id in ("1" * 32, "2" * 32):
            async with db.write() as conn:
                await CodeRepository(conn).replace(
                    code_id=code_id,
                    user_id=user_id,
                    purpose="reset",
                    attempt_hash="a" * 64,
                    code_mac=b"m" * 32,
                    now=NOW,
                    expires_at=NOW + timedelta(minutes=5),
                )
        async with db.write() as conn:
            codes = CodeRepository(conn)
            current = await codes.current(user_id=user_id, purpose="reset")
            assert current is not None and current.id == "2" * 32
            assert not await codes.consume("1" * 32, max_tries=5, now=NOW)
    finally:
        await db.close()


async def test_outbox_claims_each_job_once_and_reclaims_after_the_lease(database_url: str) -> None:
    db = Database(database_url)
    outbox = Outbox(keyring=Keyring(b"k" * 32))
    try:
        async with db.write() as conn:
            for _ in range(5):
                await outbox.enqueue(
                    conn,
                    notification=Notification.PASSWORD_CHANGED,
                    routes=[Route(channel=Channel.EMAIL, to="ada@example.com")],
                    context={"name": "Ada"},
                    locale="en",
                    user_id=None,
                    now=NOW,
                )

        async def claim(owner: str, at: datetime) -> list[str]:
            async with db.write() as conn:
                jobs = await DeliveryRepository(conn).claim_due(
                    owner=owner, now=at, lease_seconds=60, limit=3
                )
            return [job.id for job in jobs]

        first, second = await asyncio.gather(claim("a", NOW), claim("b", NOW))
        assert len(first) + len(second) == 5
        assert not set(first) & set(second)
        assert await claim("c", NOW + timedelta(seconds=30)) == []
        # The leases ran out (their workers died): the jobs are due again.
        reclaimed = await claim("d", NOW + timedelta(seconds=61))
        reclaimed += await claim("d", NOW + timedelta(seconds=61))
        assert sorted(reclaimed) == sorted(first + second)
        # A worker whose lease was taken over cannot overwrite the newer owner's outcome.
        async with db.write() as conn:
            repo = DeliveryRepository(conn)
            assert not await repo.finish(first[0], owner="a", status="sent", now=NOW)
            assert await repo.finish(first[0], owner="d", status="sent", now=NOW)
            job = await repo.get(first[0])
        assert job is not None and job.status == "sent" and job.sealed_payload is None
    finally:
        await db.close()


async def test_migrations_build_exactly_the_declared_schema(database_url: str) -> None:
    """The Alembic history and ``tables.py`` agree, on SQLite and PostgreSQL alike."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from resetflow.storage.tables import metadata

    db = Database(database_url)
    try:
        async with db.read() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
    finally:
        await db.close()
    assert differences == []
