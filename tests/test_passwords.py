"""Passwords and contacts (SECURITY.md sections G and J: R33-R38, R47)."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import argon2
import pytest
from argon2 import Type, extract_parameters

from resetflow.accounts.contacts import ContactError, normalise_email, normalise_phone
from resetflow.accounts.models import Channel
from resetflow.accounts.passwords import PasswordHasher, PasswordPolicy, common_passwords
from resetflow.accounts.service import NewAccount
from resetflow.config import ConfigError, load_settings
from resetflow.errors import InvalidCredentials, PasswordRejected
from resetflow.services import Services, build_services
from resetflow.storage.migrate import upgrade
from resetflow.storage.users import UserRepository

pytestmark = pytest.mark.anyio

WORDS = "amber lantern drifts over quiet harbour stones while gulls argue about bread "


def passphrase(length: int) -> str:
    """A non-common, non-personal passphrase of exactly ``length`` characters."""
    return (WORDS * (length // len(WORDS) + 1))[:length]


async def rejection(policy: PasswordPolicy, password: str, **kwargs: Any) -> PasswordRejected:
    with pytest.raises(PasswordRejected) as caught:
        await policy.check(password, **kwargs)
    error = caught.value
    # The reason is given, on the password field (R36 "with the reason given").
    assert error.fields.get("password")
    assert error.message == error.fields["password"]
    return error


def parameters(encoded: str) -> tuple[Type, int, int, int, bytes]:
    """(type, memory KiB, time cost, parallelism, salt) of an encoded Argon2 hash."""
    params = extract_parameters(encoded)
    _, variant, version, costs, salt, digest = encoded.split("$")
    assert variant == "argon2id" and version == "v=19" and digest
    assert costs == f"m={params.memory_cost},t={params.time_cost},p={params.parallelism}"
    raw_salt = base64.b64decode(salt + "=" * (-len(salt) % 4))
    return params.type, params.memory_cost, params.time_cost, params.parallelism, raw_salt


@asynccontextmanager
async def services_on_sqlite(tmp_path: Path, **overrides: Any) -> AsyncIterator[Services]:
    settings = load_settings(data_dir=tmp_path, _env_file=None, **overrides)
    # Alembic's env runs its own event loop, so migrate from a worker thread.
    await asyncio.to_thread(upgrade, settings.resolved_database_url)
    services = build_services(settings)
    try:
        yield services
    finally:
        await services.close()


async def insert_user(
    services: Services, *, password_hash: str, email: str = "ada@example.com"
) -> str:
    user_id = "a" * 32
    async with services.database.write() as conn:
        await UserRepository(conn).insert(
            user_id=user_id,
            name="Ada Lovelace",
            email=email,
            phone="+14155550100",
            password_hash=password_hash,
            preference=Channel.EMAIL,
            locale="en",
            now=services.clock.now(),
        )
    return user_id


async def stored_hash(services: Services, user_id: str) -> str:
    async with services.database.read() as conn:
        user = await UserRepository(conn).get(user_id)
    assert user is not None
    return user.password_hash


# R33: minimum length ---------------------------------------------------------------------


async def test_r33_default_minimum_is_15() -> None:
    """R33: 14 characters are refused with a reason naming 15; 15 are accepted."""
    policy = PasswordPolicy()
    assert policy.min_length == 15
    error = await rejection(policy, "violet tractor")  # 14
    assert "15" in error.fields["password"]
    await policy.check("violet tractorz")  # 15, all lower case: no composition rules
    await policy.check(passphrase(15))


async def test_r33_minimum_is_configurable_down_to_8_not_below() -> None:
    """R33: 8 may be configured; 7 may not."""
    policy = PasswordPolicy(min_length=8)
    # 8 characters pass the length rule; under 10 no password reaches 10^10 guesses, so
    # the strength estimate (R56) refuses it, with its own hint and not the length's.
    short = await rejection(policy, "zq8plumk")
    assert "Use at least" not in short.fields["password"]
    await policy.check("zq8plumkite")
    error = await rejection(policy, "zq8plum")
    assert "8" in error.fields["password"]
    with pytest.raises(ValueError):
        PasswordPolicy(min_length=7)


def test_r33_settings_refuse_a_minimum_below_8(tmp_path: Path) -> None:
    """R33: RESETFLOW_PASSWORD_MIN_LENGTH=7 is a configuration error naming the variable."""
    assert load_settings(_env_file=None, data_dir=tmp_path).password_min_length == 15
    assert load_settings(password_min_length=8, _env_file=None, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="RESETFLOW_PASSWORD_MIN_LENGTH"):
        load_settings(password_min_length=7, _env_file=None, data_dir=tmp_path)


async def test_r33_configured_minimum_reaches_sign_up(tmp_path: Path) -> None:
    """R33: the services built from Settings apply the configured minimum."""
    account = NewAccount(
        name="Ada",
        email="ada@example.com",
        phone="+14155550100",
        password="zq8plumkite",  # 11 characters
        preference=Channel.EMAIL,
    )
    async with services_on_sqlite(tmp_path / "default") as services:
        with pytest.raises(PasswordRejected):
            await services.accounts.sign_up(account, attempt_id="a", verify=False)
    async with services_on_sqlite(tmp_path / "eight", password_min_length=8) as services:
        assert await services.accounts.sign_up(account, attempt_id="a", verify=False)


# R34: long passwords, never truncated ----------------------------------------------------


async def test_r34_64_and_256_characters_accepted_257_refused() -> None:
    """R34: the documented upper bound is 256."""
    policy = PasswordPolicy()
    await policy.check(passphrase(64))
    await policy.check(passphrase(256))
    error = await rejection(policy, passphrase(257))
    assert "256" in error.fields["password"]


async def test_r34_passwords_are_not_truncated() -> None:
    """R34: two 100-character passwords differing only in the last character differ."""
    hasher = PasswordHasher()
    first, second = passphrase(99) + "a", passphrase(99) + "b"
    encoded = await hasher.hash(first)
    assert await hasher.verify(encoded, first)
    assert not await hasher.verify(encoded, second)
    longest = passphrase(255) + "x"
    encoded = await hasher.hash(longest)
    assert await hasher.verify(encoded, longest)
    assert not await hasher.verify(encoded, longest[:-1] + "y")


# R35: Unicode, NFKC ----------------------------------------------------------------------


async def test_r35_passwords_are_nfkc_normalised_before_hashing() -> None:
    """R35: the ligature "ﬁ" and "fi" are the same password, and the stored hash is of
    the normalised form."""
    hasher = PasswordHasher()
    ligature, plain = "ﬁnally a long passphrase here", "finally a long passphrase here"
    assert ligature != plain
    encoded = await hasher.hash(ligature)
    assert await hasher.verify(encoded, plain)
    assert await hasher.verify(encoded, ligature)
    # Checked with plain Argon2, no normalisation on this side: the hash is of NFKC.
    assert argon2.PasswordHasher().verify(encoded, plain)
    assert await hasher.verify(await hasher.hash(plain), ligature)


async def test_r35_full_width_digits_and_composed_accents_are_normalised() -> None:
    """R35: full-width digits are ASCII digits; "é" composed or decomposed is one letter."""
    hasher = PasswordHasher()
    encoded = await hasher.hash("passphrase number １２３４５")
    assert await hasher.verify(encoded, "passphrase number 12345")
    encoded = await hasher.hash("cafe\u0301 au lait tous les matins")
    assert await hasher.verify(encoded, "caf\u00e9 au lait tous les matins")


async def test_r35_non_ascii_passwords_are_accepted_and_round_trip() -> None:
    """R35: Cyrillic (and other scripts) pass the policy and verify; others do not."""
    password = "пароль для входа в систему"
    await PasswordPolicy().check(password)
    await PasswordPolicy().check("日本語のとても長いパスワードです")
    hasher = PasswordHasher()
    encoded = await hasher.hash(password)
    assert await hasher.verify(encoded, password)
    assert not await hasher.verify(encoded, "пароль для входа в системы")


# R36: blocklist and personal data --------------------------------------------------------


def test_r36_blocklist_has_thousands_of_entries_from_zxcvbn() -> None:
    """R36: the offline list is zxcvbn's password frequency list (30,000 entries)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    blocklist = common_passwords()
    assert len(blocklist) >= 10_000
    assert blocklist == frozenset(word.casefold() for word in FREQUENCY_LISTS["passwords"])
    assert {"password", "123456", "qwerty", "password1"} <= blocklist


async def test_r36_long_common_password_is_refused_with_a_reason() -> None:
    """R36: a 15+ character entry of the list passes the length rule but is refused."""
    long_common = sorted(p for p in common_passwords() if len(p) >= 15)
    assert long_common
    for password in long_common[:5]:
        error = await rejection(PasswordPolicy(), password)
        assert "common" in error.fields["password"]


@pytest.mark.parametrize("password", ["password1", "PASSWORD1", "Password1", "iloveyou"])
async def test_r36_common_passwords_are_refused_case_insensitively(password: str) -> None:
    """R36: with the minimum lowered to 8, the list still refuses common passwords."""
    error = await rejection(PasswordPolicy(min_length=8), password)
    assert "common" in error.fields["password"]


PERSONAL = ("Ada Lovelace", "Ada.Lovelace@Example.com", "+14155550100")


@pytest.mark.parametrize(
    "password",
    [
        "Ada Lovelace",
        "ada lovelace",
        "ADALOVELACE",
        "ada.lovelace@example.com",
        "ADA.LOVELACE@EXAMPLE.COM",
        "Ada.Lovelace",
        "+14155550100",
        "14155550100",
    ],
)
async def test_r36_own_name_email_and_phone_are_refused(password: str) -> None:
    """R36: the user's name, email (and its local part) and phone, in any case."""
    error = await rejection(PasswordPolicy(min_length=8), password, personal=PERSONAL)
    reason = error.fields["password"]
    assert "name" in reason and "email" in reason and "phone" in reason


async def test_r36_personal_data_refused_at_the_default_length() -> None:
    """R36: a long name used as a password is refused by the default policy as well."""
    personal = ("Augusta Ada King-Noel", "countess.of.lovelace@example.com", None)
    await rejection(PasswordPolicy(), "augusta ada king-noel", personal=personal)
    await rejection(PasswordPolicy(), "COUNTESS.OF.LOVELACE", personal=personal)
    await PasswordPolicy().check("augusta ada king-noel", personal=())


async def test_r36_unrelated_passwords_pass_the_personal_check() -> None:
    """R36: the personal check refuses the user's data, not everything."""
    await PasswordPolicy(min_length=8).check("zq8plumkite", personal=PERSONAL)
    await PasswordPolicy().check(passphrase(20), personal=PERSONAL)


# R37: Argon2id, salt, parameters, rehash, off the loop -----------------------------------


async def test_r37_hashes_are_argon2id_with_owasp_parameters() -> None:
    """R37: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>."""
    encoded = await PasswordHasher().hash(passphrase(20))
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    variant, memory, time_cost, parallelism, salt = parameters(encoded)
    assert variant is Type.ID
    assert memory >= 19 * 1024 and (memory, time_cost, parallelism) == (19456, 2, 1)
    assert len(salt) >= 16


async def test_r37_every_hash_has_its_own_salt() -> None:
    """R37: the same password twice gives two different hashes, each of which verifies."""
    hasher = PasswordHasher()
    password = passphrase(20)
    first, second = await hasher.hash(password), await hasher.hash(password)
    assert first != second
    assert parameters(first)[4] != parameters(second)[4]
    assert await hasher.verify(first, password)
    assert await hasher.verify(second, password)


async def test_r37_hashing_and_verifying_run_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R37: Argon2 work happens in a worker thread, never on the loop's thread."""
    hasher = PasswordHasher()
    threads: dict[str, list[threading.Thread]] = {"hash": [], "verify": []}
    real_hash, real_verify = argon2.PasswordHasher.hash, argon2.PasswordHasher.verify

    def spy_hash(self: Any, *args: Any, **kwargs: Any) -> Any:
        threads["hash"].append(threading.current_thread())
        return real_hash(self, *args, **kwargs)

    def spy_verify(self: Any, *args: Any, **kwargs: Any) -> Any:
        threads["verify"].append(threading.current_thread())
        return real_verify(self, *args, **kwargs)

    monkeypatch.setattr(argon2.PasswordHasher, "hash", spy_hash)
    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy_verify)
    loop_thread = threading.current_thread()
    encoded = await hasher.hash(passphrase(20))
    assert await hasher.verify(encoded, passphrase(20))
    assert not await hasher.verify(None, passphrase(20))
    assert len(threads["hash"]) == 1
    assert len(threads["verify"]) == 2
    for thread in threads["hash"] + threads["verify"]:
        assert thread is not loop_thread


async def test_r37_weaker_hash_is_replaced_on_sign_in(tmp_path: Path) -> None:
    """R37: a hash made with older, weaker parameters is upgraded at the next sign-in,
    and only on a successful one."""
    password = "amber lantern over quiet harbour"
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(password)
    assert parameters(weak)[1:4] == (8192, 1, 1)
    async with services_on_sqlite(tmp_path) as services:
        user_id = await insert_user(services, password_hash=weak)
        with pytest.raises(InvalidCredentials):
            await services.accounts.authenticate(
                email="ada@example.com", phone=None, password="not the password at all"
            )
        assert await stored_hash(services, user_id) == weak
        user = await services.accounts.authenticate(
            email="ada@example.com", phone=None, password=password
        )
        assert user.id == user_id
        upgraded = await stored_hash(services, user_id)
    assert upgraded != weak
    assert parameters(upgraded)[:4] == (Type.ID, 19456, 2, 1)
    assert argon2.PasswordHasher().verify(upgraded, password)


async def test_r37_current_hash_is_left_alone_on_sign_in(tmp_path: Path) -> None:
    """R37: rehashing is for weaker hashes only; a current one is not rewritten."""
    password = "amber lantern over quiet harbour"
    async with services_on_sqlite(tmp_path) as services:
        current = await PasswordHasher().hash(password)
        user_id = await insert_user(services, password_hash=current)
        await services.accounts.authenticate(email="ada@example.com", phone=None, password=password)
        assert await stored_hash(services, user_id) == current


async def test_r37_stronger_hash_is_kept_on_sign_in(tmp_path: Path) -> None:
    """R37: rehash only when parameters *rise*; a stronger hash is never weakened."""
    password = "amber lantern over quiet harbour"
    strong = argon2.PasswordHasher(time_cost=3, memory_cost=65536, parallelism=2).hash(password)
    async with services_on_sqlite(tmp_path) as services:
        user_id = await insert_user(services, password_hash=strong)
        await services.accounts.authenticate(email="ada@example.com", phone=None, password=password)
        assert await stored_hash(services, user_id) == strong


# R38: dummy hash for unknown users -------------------------------------------------------


@pytest.fixture
def argon2_verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The encoded hashes argon2's verify is asked to check, in order."""
    calls: list[str] = []
    real = argon2.PasswordHasher.verify

    def spy(self: Any, encoded: Any, password: Any) -> Any:
        calls.append(encoded)
        return real(self, encoded, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    return calls


async def test_r38_unknown_user_costs_one_dummy_hash_check(argon2_verify_calls: list[str]) -> None:
    """R38: ``verify(None, ...)`` runs one real Argon2id check at today's cost, then says
    False, even for the dummy's own password."""
    hasher = PasswordHasher()
    assert await hasher.verify(None, "x") is False
    assert len(argon2_verify_calls) == 1
    assert parameters(argon2_verify_calls[0])[:4] == (Type.ID, 19456, 2, 1)
    assert await hasher.verify(None, "resetflow dummy password, never valid") is False
    assert len(argon2_verify_calls) == 2


async def test_r38_sign_in_checks_a_hash_for_unknown_accounts(
    tmp_path: Path, argon2_verify_calls: list[str]
) -> None:
    """R38: sign-in with an unknown email costs one hash check, as a wrong password does."""
    async with services_on_sqlite(tmp_path) as services:
        await insert_user(services, password_hash=await PasswordHasher().hash(passphrase(20)))
        for email in ("nobody@example.com", "ada@example.com"):
            argon2_verify_calls.clear()
            with pytest.raises(InvalidCredentials):
                await services.accounts.authenticate(
                    email=email, phone=None, password="not the password at all"
                )
            assert len(argon2_verify_calls) == 1, email


# R47: contacts ---------------------------------------------------------------------------


def test_r47_emails_are_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Ada@Example.COM ") == "ada@example.com"
    assert normalise_email("ada@example.com") == "ada@example.com"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "not-an-email",
        "ada@",
        "@example.com",
        "ada@@example.com",
        "ada@example",
        "ada lovelace@example.com",
        "a" * 250 + "@example.com",
    ],
)
def test_r47_invalid_emails_are_refused(raw: str) -> None:
    with pytest.raises(ContactError):
        normalise_email(raw)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+1 (415) 555-0100", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
        ("  +14155550100 ", "+14155550100"),
    ],
)
def test_r47_phones_are_stored_as_e164(raw: str, e164: str) -> None:
    assert normalise_phone(raw) == e164


@pytest.mark.parametrize("raw", ["", "hello", "+1 555", "+999 1234567", "+1 415 555 01000"])
def test_r47_invalid_phones_are_refused(raw: str) -> None:
    with pytest.raises(ContactError):
        normalise_phone(raw)


def test_r47_phone_without_country_needs_a_default_region() -> None:
    with pytest.raises(ContactError):
        normalise_phone("415 555 0100")
    assert normalise_phone("415 555 0100", default_region="US") == "+14155550100"
