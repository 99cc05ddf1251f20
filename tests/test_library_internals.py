"""The two adapters that lean on other libraries' internals, and the switch around them.

``storage/sqlite_inline.py`` overrides aiosqlite's private ``Connection._execute`` and
``storage/prepared.py`` runs SQLAlchemy's compiled SQL itself (``SQLCompiler.positiontup``,
``binds``, the prefetch and post-compile lists). They earn their place by CPU
(docs/performance.md), so they stay, each in one module, behind upper version bounds in
pyproject.toml and the tests below: when a new aiosqlite or SQLAlchemy changes what they
rely on, these fail and say which library moved, and ``RESETFLOW_SQLITE_FAST_PATH=false``
runs resetflow on both libraries as they ship until the adapter is updated.
"""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import aiosqlite
import pytest
import sqlalchemy
from sqlalchemy import column, select, table
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.compiler import SQLCompiler

from resetflow.storage import prepared
from resetflow.storage.database import Database
from resetflow.storage.migrate import upgrade_async
from resetflow.storage.sqlite_inline import InlineConnection, inline_creator
from resetflow.storage.users import UserRepository
from tests.support.flow import find_code, sign_up, wait_for_dev_message

AIOSQLITE = f"aiosqlite {getattr(aiosqlite, '__version__', '?')}"
SQLALCHEMY = f"SQLAlchemy {sqlalchemy.__version__}"
FIX = "storage/{module} relies on it; run with RESETFLOW_SQLITE_FAST_PATH=false and update it"


def test_aiosqlite_still_has_the_private_execute_inline_connection_overrides() -> None:
    execute = getattr(aiosqlite.Connection, "_execute", None)
    assert execute is not None and inspect.iscoroutinefunction(execute), (
        f"{AIOSQLITE}: Connection._execute is gone or no longer a coroutine; "
        + FIX.format(module="sqlite_inline.py")
    )
    parameters = list(inspect.signature(execute).parameters)
    assert parameters[:2] == ["self", "fn"], (
        f"{AIOSQLITE}: Connection._execute{inspect.signature(execute)} changed shape; "
        + FIX.format(module="sqlite_inline.py")
    )


@pytest.mark.anyio
async def test_aiosqlite_inline_connection_runs_calls_on_the_callers_thread(
    tmp_path: Path,
) -> None:
    connection = await inline_creator(str(tmp_path / "inline.db"))()
    try:
        assert isinstance(connection, InlineConnection)
        assert connection.raw_connection is not None, (
            f"{AIOSQLITE}: an open connection no longer keeps _running/_connection; "
            + FIX.format(module="sqlite_inline.py")
        )
        seen: list[int] = []
        connection.raw_connection.create_function(
            "thread_id", 0, lambda: seen.append(threading.get_ident()) or 1
        )
        await connection.execute("SELECT thread_id()")
        assert seen == [threading.get_ident()], (
            f"{AIOSQLITE}: calls no longer go through Connection._execute; "
            + FIX.format(module="sqlite_inline.py")
        )
    finally:
        await connection.close()
    assert connection.raw_connection is None


def test_sqlalchemy_compiler_still_exposes_what_prepared_reads() -> None:
    users = table("users", column("id"), column("email"))
    statement = select(users.c.id).where(users.c.email == sqlalchemy.bindparam("email"))
    compiled = statement.compile(dialect=sqlite.dialect(), column_keys=["email"])
    assert isinstance(compiled, SQLCompiler)
    missing = [
        name
        for name in (
            "positiontup",
            "binds",
            "post_compile_params",
            "literal_execute_params",
            "insert_prefetch",
            "update_prefetch",
        )
        if not hasattr(compiled, name)
    ]
    assert missing == [], f"{SQLALCHEMY}: SQLCompiler lost {missing}; " + FIX.format(
        module="prepared.py"
    )
    assert compiled.positiontup == ["email"], (
        f"{SQLALCHEMY}: positional binds are no longer listed in positiontup; "
        + FIX.format(module="prepared.py")
    )
    bind = compiled.binds["email"]
    assert hasattr(bind, "effective_value") and hasattr(bind, "required"), (
        f"{SQLALCHEMY}: BindParameter lost effective_value/required; "
        + FIX.format(module="prepared.py")
    )


@pytest.mark.anyio
async def test_fast_path_off_uses_the_libraries_as_they_ship(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}"
    await upgrade_async(url)
    database = Database(url, sqlite_fast_path=False)
    try:
        async with database.write() as conn:
            raw = await conn.get_raw_connection()
            assert not isinstance(raw.driver_connection, InlineConnection)
            assert prepared.inline_sqlite(conn) is None
            assert await UserRepository(conn).by_email("nobody@example.com") is None
    finally:
        await database.close()


def test_fast_path_off_runs_the_whole_flow(live_app) -> None:  # type: ignore[no-untyped-def]
    app = live_app(sqlite_fast_path=False)
    with app.client() as client:
        assert sign_up(client).status_code == 201
        message = wait_for_dev_message(client, to="ada@example.com", notification="verify-contact")
        verified = client.post("/verify-contact", json={"token": find_code(message["text"])})
        assert verified.status_code == 200, verified.text
        assert client.post("/logout", json={}).status_code == 200
        asked = client.post("/send-token", json={"email": "ada@example.com"})
        assert asked.status_code == 202
        reset = wait_for_dev_message(
            client, to="ada@example.com", notification="password-reset-token"
        )
        accepted = client.post("/verify-token", json={"token": find_code(reset["text"])})
        assert accepted.status_code == 200, accepted.text
