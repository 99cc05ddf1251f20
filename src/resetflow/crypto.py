"""Keys derived from the one secret, and the few primitives built on them.

Each purpose gets its own key (HKDF-SHA256 with a distinct ``info``), so that a value made
for one purpose is useless for another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CODE_DIGITS = 6


def new_code(digits: int = CODE_DIGITS) -> str:
    """A numeric one-time code from the CSPRNG, zero-padded to ``digits`` (R1, R2)."""
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def new_token() -> str:
    """An opaque random identifier of 256 bits, URL-safe (R3, R22)."""
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Keyring:
    """Purpose-bound keys derived from the master secret."""

    def __init__(self, secret: bytes) -> None:
        self._code_key = _derive(secret, b"resetflow code hmac v1")
        self._sealing_key = AESGCM(_derive(secret, b"resetflow outbox sealing v1"))

    def code_mac(self, *, user_id: str, purpose: str, code: str) -> bytes:
        """HMAC of a code bound to its account and purpose: the only form stored (R6, R7)."""
        message = f"{user_id}\x1f{purpose}\x1f{code}".encode()
        return hmac.new(self._code_key, message, hashlib.sha256).digest()

    def codes_match(self, stored_mac: bytes, *, user_id: str, purpose: str, code: str) -> bool:
        """Constant-time comparison of two MACs of equal type and length (R14)."""
        return hmac.compare_digest(
            stored_mac, self.code_mac(user_id=user_id, purpose=purpose, code=code)
        )

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        """Encrypt with AES-256-GCM; ``context`` must be given again to open."""
        nonce = os.urandom(12)
        return nonce + self._sealing_key.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        return self._sealing_key.decrypt(sealed[:12], sealed[12:], context)


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)
