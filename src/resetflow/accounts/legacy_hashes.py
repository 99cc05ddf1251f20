"""Password hashes made elsewhere, accepted at import and replaced at first sign-in.

Formats (SPEC §9 "imported hashes"):

- Argon2 ``$argon2id$`` / ``$argon2i$`` / ``$argon2d$``, any parameters: argon2-cffi
  verifies every variant itself, so these need nothing from this module at sign-in; a
  weaker one is replaced through :meth:`PasswordHasher.needs_rehash` like our own.
- bcrypt ``$2a$`` / ``$2b$`` / ``$2y$`` (the ``bcrypt`` package, pyca's, maintained).
- Django ``pbkdf2_sha256$<iterations>$<salt>$<base64 sha256>`` (``hashlib.pbkdf2_hmac``).
- passlib's scrypt ``$scrypt$ln=<log2 n>,r=<r>,p=<p>$<salt>$<hash>``, both parts in
  unpadded base64 (passlib writes the salt in its "adapted" alphabet, ``.`` for ``+``;
  both alphabets are read) (``hashlib.scrypt``).
- ``$resetflow-sha3-argon2id$<argon2id hash>``: the tutorial's unsalted SHA3-256 hex
  digest, wrapped in Argon2id at import (OWASP's layered upgrade of a legacy hash), so
  that the unsalted digest is never stored. Verified as Argon2id(SHA3-256(password)).

Why not ``libpass`` (the maintained passlib fork): it would bring ~30 schemes and its own
configuration machinery to check three formats that are each a few lines over the
standard library or ``bcrypt``; the parsers below also bound the work factor an import
may ask for (a hash is attacker-shaped input if an import file is), which passlib would
not do for us.

Every check here is CPU-heavy and synchronous: callers run it in a worker thread (R37).
A hash is only ever verified against; none of these formats is ever written for a new
password (sign-in replaces them with today's Argon2id).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata

import bcrypt
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

TUTORIAL_PREFIX = "$resetflow-sha3-argon2id$"

# Upper bounds on what an imported hash may make a sign-in compute (a hash from an import
# file must not be able to make one sign-in take minutes or gigabytes).
MAX_PBKDF2_ITERATIONS = 10_000_000
MAX_SCRYPT_MEMORY_BYTES = 512 * 1024 * 1024
MAX_ARGON2_MEMORY_KIB = 1024 * 1024
MAX_ARGON2_TIME_COST = 64

_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_DJANGO = re.compile(r"^pbkdf2_sha256\$([1-9][0-9]{0,8})\$([^$]{1,128})\$([A-Za-z0-9+/]+={0,2})$")
_SCRYPT = re.compile(
    r"^\$scrypt\$ln=([1-9][0-9]?),r=([1-9][0-9]{0,2}),p=([1-9][0-9]{0,2})"
    r"\$([./+A-Za-z0-9]{0,128})\$([./+A-Za-z0-9]{16,512})$"
)
_ARGON2 = re.compile(r"^\$argon2(id|i|d)\$")
# Wraps the tutorial's digests at import, and verifies any Argon2 hash (parameters are
# read from the hash itself).
_WRAPPER = Argon2Hasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)


class UnsupportedHash(ValueError):
    """The hash is in no accepted format (or asks for more work than allowed)."""


def check_importable(password_hash: str) -> None:
    """Return if ``password_hash`` may be stored as given; else :class:`UnsupportedHash`
    with the reason (a sentence naming the accepted formats)."""
    value = password_hash.strip()
    if _ARGON2.match(value):
        try:
            found = extract_parameters(value)
        except InvalidHashError:
            raise UnsupportedHash("This Argon2 hash cannot be read.") from None
        if found.memory_cost > MAX_ARGON2_MEMORY_KIB or found.time_cost > MAX_ARGON2_TIME_COST:
            raise UnsupportedHash("This Argon2 hash asks for more work than allowed.")
        return
    if _BCRYPT.match(value):
        return
    if match := _DJANGO.match(value):
        if int(match[1]) > MAX_PBKDF2_ITERATIONS:
            raise UnsupportedHash("This PBKDF2 hash asks for more iterations than allowed.")
        if _b64(match[3]) is None:
            raise UnsupportedHash("This PBKDF2 hash's digest is not base64.")
        return
    if match := _SCRYPT.match(value):
        ln, r, p = int(match[1]), int(match[2]), int(match[3])
        if 128 * r * (2**ln) > MAX_SCRYPT_MEMORY_BYTES or r * p >= 2**30 or ln > 24:
            raise UnsupportedHash("This scrypt hash asks for more memory than allowed.")
        if _ab64(match[4]) is None or _ab64(match[5]) is None:
            raise UnsupportedHash("This scrypt hash's salt or digest is not passlib's base64.")
        return
    if value.startswith(TUTORIAL_PREFIX):
        inner = value.removeprefix(TUTORIAL_PREFIX)
        try:
            if extract_parameters(inner).type is Type.ID:
                return
        except InvalidHashError:
            pass
        raise UnsupportedHash("This wrapped SHA3 hash cannot be read.")
    raise UnsupportedHash(
        "Unsupported password hash: use Argon2 ($argon2id$...), bcrypt ($2a$/$2b$/$2y$), "
        "Django pbkdf2_sha256$... or passlib's $scrypt$..."
    )


def is_foreign(password_hash: str) -> bool:
    """True for the formats this module verifies (everything but Argon2 itself)."""
    return not password_hash.startswith("$argon2")


def verify_foreign(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches the foreign ``password_hash``; False for a hash in no
    accepted format. Tries the password as typed and, when different, NFKC-normalised
    (the other system may have hashed either)."""
    candidates = [password]
    normal = unicodedata.normalize("NFKC", password)
    if normal != password:
        candidates.append(normal)
    try:
        check_importable(password_hash)
    except UnsupportedHash:
        return False
    return any(_verify_one(password_hash.strip(), candidate) for candidate in candidates)


def wrap_sha3_hex(sha3_hex: str) -> str:
    """The tutorial's unsalted SHA3-256 hex digest, stored only inside Argon2id (with
    R37's parameters). CPU-heavy: call it in a worker thread."""
    value = sha3_hex.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise UnsupportedHash("The tutorial's hashed_password must be 64 hex digits (SHA3-256).")
    return TUTORIAL_PREFIX + _WRAPPER.hash(value)


def _verify_one(password_hash: str, password: str) -> bool:
    secret = password.encode()
    if password_hash.startswith("$2"):
        # The bcrypt algorithm reads at most 72 bytes (bcrypt 5 refuses longer input):
        # the other system hashed those 72. $2y$ is PHP's name for the same algorithm.
        stored = ("$2b$" + password_hash[4:]).encode()
        return bool(bcrypt.checkpw(secret[:72], stored))
    if match := _DJANGO.match(password_hash):
        expected = _b64(match[3])
        assert expected is not None
        derived = hashlib.pbkdf2_hmac(
            "sha256", secret, match[2].encode(), int(match[1]), dklen=len(expected)
        )
        return hmac.compare_digest(derived, expected)
    if match := _SCRYPT.match(password_hash):
        ln, r, p = int(match[1]), int(match[2]), int(match[3])
        salt, expected = _ab64(match[4]), _ab64(match[5])
        assert salt is not None and expected is not None
        derived = hashlib.scrypt(
            secret,
            salt=salt,
            n=2**ln,
            r=r,
            p=p,
            maxmem=MAX_SCRYPT_MEMORY_BYTES + 1024 * 1024,
            dklen=len(expected),
        )
        return hmac.compare_digest(derived, expected)
    if password_hash.startswith(TUTORIAL_PREFIX):
        # The tutorial hashed the password's UTF-8 bytes with SHA3-256 (node's createHash).
        digest = hashlib.sha3_256(secret).hexdigest()
        try:
            return bool(_WRAPPER.verify(password_hash.removeprefix(TUTORIAL_PREFIX), digest))
        except (VerificationError, InvalidHashError):
            return False
    return False


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _ab64(text: str) -> bytes | None:
    """Unpadded base64, in the standard alphabet or passlib's adapted one (``.`` for ``+``)."""
    padded = text.replace(".", "+") + "=" * (-len(text) % 4)
    return _b64(padded)
