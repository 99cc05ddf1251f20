"""Imported password hashes (SPEC §9 "imported hashes", R37): Argon2 of any variant and
parameters, bcrypt $2a$/$2b$/$2y$, Django pbkdf2_sha256 and passlib's scrypt are
accepted at import, verified at sign-in through the live app, and replaced by today's
Argon2id; a wrong password fails for each; anything else is refused at import."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import bcrypt
import httpx
import pytest
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from sqlalchemy import select

from resetflow.accounts.legacy_hashes import UnsupportedHash, check_importable, verify_foreign
from resetflow.storage.tables import users
from tests.conftest import LiveApp
from tests.test_admin_api import API, db_query, make_token

SECRET = "an old password from the old system"
CURRENT = "$argon2id$v=19$m=19456,t=2,p=1$"
# passlib's documented example: the password is "password".
PASSLIB_SCRYPT = (
    "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E"
)


def _bcrypt(prefix: bytes, password: str = SECRET) -> str:
    made = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=b"2b")).decode()
    return "$" + prefix.decode() + made[3:]


def _django(password: str = SECRET, iterations: int = 2000, salt: str = "seasalt42") -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def _scrypt(password: str = SECRET, ln: int = 10) -> str:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**ln, r=8, p=1, dklen=32)

    def ab64(raw: bytes) -> str:
        return base64.b64encode(raw).decode().rstrip("=").replace("+", ".")

    return f"$scrypt$ln={ln},r=8,p=1${ab64(salt)}${ab64(digest)}"


def _argon2(kind: Type) -> str:
    return Argon2Hasher(time_cost=1, memory_cost=64, parallelism=1, type=kind).hash(SECRET)


FORMATS: dict[str, Callable[[], tuple[str, str]]] = {
    "argon2i": lambda: (_argon2(Type.I), SECRET),
    "argon2d": lambda: (_argon2(Type.D), SECRET),
    "argon2id-weak": lambda: (_argon2(Type.ID), SECRET),
    "bcrypt-2a": lambda: (_bcrypt(b"2a"), SECRET),
    "bcrypt-2b": lambda: (_bcrypt(b"2b"), SECRET),
    "bcrypt-2y": lambda: (_bcrypt(b"2y"), SECRET),
    "django-pbkdf2": lambda: (_django(), SECRET),
    "passlib-scrypt": lambda: (_scrypt(), SECRET),
    "passlib-scrypt-example": lambda: (PASSLIB_SCRYPT, "password"),
}


def test_r37_each_imported_format_signs_in_and_is_upgraded_to_argon2id(
    live_app: Callable[..., LiveApp], database_url: str
) -> None:
    app = live_app(database_url=database_url)
    token = make_token(app)
    with httpx.Client(
        base_url=app.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        for index, (name, make) in enumerate(FORMATS.items()):
            stored, password = make()
            email = f"user{index}@example.com"
            created = api.post(
                f"{API}/users",
                json={
                    "name": name,
                    "email": email,
                    "password_hash": stored,
                    "email_verified": True,
                },
            )
            assert created.status_code == 201, (name, created.text)
            with app.client() as browser:
                wrong = browser.post("/login", json={"email": email, "password": password + "x"})
                assert wrong.status_code == 401, name
                right = browser.post("/login", json={"email": email, "password": password})
                assert right.status_code == 200, (name, right.text)
                assert right.json()["redirect"] == "/account"
            [row] = db_query(app, select(users.c.password_hash).where(users.c.email == email))
            assert row.password_hash.startswith(CURRENT), name
            assert row.password_hash != stored
            with app.client() as browser:  # the new hash keeps the password working
                again = browser.post("/login", json={"email": email, "password": password})
                assert again.status_code == 200, name
                assert (
                    browser.post("/login", json={"email": email, "password": "wrong"}).status_code
                    == 401
                )


@pytest.mark.parametrize(
    "value",
    [
        "md5$abc$def",
        "5f4dcc3b5aa765d61d8327deb882cf99",
        "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/",
        "pbkdf2_sha256$99999999$salt$" + "A" * 44,  # too many iterations
        "$scrypt$ln=30,r=8,p=1$c2FsdA$" + "A" * 43,  # 128 GiB
        "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$" + "A" * 43,  # 4 GiB
        "$2b$12$tooshort",
        "pbkdf2_sha1$1000$salt$abc=",
    ],
)
def test_unknown_or_oversized_hashes_are_refused_at_import(value: str) -> None:
    with pytest.raises(UnsupportedHash):
        check_importable(value)
    assert verify_foreign(value, "anything") is False


def test_bcrypt_reads_only_the_first_72_bytes_as_the_old_system_did() -> None:
    long = "x" * 100
    stored = _bcrypt(b"2b", long[:72])
    assert verify_foreign(stored, long)
    assert not verify_foreign(stored, "x" * 71)
