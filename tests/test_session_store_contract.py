"""Every SessionStore adapter keeps the port's contract (storage/sessions/base.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resetflow.storage.database import Database
from resetflow.storage.sessions import SessionRecord, SessionStore
from resetflow.storage.sessions.memory import MemorySessionStore
from resetflow.storage.sessions.redis import RedisSessionStore
from resetflow.storage.sessions.sql import SqlSessionStore
from tests.conftest import migrated_database

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
IDLE = 1800  # seconds, the default RESETFLOW_SESSION_IDLE_SECONDS
MINUTE = timedelta(minutes=1)


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store_kind(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``memory``, a Redis URL, or the URL of a migrated database (all prepared outside
    the event loop)."""
    if request.param == "memory":
        return "memory"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server"))
    return migrated_database(request.param, request, tmp_path)


@pytest.fixture
async def store(store_kind: str) -> AsyncIterator[SessionStore]:
    if store_kind == "memory":
        yield MemorySessionStore(idle_seconds=IDLE)
        return
    if store_kind.startswith("redis"):
        prefix = f"resetflow-test:{secrets.token_hex(6)}:"
        redis_store = RedisSessionStore.from_url(store_kind, prefix=prefix, idle_seconds=IDLE)
        yield redis_store
        await redis_store.close()
        return
    database = Database(store_kind)
    yield SqlSessionStore(database=database, idle_seconds=IDLE)
    await database.close()


def _record(user_id: str | None = None, minutes: int = 30) -> SessionRecord:
    return SessionRecord(
        user_id=user_id,
        data={"csrf": "t", "reset": {"attempt": "x"}},
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=minutes),
    )


async def test_save_then_load_round_trips(store: SessionStore) -> None:
    await store.save("h1", _record("user-1"))
    loaded = await store.load("h1", now=NOW)
    assert loaded is not None
    assert loaded.user_id == "user-1"
    assert loaded.data == {"csrf": "t", "reset": {"attempt": "x"}}
    assert loaded.expires_at == NOW + timedelta(minutes=30)


async def test_save_is_an_upsert(store: SessionStore) -> None:
    await store.save("h1", _record())
    changed = _record("user-2")
    changed.data = {"csrf": "u"}
    await store.save("h1", changed)
    loaded = await store.load("h1", now=NOW)
    assert loaded is not None and loaded.user_id == "user-2" and loaded.data == {"csrf": "u"}


async def test_unknown_and_expired_sessions_load_as_none(store: SessionStore) -> None:
    await store.save("h1", _record(minutes=1))
    assert await store.load("nope", now=NOW) is None
    assert await store.load("h1", now=NOW + timedelta(minutes=2)) is None


async def test_delete_ends_one_session(store: SessionStore) -> None:
    await store.save("h1", _record())
    await store.save("h2", _record())
    await store.delete("h1")
    assert await store.load("h1", now=NOW) is None
    assert await store.load("h2", now=NOW) is not None


async def test_r27_delete_user_ends_every_session_of_that_user_only(store: SessionStore) -> None:
    """R27: "end all sessions of user X" ends exactly X's sessions."""
    for key, user in (("a", "x"), ("b", "x"), ("c", "y"), ("d", None)):
        await store.save(key, _record(user))
    assert await store.delete_user("x") == 2
    assert await store.load("a", now=NOW) is None
    assert await store.load("b", now=NOW) is None
    assert await store.load("c", now=NOW) is not None
    assert await store.load("d", now=NOW) is not None


async def test_records_are_copies_not_shared_objects(store: SessionStore) -> None:
    record = _record()
    await store.save("h1", record)
    record.data["csrf"] = "mutated after save"
    loaded = await store.load("h1", now=NOW)
    assert loaded is not None and loaded.data["csrf"] == "t"


# Idle expiry: a session unused for idle_seconds ends; each use slides it, never past
# expires_at (storage/sessions/base.py). Times come from the caller's clock throughout.


async def test_idle_session_ends_after_the_idle_window(store: SessionStore) -> None:
    await store.save("h1", _record("user-1", minutes=12 * 60))
    assert await store.load("h1", now=NOW + timedelta(seconds=IDLE - 1)) is not None
    assert await store.load("h1", now=NOW + timedelta(seconds=IDLE)) is None


async def test_save_marks_the_session_used(store: SessionStore) -> None:
    record = _record("user-1", minutes=12 * 60)
    record.last_seen_at = NOW + 20 * MINUTE
    await store.save("h1", record)
    loaded = await store.load("h1", now=NOW + 40 * MINUTE)
    assert loaded is not None and loaded.last_seen_at == NOW + 20 * MINUTE
    assert await store.load("h1", now=NOW + 20 * MINUTE + timedelta(seconds=IDLE)) is None


async def test_touch_slides_the_idle_window(store: SessionStore) -> None:
    await store.save("h1", _record("user-1", minutes=12 * 60))
    assert await store.touch("h1", now=NOW + 20 * MINUTE)
    assert await store.touch("h1", now=NOW + 45 * MINUTE)
    # Idle since the last touch: alive until 30 minutes after it, not after the start.
    loaded = await store.load("h1", now=NOW + 70 * MINUTE)
    assert loaded is not None
    assert loaded.user_id == "user-1" and loaded.data == {"csrf": "t", "reset": {"attempt": "x"}}
    assert loaded.last_seen_at == NOW + 45 * MINUTE
    assert await store.load("h1", now=NOW + 45 * MINUTE + timedelta(seconds=IDLE)) is None


async def test_touch_never_carries_a_session_past_its_absolute_lifetime(
    store: SessionStore,
) -> None:
    await store.save("h1", _record("user-1", minutes=45))
    assert await store.touch("h1", now=NOW + 25 * MINUTE)
    assert await store.touch("h1", now=NOW + 44 * MINUTE)
    assert await store.load("h1", now=NOW + 44 * MINUTE) is not None
    assert await store.load("h1", now=NOW + 45 * MINUTE) is None
    assert not await store.touch("h1", now=NOW + 46 * MINUTE)
    assert await store.load("h1", now=NOW + 44 * MINUTE + 30 * timedelta(seconds=1)) is not None


async def test_touch_never_moves_last_seen_back(store: SessionStore) -> None:
    await store.save("h1", _record("user-1", minutes=12 * 60))
    assert await store.touch("h1", now=NOW + 20 * MINUTE)
    assert not await store.touch("h1", now=NOW + 10 * MINUTE)
    assert await store.load("h1", now=NOW + 10 * MINUTE + timedelta(seconds=IDLE)) is not None


async def test_touch_never_brings_a_session_back(store: SessionStore) -> None:
    """A touch racing a sign-out or "end all sessions" (R27) must not revive it, nor
    revive a session already past its idle window."""
    for key in ("a", "b", "c"):
        await store.save(key, _record("x", minutes=12 * 60))
    await store.delete("a")
    assert await store.delete_user("x") == 2
    for key in ("a", "b", "nope"):
        assert not await store.touch(key, now=NOW + MINUTE)
        assert await store.load(key, now=NOW + MINUTE) is None
    await store.save("d", _record("y", minutes=12 * 60))
    assert not await store.touch("d", now=NOW + timedelta(seconds=IDLE))
    assert await store.load("d", now=NOW + timedelta(seconds=IDLE + 60)) is None


async def test_touch_keeps_a_later_save(store: SessionStore) -> None:
    await store.save("h1", _record("user-1", minutes=12 * 60))
    changed = _record("user-1", minutes=12 * 60)
    changed.data = {"csrf": "u"}
    await store.save("h1", changed)
    assert await store.touch("h1", now=NOW + 5 * MINUTE)
    loaded = await store.load("h1", now=NOW + 5 * MINUTE)
    assert loaded is not None and loaded.data == {"csrf": "u"}


# Not Redis: it expires keys by itself (the key TTL, tested below), so it has nothing to
# purge and no time but its own.
@pytest.mark.parametrize("store_kind", ["memory", "sqlite", "postgres"], indirect=True)
async def test_purge_removes_idle_sessions(store: SessionStore) -> None:
    await store.save("idle", _record("user-1", minutes=12 * 60))
    await store.save("used", _record("user-2", minutes=12 * 60))
    assert await store.touch("used", now=NOW + 20 * MINUTE)
    assert await store.purge_expired(now=NOW + timedelta(seconds=IDLE + 1)) == 1
    # Gone for good, even when asked with an earlier time; the used one stays.
    assert await store.load("idle", now=NOW + MINUTE) is None
    assert await store.load("used", now=NOW + 21 * MINUTE) is not None


async def test_redis_key_ttl_is_the_first_deadline_and_the_user_set_outlives_it(
    redis_server: str,
) -> None:
    """The key's TTL: the idle window, then (near the end) what is left of the absolute
    lifetime; the user set must outlive the key, or delete_user (R27) would miss it."""
    from redis.asyncio import Redis

    prefix = f"resetflow-test:{secrets.token_hex(6)}:"
    store = RedisSessionStore.from_url(redis_server, prefix=prefix, idle_seconds=IDLE)
    client = Redis.from_url(redis_server, decode_responses=True)
    try:
        await store.save("h1", _record("user-1", minutes=12 * 60))
        ttl = await client.pttl(f"{prefix}session:h1")
        assert IDLE * 1000 - 60_000 < ttl <= IDLE * 1000
        # Touched 20 minutes before its absolute end: the key lives 20 minutes, not 30.
        await store.save("h3", _record("user-3", minutes=45))
        assert await store.touch("h3", now=NOW + 25 * MINUTE)
        ttl = await client.pttl(f"{prefix}session:h3")
        assert 19 * 60_000 < ttl <= 20 * 60_000
        await store.save("h2", _record("user-1", minutes=12 * 60))
        assert await store.touch("h2", now=NOW + 20 * MINUTE)
        # The set first: both count down from the touch, so the one read later reads a
        # few milliseconds less (this read once failed by 4 ms); a second of slack still
        # catches a set that would expire with the idle window rather than the key.
        user_ttl = await client.pttl(f"{prefix}user:user-1")
        session_ttl = await client.pttl(f"{prefix}session:h2")
        assert user_ttl >= session_ttl - 1000
    finally:
        await client.aclose()
        await store.close()
