"""The SQL repositories behave the same on SQLite and on PostgreSQL.

Each test runs once per database (the ``database_url`` fixture); on PostgreSQL the schema
comes from the same Alembic migrations as on SQLite.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from resetflow.accounts.models import Channel, User
from resetflow.crypto import Keyring
from resetflow.notify.messages import Notification, Route
from resetflow.notify.outbox import Outbox
from resetflow.storage.codes import CodeRepository
from resetflow.storage.database import Database
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.tables import one_time_codes
from resetflow.storage.tables import users as users_table
from resetflow.storage.users import DECOY_USER_ID, UserRepository

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


async def test_r20_a_reset_lookup_reads_one_row_for_known_and_unknown_contacts(
    database_url: str,
) -> None:
    """R20: the account with the contact, else the decoy account, from one statement: a
    request for an unknown contact reads a row as a known one does. R48 holds for it."""
    db = Database(database_url)
    try:
        await _user(db)
        async with db.read() as conn:
            users = UserRepository(conn)
            by_email = await users.by_contact_or_decoy(email="ada@example.com", phone=None)
            by_phone = await users.by_contact_or_decoy(email=None, phone="+14155550100")
            unknown = [
                await users.by_contact_or_decoy(email="nobody@example.com", phone=None),
                await users.by_contact_or_decoy(email="%@example.com", phone=None),
                await users.by_contact_or_decoy(email="ADA@example.com", phone=None),
                await users.by_contact_or_decoy(email=None, phone="+1415555010"),
            ]
        assert by_email.id == by_phone.id == "u" * 32
        assert by_email == await _by_email(db, "ada@example.com")
        assert [user.id for user in unknown] == [DECOY_USER_ID] * 4
        assert all(user.verified_channels == [] for user in unknown)
    finally:
        await db.close()


async def _by_email(db: Database, email: str) -> User | None:
    async with db.read() as conn:
        return await UserRepository(conn).by_email(email)


async def test_verified_email_and_phone_are_unique_unverified_ones_are_not(
    database_url: str,
) -> None:
    """Only a verified address is unique (migration 0006; it used to be every address, so
    that an unverified sign-up held its owner's address for ever, issue 11 item 7)."""
    db = Database(database_url)
    try:
        await _user(db)
        await _user(db, user_id="v" * 32)  # the same email and phone, unverified: allowed
        for channel in (Channel.EMAIL, Channel.SMS):
            async with db.write() as conn:
                await UserRepository(conn).mark_verified("u" * 32, channel, now=NOW)
            with pytest.raises(IntegrityError):
                async with db.write() as conn:
                    await UserRepository(conn).mark_verified("v" * 32, channel, now=NOW)
        async with db.read() as conn:
            users = UserRepository(conn)
            # Look-ups find the verified holder first.
            assert (await users.by_email("ada@example.com")).id == "u" * 32  # type: ignore[union-attr]
            assert (await users.verified_holder(Channel.SMS, "+14155550100")).id == "u" * 32  # type: ignore[union-attr]
    finally:
        await db.close()


async def test_release_unverified_takes_the_address_over(database_url: str) -> None:
    """The account that verifies an address takes it from those that only typed it: one
    left with nothing verified is deleted with its codes, one with a verified contact
    only loses the address."""
    db = Database(database_url)
    try:
        await _user(db, user_id="n" * 32)  # ada@ / +14155550100, nothing verified
        await _user(db, user_id="p" * 32, email="mallory@example.com")
        async with db.write() as conn:
            # Mallory's account: her own phone verified, Ada's email typed, not verified.
            await conn.execute(
                users_table.update()
                .where(users_table.c.id == "p" * 32)
                .values(email="ada@example.com", phone="+14155550111", phone_verified_at=NOW)
            )
            await CodeRepository(conn).replace(
                code_id="c" * 32,
                user_id="n" * 32,
                purpose="verify-email",
                attempt_hash="a" * 64,
                code_mac=b"m" * 32,
                now=NOW,
                expires_at=NOW + timedelta(minutes=5),
            )
        await _user(db, user_id="w" * 32, email="ada@example.com")
        async with db.write() as conn:
            users = UserRepository(conn)
            released = await users.release_unverified(
                Channel.EMAIL, "ada@example.com", taken_by="w" * 32, now=NOW
            )
            await users.mark_verified("w" * 32, Channel.EMAIL, now=NOW)
        assert released == ["n" * 32]
        async with db.read() as conn:
            users = UserRepository(conn)
            assert await users.get("n" * 32) is None
            kept = await users.get("p" * 32)
            assert kept is not None and kept.email is None and kept.phone == "+14155550111"
            assert kept.verified_channels == [Channel.SMS]
            assert (await users.by_email("ada@example.com")).id == "w" * 32  # type: ignore[union-attr]
            assert (
                await CodeRepository(conn).current(user_id="n" * 32, purpose="verify-email") is None
            )
    finally:
        await db.close()


async def test_delete_never_verified_spares_verified_accounts_and_the_decoy(
    database_url: str,
) -> None:
    db = Database(database_url)
    try:
        await _user(db, user_id="n" * 32)
        await _user(db, user_id="v" * 32, email="grace@example.com")
        async with db.write() as conn:
            await UserRepository(conn).mark_verified("v" * 32, Channel.EMAIL, now=NOW)
        async with db.write() as conn:
            assert await UserRepository(conn).delete_never_verified(created_before=NOW) == []
            deleted = await UserRepository(conn).delete_never_verified(
                created_before=NOW + timedelta(seconds=1)
            )
        assert deleted == ["n" * 32]
        async with db.read() as conn:
            assert await UserRepository(conn).get("v" * 32) is not None
            assert await UserRepository(conn).get(DECOY_USER_ID) is not None
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


async def test_r06_replacing_a_used_code_leaves_one_row_as_fresh_as_a_new_one(
    database_url: str,
) -> None:
    """R6: replacing a code that was tried, consumed and whose grant was spent leaves one
    row with the new values and fresh state, column for column like a first insert."""
    db = Database(database_url)
    try:
        user_id = await _user(db)
        old, new = "1" * 32, "2" * 32
        async with db.write() as conn:
            codes = CodeRepository(conn)
            await codes.replace(
                code_id=old,
                user_id=user_id,
                purpose="reset",
                attempt_hash="a" * 64,
                code_mac=b"m" * 32,
                now=NOW,
                expires_at=NOW + timedelta(minutes=5),
            )
            await codes.add_failed_try(old)
            assert await codes.consume(old, max_tries=5, now=NOW + timedelta(seconds=1))
            assert await codes.use_grant(old, granted_after=NOW, now=NOW + timedelta(seconds=2))
        later = NOW + timedelta(minutes=1)
        fresh = {
            "code_id": new,
            "user_id": user_id,
            "attempt_hash": "b" * 64,
            "code_mac": b"n" * 32,
            "now": later,
            "expires_at": later + timedelta(minutes=5),
        }
        async with db.write() as conn:
            await CodeRepository(conn).replace(purpose="reset", **fresh)
        # The same values for another purpose: nothing to replace, a plain insert.
        async with db.write() as conn:
            await CodeRepository(conn).replace(
                purpose="verify-email", **{**fresh, "code_id": "3" * 32}
            )
        async with db.read() as conn:
            rows = {
                row.purpose: dict(row._mapping)
                for row in await conn.execute(
                    select(one_time_codes).where(one_time_codes.c.user_id == user_id)
                )
            }
        assert set(rows) == {"reset", "verify-email"}
        replaced, inserted = rows["reset"], rows["verify-email"]
        assert replaced["id"] == new
        assert replaced["attempt_hash"] == "b" * 64 and bytes(replaced["code_mac"]) == b"n" * 32
        assert replaced["created_at"] == later
        assert replaced["expires_at"] == later + timedelta(minutes=5)
        assert replaced["failed_tries"] == 0
        assert replaced["consumed_at"] is None and replaced["grant_used_at"] is None
        # Every column of the table, not only those listed above.
        assert set(replaced) == set(one_time_codes.c.keys())
        for row in (replaced, inserted):
            row.pop("purpose")
            row["code_mac"] = bytes(row["code_mac"])
        assert {**replaced, "id": None} == {**inserted, "id": None}
        # The old code is gone; the new one works (once).
        async with db.write() as conn:
            codes = CodeRepository(conn)
            assert not await codes.consume(old, max_tries=5, now=later)
            assert await codes.consume(new, max_tries=5, now=later)
    finally:
        await db.close()


async def test_r06_concurrent_replacements_all_succeed_and_leave_one_row(
    database_url: str,
) -> None:
    """R6 under concurrency: 30 transactions replacing the code of one (account, purpose)
    at once all commit (none trips the unique constraint), and one whole code remains."""
    db = Database(database_url)
    try:
        user_id = await _user(db)

        async def replace(i: int) -> str:
            async with db.write() as conn:
                await CodeRepository(conn).replace(
                    code_id=f"{i:032x}",
                    user_id=user_id,
                    purpose="reset",
                    attempt_hash=f"{i:064x}",
                    code_mac=bytes([i]) * 32,
                    now=NOW + timedelta(seconds=i),
                    expires_at=NOW + timedelta(minutes=5, seconds=i),
                )
            return f"{i:032x}"

        results = await asyncio.gather(*(replace(i) for i in range(30)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"{len(failures)} of 30 failed, e.g. {failures[0]!r}"
        async with db.read() as conn:
            rows = (
                await conn.execute(
                    select(one_time_codes).where(
                        (one_time_codes.c.user_id == user_id)
                        & (one_time_codes.c.purpose == "reset")
                    )
                )
            ).all()
        assert len(rows) == 1
        row = rows[0]._mapping
        # All columns come from the same writer, not a mix of two.
        i = int(row["id"], 16)
        assert row["attempt_hash"] == f"{i:064x}"
        assert bytes(row["code_mac"]) == bytes([i]) * 32
        assert row["created_at"] == NOW + timedelta(seconds=i)
        assert row["expires_at"] == NOW + timedelta(minutes=5, seconds=i)
        assert row["failed_tries"] == 0
        assert row["consumed_at"] is None and row["grant_used_at"] is None
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


async def test_a_rehash_replaces_only_the_hash_that_was_verified(database_url: str) -> None:
    """Sign-in upgrades an imported or weaker hash in one conditional UPDATE: a reset
    that landed between the check and the upgrade is not overwritten."""
    db = Database(database_url)
    try:
        user_id = await _user(db)
        async with db.write() as conn:
            users = UserRepository(conn)
            assert await users.replace_password_hash(
                user_id, verified="$argon2id$x", new="$argon2id$new", now=NOW
            )
            await users.set_password_hash(user_id, "$argon2id$from-a-reset", now=NOW)
            assert not await users.replace_password_hash(
                user_id, verified="$argon2id$new", new="$argon2id$stale", now=NOW
            )
            user = await users.get(user_id)
        assert user is not None and user.password_hash == "$argon2id$from-a-reset"
    finally:
        await db.close()
