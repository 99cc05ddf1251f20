"""Password hashing (Argon2id) and the password policy.

Hashing runs in a worker thread: one Argon2id hash at m=19 MiB takes tens of
milliseconds of CPU, which would stall every other request on the event loop (R37).
"""

from __future__ import annotations

import asyncio
import unicodedata
from functools import cache

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from resetflow.accounts.legacy_hashes import is_foreign, verify_foreign
from resetflow.accounts.strength import StrengthEstimator
from resetflow.errors import PasswordRejected

# OWASP's minimum for Argon2id: m=19 MiB, t=2, p=1 (R37).
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1


def normalise_password(password: str) -> str:
    """NFKC, so that the same password typed on two keyboards hashes the same (R35)."""
    return unicodedata.normalize("NFKC", password)


class PasswordHasher:
    """Argon2id with a per-password salt; parameters are stored inside each hash."""

    def __init__(
        self,
        *,
        memory_kib: int = ARGON2_MEMORY_KIB,
        time_cost: int = ARGON2_TIME_COST,
        parallelism: int = ARGON2_PARALLELISM,
    ) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        # Verified against for unknown accounts, so both paths cost one hash (R38).
        self._dummy_hash = self._argon2.hash("resetflow dummy password, never valid")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._argon2.hash, normalise_password(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; with ``None`` checks a dummy hash and says False."""
        target = password_hash if password_hash is not None else self._dummy_hash
        if is_foreign(target):
            # An imported bcrypt/PBKDF2/scrypt/wrapped-SHA3 hash: needs_rehash is true for
            # it, so a successful sign-in replaces it with today's Argon2id.
            return await asyncio.to_thread(verify_foreign, target, password)
        matched = await asyncio.to_thread(self._verify, target, normalise_password(password))
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash is weaker than today's parameters (R37).

        Not argon2's ``check_needs_rehash``, which is true for *any* difference and so
        would also replace a stronger hash (made with higher settings) by a weaker one.
        """
        try:
            found = extract_parameters(password_hash)
        except InvalidHashError:
            return True
        wanted = self._argon2
        return (
            found.type is not Type.ID
            or found.memory_cost < wanted.memory_cost
            or found.time_cost < wanted.time_cost
            or found.hash_len < wanted.hash_len
            or found.salt_len < wanted.salt_len
        )

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


@cache
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords, from zxcvbn's maintained frequency lists (R36)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.casefold() for word in FREQUENCY_LISTS["passwords"])


class PasswordPolicy:
    """Length bounds, a blocklist and a strength estimate; no composition rules (R33, R34,
    R36, R56)."""

    def __init__(
        self, *, min_length: int = 15, max_length: int = 256, min_guesses: float = 1e10
    ) -> None:
        if min_length < 8 or max_length < 64:
            raise ValueError("the password policy may not be weaker than 8..64")
        self.min_length = min_length
        self.max_length = max_length
        self.strength = StrengthEstimator(min_guesses=min_guesses)

    async def check(self, password: str, *, personal: tuple[str | None, ...] = ()) -> None:
        """Raise :class:`PasswordRejected` with the reason, or return if acceptable.

        ``personal`` holds the user's own name, email and phone, which are refused as
        passwords (also the email's local part and the phone without its ``+``), and
        feed the strength estimate (in a worker thread: it costs milliseconds, R56).
        """
        self._check_rules(password, personal)
        weakness = await self.strength.check(normalise_password(password), personal)
        if weakness is not None:
            raise PasswordRejected(weakness, fields={"password": weakness})

    def _check_rules(self, password: str, personal: tuple[str | None, ...]) -> None:
        value = normalise_password(password)
        length = len(value)
        if length < self.min_length:
            reason = f"Use at least {self.min_length} characters; a few words make a good one."
        elif length > self.max_length:
            reason = f"Use at most {self.max_length} characters."
        elif value.casefold() in common_passwords():
            reason = "This password is too common; it appears in lists attackers try first."
        elif _is_personal(value, personal):
            reason = "Do not use your name, email address or phone number as your password."
        else:
            return
        raise PasswordRejected(reason, fields={"password": reason})


def _is_personal(value: str, personal: tuple[str | None, ...]) -> bool:
    folded = "".join(value.casefold().split())
    candidates: set[str] = set()
    for item in personal:
        if not item:
            continue
        normal = "".join(normalise_password(item).casefold().split())
        candidates.add(normal)
        if "@" in normal:
            candidates.add(normal.rpartition("@")[0])
        if normal.startswith("+"):
            candidates.add(normal[1:])
    return folded in candidates
