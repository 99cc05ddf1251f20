"""One-time codes: issuing and checking (R1-R14).

A code is 6 CSPRNG digits; only an HMAC bound to its account and purpose is stored. It is
bound to one attempt (an id held in the requesting browser's server-side session), lives
``ttl`` seconds, dies after ``max_tries`` wrong guesses, and is consumed by one atomic
UPDATE. Every wrong guess also counts against the account (across codes and flows); at
``account_max_failures`` recovery for the account pauses, while password sign-in keeps
working (R9): no code is accepted until ``pause_seconds`` after the last failure, a delay
that doubles with every further failure (up to ``max_pause_seconds``). Submissions during
a pause are refused without counting, so they cannot stretch it; only an accepted code
clears the count (R13).

Every refusal raises the same :class:`InvalidCode` (R21). A paused account answers like
any wrong code, not 429, because unknown accounts cannot be paused and a distinct answer
would tell them apart (R17); the per-client limits with ``Retry-After`` sit in front.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.models import User
from resetflow.audit import AuditEvent, AuditLog
from resetflow.client import ClientInfo
from resetflow.clock import Clock
from resetflow.crypto import Keyring, new_code, sha256_hex
from resetflow.errors import InvalidCode
from resetflow.metrics import Metrics
from resetflow.storage.codes import CodeRepository, StoredCode
from resetflow.storage.database import Database
from resetflow.storage.users import DECOY_USER_ID, UserRepository

RESET = "reset"


def verify_purpose(channel: str) -> str:
    return f"verify-{channel}"


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code_id: str
    code: str
    expires_at: datetime


class OneTimeCodes:
    def __init__(
        self,
        *,
        database: Database,
        keyring: Keyring,
        clock: Clock,
        ttl_seconds: int = 300,
        max_tries: int = 5,
        account_max_failures: int = 100,
        pause_seconds: int = 60,
        max_pause_seconds: int = 24 * 3600,
        audit: AuditLog | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not 0 < ttl_seconds <= 600:
            raise ValueError("a code may live at most 10 minutes (R4)")
        self._db = database
        self._keyring = keyring
        self._clock = clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self._max_tries = max_tries
        self._account_max_failures = account_max_failures
        self._pause = timedelta(seconds=pause_seconds)
        self._max_pause = timedelta(seconds=max_pause_seconds)
        self._audit = audit
        self._metrics = metrics

    async def issue(
        self, conn: AsyncConnection, *, user_id: str, purpose: str, attempt_id: str
    ) -> IssuedCode:
        """Create a code in the caller's transaction, voiding the account's older one."""
        now = self._clock.now()
        code = new_code()
        issued = IssuedCode(code_id=secrets.token_hex(16), code=code, expires_at=now + self.ttl)
        await CodeRepository(conn).replace(
            code_id=issued.code_id,
            user_id=user_id,
            purpose=purpose,
            attempt_hash=sha256_hex(attempt_id),
            code_mac=self._keyring.code_mac(user_id=user_id, purpose=purpose, code=code),
            now=now,
            expires_at=issued.expires_at,
        )
        if self._metrics is not None and user_id != DECOY_USER_ID:
            self._metrics.code_issued(purpose)
        return issued

    def decoy(self, *, purpose: str) -> None:
        """Do the CPU work of :meth:`issue` for an unknown account (timing, R20)."""
        self._keyring.code_mac(user_id=DECOY_USER_ID, purpose=purpose, code=new_code())

    def paused_until(self, user: User, *, now: datetime) -> datetime | None:
        """When recovery for ``user`` resumes, or ``None`` if it is not paused."""
        excess = user.code_failures - self._account_max_failures
        if excess < 0 or user.code_failure_at is None:
            return None
        delay = min(self._pause * 2 ** min(excess, 32), self._max_pause)
        until = user.code_failure_at + delay
        return until if now < until else None

    async def accept(
        self,
        *,
        user_id: str | None,
        purpose: str,
        attempt_id: str | None,
        submitted: str,
        client: ClientInfo | None = None,
    ) -> str:
        """Consume the code if ``submitted`` is right; returns the code id.

        Raises :class:`InvalidCode` for every kind of failure alike (unknown account, no
        code, another attempt's code, expired, used, burned, paused, wrong) (R21); the
        audit trail records which it was.
        """
        now = self._clock.now()
        accepted: str | None = None
        async with self._db.write() as conn:
            users, codes = UserRepository(conn), CodeRepository(conn)
            # Lock the account first on every path: concurrent right and wrong guesses
            # then touch the user and code rows in the same order (no deadlock).
            user = await users.get(user_id, for_update=True) if user_id else None
            stored = await codes.current(user_id=user.id, purpose=purpose) if user else None
            # Always compute and compare a MAC, so every path costs the same.
            matches = self._keyring.codes_match(
                stored.code_mac if stored else bytes(32),
                user_id=user.id if user else DECOY_USER_ID,
                purpose=purpose,
                code=submitted,
            )
            reason = self._refusal(user, stored, attempt_id=attempt_id, matches=matches, now=now)
            if user is not None and reason not in (None, "paused"):
                await users.add_code_failure(user.id, now=now)
                if stored is not None:
                    await codes.add_failed_try(stored.id)
            elif user is not None and stored is not None and reason is None:
                if await codes.consume(stored.id, max_tries=self._max_tries, now=now):
                    await users.clear_code_failures(user.id)
                    accepted = stored.id
                else:
                    reason = "used"
            if self._audit is not None:
                await self._audit.record(
                    AuditEvent.CODE_ACCEPTED if accepted else AuditEvent.CODE_REJECTED,
                    outcome=reason or "accepted",
                    client=client,
                    user_id=user.id if user else None,
                    conn=conn,
                    purpose=purpose,
                )
        if self._metrics is not None and user_id is not None:
            count = self._metrics.code_accepted if accepted else self._metrics.code_rejected
            count(purpose)
        # Raised after the commit, so that the failure counts above are kept.
        if accepted is None:
            raise InvalidCode()
        return accepted

    def _refusal(
        self,
        user: User | None,
        stored: StoredCode | None,
        *,
        attempt_id: str | None,
        matches: bool,
        now: datetime,
    ) -> str | None:
        """Why a submission fails (for the audit trail), or ``None`` if it may succeed."""
        if user is None:
            return "unknown_account"
        if self.paused_until(user, now=now) is not None:
            return "paused"
        if (
            stored is None
            or attempt_id is None
            or not hmac.compare_digest(stored.attempt_hash, sha256_hex(attempt_id))
        ):
            return "no_code"
        if stored.consumed_at is not None:
            return "used"
        if stored.failed_tries >= self._max_tries:
            return "burned"
        if stored.expires_at <= now:
            return "expired"
        return None if matches else "wrong"
