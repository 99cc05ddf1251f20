"""Concurrent /send-token on PostgreSQL: unknown addresses answer exactly like known ones
(R19, R20), also when many requests land on the same decoy code row at once.

Unknown contacts write a decoy code on one of a few dozen decoy slots of the decoy
account, so under load several requests replace the same (user, purpose) row at the same
moment. That replacement must be one atomic statement: under READ COMMITTED a
``DELETE`` then ``INSERT`` lets the second writer violate the unique (user, purpose)
constraint, and the ``IntegrityError`` (answered 503) would tell unknown addresses apart
from known ones, which answer 202.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx
import pytest

from resetflow.recovery.codes import RESET
from resetflow.recovery.service import DECOY_SLOTS
from resetflow.storage.codes import CodeRepository
from resetflow.storage.database import Database
from resetflow.storage.users import DECOY_USER_ID
from tests.conftest import LiveApp, migrated_database
from tests.support.flow import create_verified_account

pytestmark = pytest.mark.postgres

UNKNOWN = 200
KNOWN = 5


def test_r20_concurrent_send_token_for_unknown_addresses_answers_like_known_ones(
    postgres_url: str, live_app: Callable[..., LiveApp]
) -> None:
    """R19/R20: ~200 concurrent requests for distinct unknown addresses (many sharing a
    decoy slot) and a few for one known account: every answer is 202 with the same body."""
    app = live_app(database_url=postgres_url)
    create_verified_account(app.settings)
    emails = [f"nobody-{i}-{secrets.token_hex(4)}@example.com" for i in range(UNKNOWN)]
    emails[:: UNKNOWN // KNOWN] = ["ada@example.com"] * KNOWN  # interleaved

    async def fire() -> list[tuple[str, httpx.Response]]:
        limits = httpx.Limits(max_connections=UNKNOWN, max_keepalive_connections=UNKNOWN)
        # A jar that keeps no cookie: every request comes from a browser of its own.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        async with httpx.AsyncClient(
            base_url=app.url, timeout=60, limits=limits, cookies=no_cookies
        ) as client:
            start = asyncio.Event()

            async def send(email: str) -> tuple[str, httpx.Response]:
                await start.wait()
                return email, await client.post("/send-token", json={"email": email})

            tasks = [asyncio.create_task(send(email)) for email in emails]
            await asyncio.sleep(0)
            start.set()
            return await asyncio.gather(*tasks)

    try:
        answers = asyncio.run(fire())
    finally:
        app.stop()  # before the database is dropped
    shapes = Counter(
        ("known" if email == "ada@example.com" else "unknown", r.status_code, r.content)
        for email, r in answers
    )
    known = [r for email, r in answers if email == "ada@example.com"]
    assert len(known) == KNOWN
    expected = (known[0].status_code, known[0].content)
    assert expected[0] == 202, shapes
    assert {(r.status_code, r.content) for _, r in answers} == {expected}, shapes


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty PostgreSQL database (it holds the decoy account)."""
    return migrated_database("postgres", request, tmp_path)


@pytest.mark.anyio
async def test_r20_concurrent_decoy_codes_on_one_slot_all_succeed(postgres_database: str) -> None:
    """The same race one level down: many transactions replacing the code of one decoy
    slot at once all commit, and the slot holds exactly one code afterwards."""
    db = Database(postgres_database)
    now = datetime.now(UTC)
    purpose = f"{RESET}#{DECOY_SLOTS - 1}"
    try:

        async def replace(i: int) -> str:
            code_id = f"{i:032x}"
            async with db.write() as conn:
                await CodeRepository(conn).replace(
                    code_id=code_id,
                    user_id=DECOY_USER_ID,
                    purpose=purpose,
                    attempt_hash=f"{i:064x}",
                    code_mac=secrets.token_bytes(32),
                    now=now,
                    expires_at=now + timedelta(minutes=5),
                )
            return code_id

        results = await asyncio.gather(*(replace(i) for i in range(60)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"{len(failures)} of 60 failed: {failures[0]!r}"
        async with db.read() as conn:
            current = await CodeRepository(conn).current(user_id=DECOY_USER_ID, purpose=purpose)
        assert current is not None and current.id in results
    finally:
        await db.close()
