"""One-time codes (SECURITY.md sections A and B: R1-R7, R9-R14).

The database tests run once on SQLite and once on PostgreSQL (the ``database_url``
fixture gives a migrated, empty database). Time is a :class:`FrozenClock`, moved by hand:
no test sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError
from sqlalchemy import select, text, update

import resetflow.crypto
from resetflow.accounts.models import Channel, User
from resetflow.accounts.passwords import PasswordHasher
from resetflow.clock import FrozenClock
from resetflow.config import ConfigError, load_settings
from resetflow.crypto import CODE_DIGITS, Keyring, new_code, new_token, sha256_hex
from resetflow.errors import InvalidCode
from resetflow.recovery.codes import RESET, IssuedCode, OneTimeCodes, verify_purpose
from resetflow.services import build_services
from resetflow.storage.database import Database
from resetflow.storage.tables import one_time_codes, users
from resetflow.storage.users import UserRepository
from resetflow.web.schemas import CodeSubmission

pytestmark = pytest.mark.anyio

SECRET = b"x" * 32
ADA = "a" * 32
BOB = "b" * 32
ATTEMPT = "attempt-one"
OTHER_ATTEMPT = "attempt-two"
SIX_DIGITS = re.compile(r"[0-9]{6}")


# Helpers ---------------------------------------------------------------------------------


@dataclass
class Env:
    db: Database
    clock: FrozenClock
    keyring: Keyring
    codes: OneTimeCodes

    async def issue(
        self, *, user_id: str = ADA, purpose: str = RESET, attempt_id: str = ATTEMPT
    ) -> IssuedCode:
        async with self.db.write() as conn:
            return await self.codes.issue(
                conn, user_id=user_id, purpose=purpose, attempt_id=attempt_id
            )

    async def accept(
        self,
        submitted: str,
        *,
        user_id: str | None = ADA,
        purpose: str = RESET,
        attempt_id: str | None = ATTEMPT,
    ) -> str:
        return await self.codes.accept(
            user_id=user_id, purpose=purpose, attempt_id=attempt_id, submitted=submitted
        )

    async def refused(self, submitted: str, **where: Any) -> None:
        with pytest.raises(InvalidCode):
            await self.accept(submitted, **where)

    async def failures(self, user_id: str = ADA) -> int:
        async with self.db.read() as conn:
            user = await UserRepository(conn).get(user_id)
        assert user is not None
        return user.code_failures

    async def user(self, user_id: str = ADA) -> User:
        async with self.db.read() as conn:
            user = await UserRepository(conn).get(user_id)
        assert user is not None
        return user

    async def set_failures(self, count: int, user_id: str = ADA) -> None:
        """As if the last of ``count`` failures happened just now."""
        async with self.db.write() as conn:
            await conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(code_failures=count, code_failure_at=self.clock.now())
            )

    async def rows(self) -> list[dict[str, Any]]:
        """Every row of ``one_time_codes``, read with plain SQL (no type conversion)."""
        async with self.db.read() as conn:
            result = await conn.execute(text("SELECT * FROM one_time_codes"))
            return [dict(row._mapping) for row in result]


@asynccontextmanager
async def code_env(database_url: str, **options: Any) -> AsyncIterator[Env]:
    """OneTimeCodes on the migrated database, with users Ada and Bob."""
    db = Database(database_url)
    clock = FrozenClock()
    keyring = Keyring(SECRET)
    try:
        for user_id, email, phone in (
            (ADA, "ada@example.com", "+14155550100"),
            (BOB, "bob@example.com", "+14155550101"),
        ):
            async with db.write() as conn:
                await UserRepository(conn).insert(
                    user_id=user_id,
                    name=email.split("@")[0].title(),
                    email=email,
                    phone=phone,
                    password_hash="$argon2id$unused",
                    preference=Channel.EMAIL,
                    locale="en",
                    now=clock.now(),
                )
        codes = OneTimeCodes(database=db, keyring=keyring, clock=clock, **options)
        yield Env(db=db, clock=clock, keyring=keyring, codes=codes)
    finally:
        await db.close()


def wrong(code: str) -> str:
    """Six digits that are certainly not ``code``."""
    return f"{(int(code) + 1) % 10**CODE_DIGITS:06d}"


@pytest.fixture
def force_codes(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[int]]:
    """Make ``secrets.randbelow`` return the given values in turn; returns its call log."""

    def force(*values: int) -> list[int]:
        queue = list(values)
        calls: list[int] = []

        def fake_randbelow(bound: int) -> int:
            calls.append(bound)
            return queue.pop(0)

        monkeypatch.setattr(resetflow.crypto.secrets, "randbelow", fake_randbelow)
        return calls

    return force


@pytest.fixture
def no_random_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every function of the ``random`` module's shared generator raises if called."""

    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the random module is not a CSPRNG (R1)")

    for name in (
        "random",
        "randint",
        "randrange",
        "choice",
        "choices",
        "sample",
        "shuffle",
        "getrandbits",
        "randbytes",
        "uniform",
    ):
        monkeypatch.setattr(random, name, forbidden)
    yield


# R1-R3: where codes and tokens come from -------------------------------------------------


def test_r01_new_code_comes_from_secrets(force_codes: Callable[..., list[int]]) -> None:
    """R1: the digits are whatever ``secrets.randbelow(10**6)`` says."""
    calls = force_codes(123456, 987654)
    assert new_code() == "123456"
    assert new_code() == "987654"
    assert calls == [10**6, 10**6]


async def test_r01_issued_codes_come_from_secrets(
    database_url: str, force_codes: Callable[..., list[int]]
) -> None:
    """R1: ``OneTimeCodes.issue`` hands out (and stores the MAC of) the CSPRNG's digits."""
    calls = force_codes(314159)
    async with code_env(database_url) as env:
        issued = await env.issue()
        assert issued.code == "314159"
        assert calls == [10**6]
        [row] = await env.rows()
        assert bytes(row["code_mac"]) == env.keyring.code_mac(
            user_id=ADA, purpose=RESET, code="314159"
        )


def test_r01_codes_do_not_use_the_random_module(no_random_module: None) -> None:
    """R1: ``random`` is never consulted, and seeding it does not make codes repeat."""
    assert "random" not in vars(resetflow.crypto)
    first = [new_code() for _ in range(8)]
    second = [new_code() for _ in range(8)]
    assert first != second  # equal with probability 10**-48
    assert all(SIX_DIGITS.fullmatch(code) for code in first + second)


def test_r01_seeding_random_does_not_make_codes_predictable() -> None:
    """R1: a code generator built on ``random`` would repeat after the same seed."""
    random.seed(1234)
    first = [new_code() for _ in range(8)]
    random.seed(1234)
    second = [new_code() for _ in range(8)]
    assert first != second


def test_r02_codes_are_zero_padded(force_codes: Callable[..., list[int]]) -> None:
    """R2: a small number still gives 6 digits, with leading zeros."""
    force_codes(42, 0, 999_999)
    assert new_code() == "000042"
    assert new_code() == "000000"
    assert new_code() == "999999"
    assert CODE_DIGITS == 6


async def test_r02_issued_code_is_zero_padded(
    database_url: str, force_codes: Callable[..., list[int]]
) -> None:
    """R2: through ``issue`` too; and the padded code is the one that is accepted."""
    force_codes(42)
    async with code_env(database_url) as env:
        issued = await env.issue()
        assert issued.code == "000042"
        await env.refused("42")
        assert await env.accept("000042") == issued.code_id


def test_r02_codes_are_always_six_ascii_digits() -> None:
    """R2: 2000 real codes, each exactly six ASCII digits; some need padding."""
    sample = [new_code() for _ in range(2000)]
    assert all(isinstance(code, str) for code in sample)
    assert all(SIX_DIGITS.fullmatch(code) and code.isascii() for code in sample)
    # About 10% of codes are below 100000; with none, padding would be untested.
    assert any(code.startswith("0") for code in sample)
    assert len(set(sample)) > 1900


def test_r03_link_tokens_have_at_least_128_bits_from_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R3: ``new_token`` is ``secrets.token_urlsafe`` of at least 16 bytes."""
    calls: list[int | None] = []
    real = secrets.token_urlsafe

    def spy(nbytes: int | None = None) -> str:
        calls.append(nbytes)
        return real(nbytes)

    monkeypatch.setattr(resetflow.crypto.secrets, "token_urlsafe", spy)
    token = new_token()
    assert len(calls) == 1
    assert (calls[0] or secrets.DEFAULT_ENTROPY) >= 16
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert len(raw) * 8 >= 128
    assert len(token) >= 22  # 128 bits in base64url


def test_r03_tokens_do_not_repeat(no_random_module: None) -> None:
    """R3: real tokens, without the ``random`` module, all distinct and ≥128 bits."""
    tokens = [new_token() for _ in range(500)]
    assert len(set(tokens)) == 500
    for token in tokens:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert len(raw) >= 16


# R4: lifetime ----------------------------------------------------------------------------


async def test_r04_code_works_until_just_before_its_ttl(database_url: str) -> None:
    """R4: accepted one second before the 300 s default runs out."""
    async with code_env(database_url) as env:
        start = env.clock.now()
        issued = await env.issue()
        assert issued.expires_at - start == timedelta(seconds=300)
        env.clock.advance(299)
        assert await env.accept(issued.code) == issued.code_id


@pytest.mark.parametrize("after", [300, 301, 3600])
async def test_r04_code_is_refused_at_and_after_its_ttl(database_url: str, after: int) -> None:
    """R4: at exactly ``ttl`` and later, the right code is refused."""
    async with code_env(database_url) as env:
        issued = await env.issue()
        env.clock.advance(after)
        await env.refused(issued.code)


async def test_r04_custom_ttl_is_honoured(database_url: str) -> None:
    """R4: a shorter configured lifetime is the one enforced."""
    async with code_env(database_url, ttl_seconds=60) as env:
        first = await env.issue()
        env.clock.advance(59)
        assert await env.accept(first.code) == first.code_id
        second = await env.issue()
        env.clock.advance(60)
        await env.refused(second.code)


def test_r04_default_ttl_is_300_and_at_most_600(tmp_path: Path) -> None:
    """R4: default 300 s; more than 10 minutes is refused by the class and by Settings."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    clock = FrozenClock()
    keyring = Keyring(SECRET)
    assert OneTimeCodes(database=db, keyring=keyring, clock=clock).ttl == timedelta(seconds=300)
    assert OneTimeCodes(database=db, keyring=keyring, clock=clock, ttl_seconds=600).ttl == (
        timedelta(seconds=600)
    )
    for too_long in (601, 3600):
        with pytest.raises(ValueError):
            OneTimeCodes(database=db, keyring=keyring, clock=clock, ttl_seconds=too_long)

    assert load_settings(_env_file=None, data_dir=tmp_path).code_ttl_seconds == 300
    assert load_settings(code_ttl_seconds=600, _env_file=None, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="RESETFLOW_CODE_TTL_SECONDS"):
        load_settings(code_ttl_seconds=601, _env_file=None, data_dir=tmp_path)


# R5: once, atomically --------------------------------------------------------------------


async def test_r05_twenty_concurrent_correct_submissions_one_wins(database_url: str) -> None:
    """R5: of 20 concurrent submissions of the right code, exactly one is accepted."""
    async with code_env(database_url) as env:
        issued = await env.issue()
        results = await asyncio.gather(
            *(env.accept(issued.code) for _ in range(20)), return_exceptions=True
        )
        winners = [r for r in results if isinstance(r, str)]
        losers = [r for r in results if isinstance(r, InvalidCode)]
        assert winners == [issued.code_id]
        assert len(losers) == 19, [r for r in results if not isinstance(r, str | InvalidCode)]
        [row] = await env.rows()
        assert row["consumed_at"] is not None


async def test_r05_code_succeeds_only_once(database_url: str) -> None:
    """R5: the second, sequential, use of an accepted code is refused."""
    async with code_env(database_url) as env:
        issued = await env.issue()
        assert await env.accept(issued.code) == issued.code_id
        await env.refused(issued.code)


# R6: bound to account, purpose and attempt -----------------------------------------------


async def test_r06_code_is_bound_to_its_attempt(database_url: str) -> None:
    """R6: the right digits from another (or no) attempt are refused."""
    async with code_env(database_url) as env:
        issued = await env.issue(attempt_id=ATTEMPT)
        await env.refused(issued.code, attempt_id=OTHER_ATTEMPT)
        await env.refused(issued.code, attempt_id=None)
        # The refusals were about the attempt: its own attempt may still use it.
        assert await env.accept(issued.code, attempt_id=ATTEMPT) == issued.code_id


async def test_r06_code_is_bound_to_its_purpose(database_url: str) -> None:
    """R6: a reset code does not verify a contact, and the other way round."""
    async with code_env(database_url) as env:
        issued = await env.issue(purpose=RESET)
        await env.refused(issued.code, purpose=verify_purpose("email"))
        verify = await env.issue(purpose=verify_purpose("sms"))
        await env.refused(verify.code, purpose=RESET)
        await env.refused(verify.code, purpose=verify_purpose("email"))
        assert await env.accept(issued.code, purpose=RESET) == issued.code_id
        assert await env.accept(verify.code, purpose=verify_purpose("sms")) == verify.code_id


async def test_r06_code_is_bound_to_its_account(
    database_url: str, force_codes: Callable[..., list[int]]
) -> None:
    """R6: Ada's digits, with the same attempt id, do not open Bob's account."""
    force_codes(111111, 222222)
    async with code_env(database_url) as env:
        ada = await env.issue(user_id=ADA)
        await env.refused(ada.code, user_id=BOB)  # Bob has no code at all
        bob = await env.issue(user_id=BOB)
        assert (ada.code, bob.code) == ("111111", "222222")
        await env.refused(ada.code, user_id=BOB)
        assert await env.accept(bob.code, user_id=BOB) == bob.code_id
        assert await env.accept(ada.code, user_id=ADA) == ada.code_id


async def test_r06_stored_mac_is_bound_to_account_and_purpose(
    database_url: str, force_codes: Callable[..., list[int]]
) -> None:
    """R6/R7: a stored MAC moved to another account or purpose does not match there."""
    force_codes(111111, 222222)
    async with code_env(database_url) as env:
        ada = await env.issue(user_id=ADA)
        await env.issue(user_id=BOB)
        async with env.db.write() as conn:
            ada_mac = (
                await conn.execute(
                    select(one_time_codes.c.code_mac).where(one_time_codes.c.user_id == ADA)
                )
            ).scalar_one()
            # Give Bob's row Ada's MAC, and move Ada's row to another purpose.
            await conn.execute(
                update(one_time_codes)
                .where(one_time_codes.c.user_id == BOB)
                .values(code_mac=ada_mac)
            )
            await conn.execute(
                update(one_time_codes)
                .where(one_time_codes.c.user_id == ADA)
                .values(purpose=verify_purpose("email"))
            )
        await env.refused(ada.code, user_id=BOB)
        await env.refused(ada.code, user_id=ADA, purpose=verify_purpose("email"))


async def test_r06_new_code_voids_the_older_one(
    database_url: str, force_codes: Callable[..., list[int]]
) -> None:
    """R6: after a new code is issued, the old one is refused and only one row is left."""
    force_codes(111111, 222222)
    async with code_env(database_url) as env:
        old = await env.issue()
        new = await env.issue()
        assert len(await env.rows()) == 1
        await env.refused(old.code)
        assert await env.accept(new.code) == new.code_id


async def test_r06_new_code_in_another_attempt_voids_the_older_one(
    database_url: str, force_codes: Callable[..., list[int]]
) -> None:
    """R6: a code asked for in a second browser voids the first browser's code."""
    force_codes(111111, 222222)
    async with code_env(database_url) as env:
        old = await env.issue(attempt_id=ATTEMPT)
        new = await env.issue(attempt_id=OTHER_ATTEMPT)
        await env.refused(old.code, attempt_id=ATTEMPT)
        await env.refused(new.code, attempt_id=ATTEMPT)
        assert await env.accept(new.code, attempt_id=OTHER_ATTEMPT) == new.code_id


# R7: only a keyed MAC is stored ----------------------------------------------------------


def _contains(value: Any, code: str) -> bool:
    """Whether a column value holds ``code`` as text, as bytes or as a number."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        number = int(code)
        return any(
            needle in data
            for needle in (
                code.encode(),
                code.encode("utf-16-le"),
                number.to_bytes(4, "big"),
                number.to_bytes(4, "little"),
            )
        )
    if isinstance(value, int):
        return value == int(code)
    return code in str(value)


async def test_r07_only_a_keyed_mac_is_stored(
    database_url: str, force_codes: Callable[..., list[int]]
) -> None:
    """R7: the row holds a 32-byte HMAC-SHA256 under the derived key, never the digits."""
    force_codes(493817)
    async with code_env(database_url) as env:
        issued = await env.issue()
        [row] = await env.rows()
    code = issued.code
    assert code == "493817"
    # These two are random or derived from the attempt id, not from the code; check that.
    assert row["id"] == issued.code_id
    assert row["attempt_hash"] == sha256_hex(ATTEMPT)
    for column, value in row.items():
        if column not in {"id", "attempt_hash"}:
            assert not _contains(value, code), column

    mac = bytes(row["code_mac"])
    assert len(mac) == 32
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"resetflow code hmac v1"
    ).derive(SECRET)
    expected = hmac.new(key, f"{ADA}\x1f{RESET}\x1f{code}".encode(), hashlib.sha256).digest()
    assert mac == expected
    # Keyed: not a plain hash, and another secret gives another MAC.
    assert mac != hashlib.sha256(code.encode()).digest()
    assert mac != Keyring(b"y" * 32).code_mac(user_id=ADA, purpose=RESET, code=code)
    assert mac == Keyring(SECRET).code_mac(user_id=ADA, purpose=RESET, code=code)


async def test_r07_a_keyring_with_another_secret_cannot_accept(database_url: str) -> None:
    """R7: the stored MAC is useless without the secret it was made with."""
    async with code_env(database_url) as env:
        issued = await env.issue()
        stranger = OneTimeCodes(database=env.db, keyring=Keyring(b"y" * 32), clock=env.clock)
        with pytest.raises(InvalidCode):
            await stranger.accept(
                user_id=ADA, purpose=RESET, attempt_id=ATTEMPT, submitted=issued.code
            )


# R9-R13: attempt limits ------------------------------------------------------------------


async def test_r09_the_pause_lifts_after_a_delay_that_doubles(database_url: str) -> None:
    """R9: the pause is an escalating delay, not a lock-out that needs an operator."""
    async with code_env(database_url, account_max_failures=3, pause_seconds=60) as env:
        issued = await env.issue()
        for _ in range(3):
            await env.refused(wrong(issued.code))
        issued = await env.issue()
        assert env.codes.paused_until(await env.user(), now=env.clock.now()) is not None
        env.clock.advance(59)
        await env.refused(issued.code)  # still paused: even the right code is refused
        assert await env.failures() == 3  # refusals during a pause do not count

        env.clock.advance(2)  # 61 s after the last failure: one more try is allowed
        await env.refused(wrong(issued.code))
        assert await env.failures() == 4
        env.clock.advance(119)
        await env.refused(issued.code)  # the second pause is twice as long (120 s)
        env.clock.advance(2)
        assert await env.accept(issued.code) == issued.code_id
        assert await env.failures() == 0  # R13: success clears the count


async def test_r09_the_pause_is_capped(database_url: str) -> None:
    async with code_env(
        database_url, account_max_failures=1, pause_seconds=60, max_pause_seconds=3600
    ) as env:
        await env.set_failures(50)
        until = env.codes.paused_until(await env.user(), now=env.clock.now())
        assert until == env.clock.now() + timedelta(seconds=3600)


async def test_r05_right_and_wrong_codes_at_once_never_deadlock(database_url: str) -> None:
    """Concurrent right and wrong guesses lock the account row first, then the code: every
    call ends in success or InvalidCode, never a database error (and so never a 500)."""
    async with code_env(database_url) as env:
        for _ in range(5):
            issued = await env.issue()
            guesses = [issued.code if i % 2 else wrong(issued.code) for i in range(20)]
            results = await asyncio.gather(
                *(env.accept(guess) for guess in guesses), return_exceptions=True
            )
            winners = [r for r in results if r == issued.code_id]
            refused = [r for r in results if isinstance(r, InvalidCode)]
            assert len(winners) <= 1
            assert len(winners) + len(refused) == 20, [type(r) for r in results]


async def test_r09_recovery_pauses_at_the_failure_limit(database_url: str) -> None:
    """R9: failures across codes and attempts count against the account, and at
    ``account_max_failures`` even the right code is refused (for a while: see below)."""
    async with code_env(database_url, account_max_failures=3) as env:
        first = await env.issue(attempt_id=ATTEMPT)
        await env.refused(wrong(first.code))
        await env.refused(wrong(first.code))
        second = await env.issue(attempt_id=OTHER_ATTEMPT)
        await env.refused(wrong(second.code), attempt_id=OTHER_ATTEMPT)
        assert await env.failures() == 3
        third = await env.issue(attempt_id=ATTEMPT)
        await env.refused(third.code)
        assert await env.failures() == 3  # refused while paused, not counted
        # Another account is not affected.
        bob = await env.issue(user_id=BOB)
        assert await env.accept(bob.code, user_id=BOB) == bob.code_id


async def test_r09_default_limit_is_100_failures(database_url: str, tmp_path: Path) -> None:
    """R9: by default the 100th failure pauses recovery; 99 do not."""
    async with code_env(database_url) as env:
        await env.set_failures(99)
        issued = await env.issue()
        assert await env.accept(issued.code) == issued.code_id
        await env.set_failures(100)
        issued = await env.issue()
        await env.refused(issued.code)
    assert load_settings(_env_file=None, data_dir=tmp_path).account_max_failures == 100
    with pytest.raises(ConfigError, match="RESETFLOW_ACCOUNT_MAX_FAILURES"):
        load_settings(account_max_failures=101, _env_file=None, data_dir=tmp_path)


async def test_r09_failure_limit_never_locks_password_sign_in(
    database_url: str, tmp_path: Path
) -> None:
    """R9: an account whose recovery is paused still signs in with its password."""
    password = "amber lantern over quiet harbour"
    settings = load_settings(database_url=database_url, data_dir=tmp_path, _env_file=None)
    services = build_services(settings)
    try:
        password_hash = await PasswordHasher().hash(password)
        async with services.database.write() as conn:
            await UserRepository(conn).insert(
                user_id=ADA,
                name="Ada",
                email="ada@example.com",
                phone=None,
                password_hash=password_hash,
                preference=Channel.EMAIL,
                locale="en",
                now=services.clock.now(),
            )
            await conn.execute(update(users).values(code_failures=settings.account_max_failures))
        user = await services.accounts.authenticate(
            email="ada@example.com", phone=None, password=password
        )
        assert user.id == ADA
    finally:
        await services.close()


async def test_r10_issuing_a_new_code_does_not_reset_the_failure_count(
    database_url: str,
) -> None:
    """R10: wrong tries survive a new code (a resend) and add up across codes."""
    async with code_env(database_url) as env:
        first = await env.issue()
        await env.refused(wrong(first.code))
        await env.refused(wrong(first.code))
        assert await env.failures() == 2
        second = await env.issue()
        assert await env.failures() == 2
        await env.refused(wrong(second.code))
        assert await env.failures() == 3
        await env.issue()
        assert await env.failures() == 3


async def test_r12_failure_count_is_per_account_whatever_the_attempt(database_url: str) -> None:
    """R12: the count belongs to the account. The service sees no IP at all; failures
    from two different attempts (two browsers) land on the same counter."""
    async with code_env(database_url) as env:
        issued = await env.issue(attempt_id=ATTEMPT)
        await env.refused(wrong(issued.code), attempt_id=ATTEMPT)
        assert await env.failures() == 1
        # A second browser, no code of its own: still counts against Ada.
        await env.refused(wrong(issued.code), attempt_id=OTHER_ATTEMPT)
        await env.refused(issued.code, attempt_id=OTHER_ATTEMPT)
        assert await env.failures() == 3
        other = await env.issue(attempt_id=OTHER_ATTEMPT)
        await env.refused(wrong(other.code), attempt_id=OTHER_ATTEMPT)
        assert await env.failures() == 4
        assert await env.failures(BOB) == 0


async def test_r12_failures_count_even_without_a_live_code(database_url: str) -> None:
    """R12: guessing at an account with no code still counts against that account."""
    async with code_env(database_url) as env:
        await env.refused("123456")
        await env.refused("123456", attempt_id=OTHER_ATTEMPT)
        assert await env.failures() == 2


async def test_r13_success_clears_the_failure_count(database_url: str) -> None:
    """R13: an accepted code sets the account's count back to zero."""
    async with code_env(database_url) as env:
        first = await env.issue()
        await env.refused(wrong(first.code))
        second = await env.issue(attempt_id=OTHER_ATTEMPT)
        await env.refused(wrong(second.code), attempt_id=OTHER_ATTEMPT)
        await env.refused(wrong(second.code), attempt_id=OTHER_ATTEMPT)
        assert await env.failures() == 3
        assert await env.accept(second.code, attempt_id=OTHER_ATTEMPT) == second.code_id
        assert await env.failures() == 0


async def test_r11_code_is_burned_after_five_wrong_tries(database_url: str) -> None:
    """R11: after 5 wrong tries the right code is refused too."""
    async with code_env(database_url) as env:
        issued = await env.issue()
        for _ in range(5):
            await env.refused(wrong(issued.code))
        await env.refused(issued.code)
        # A new code works again (the account is far from its limit).
        fresh = await env.issue()
        assert await env.accept(fresh.code) == fresh.code_id


async def test_r11_four_wrong_tries_leave_the_code_usable(database_url: str) -> None:
    """R11: the 5-try budget is not smaller than stated: after 4 misses the code works."""
    async with code_env(database_url) as env:
        issued = await env.issue()
        for _ in range(4):
            await env.refused(wrong(issued.code))
        assert await env.accept(issued.code) == issued.code_id


def test_r11_max_tries_cannot_be_raised_above_five(tmp_path: Path) -> None:
    """R11: Settings refuse a looser burn limit."""
    assert load_settings(_env_file=None, data_dir=tmp_path).code_max_tries == 5
    with pytest.raises(ConfigError, match="RESETFLOW_CODE_MAX_TRIES"):
        load_settings(code_max_tries=6, _env_file=None, data_dir=tmp_path)


# R14: constant-time comparison of well-typed values --------------------------------------


async def test_r14_codes_are_compared_with_compare_digest(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R14: every accept compares two equal-length byte strings with compare_digest."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(resetflow.crypto.hmac, "compare_digest", spy)

    def mac_comparisons() -> list[tuple[Any, Any]]:
        # Every comparison made during accept is between two values of one type.
        assert all(type(a) is type(b) for a, b in calls), calls
        found = [(a, b) for a, b in calls if isinstance(a, bytes) and isinstance(b, bytes)]
        calls.clear()
        return found

    async with code_env(database_url) as env:
        issued = await env.issue()
        for submitted, user_id in ((wrong(issued.code), ADA), ("123456", None)):
            await env.refused(submitted, user_id=user_id)
            pairs = mac_comparisons()
            assert len(pairs) == 1
            assert all(len(a) == len(b) == 32 for a, b in pairs)
        assert await env.accept(issued.code) == issued.code_id
        pairs = mac_comparisons()
        assert len(pairs) == 1
        [(stored, computed)] = pairs
        assert stored == computed and len(stored) == 32


@pytest.mark.parametrize(
    "token",
    [
        123456,
        123456.0,
        True,
        None,
        ["123456"],
        b"123456",
        "12345",
        "1234567",
        "12a456",
        "١٢٣٤٥٦",
        "１２３４５６",
        "123456\n",
        " 123456",
        "+12345",
        "",
    ],
)
def test_r14_code_submission_refuses_anything_but_six_ascii_digits(token: Any) -> None:
    """R14/R46: the web schema only lets a string of six ASCII digits through."""
    with pytest.raises(ValidationError):
        CodeSubmission.model_validate({"token": token})


def test_r14_code_submission_accepts_six_digits_as_a_string() -> None:
    """R14: the valid shape passes unchanged (so the refusals above are about the type)."""
    assert CodeSubmission.model_validate({"token": "000042"}).token == "000042"
    with pytest.raises(ValidationError):
        CodeSubmission.model_validate({"token": "000042", "extra": 1})
