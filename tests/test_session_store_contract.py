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
        yield MemorySessionStore()
        return
    if store_kind.startswith("redis"):
        prefix = f"resetflow-test:{secrets.token_hex(6)}:"
        redis_store = RedisSessionStore.from_url(store_kind, prefix=prefix)
        yield redis_store
        await redis_store.close()
        return
    database = Database(store_kind)
    yield SqlSessionStore(database=database)
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
