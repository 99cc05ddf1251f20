"""Schema migrations (Alembic), run by ``resetflow migrate`` and by ``serve`` in dev."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision``. Safe to run again: applied steps are skipped."""
    if database_url.startswith("sqlite"):
        _prepare_sqlite(database_url)
    command.upgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str) -> None:
    """:func:`upgrade` from inside a running event loop (Alembic's env runs its own)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            upgrade(database_url)
        except BaseException as error:  # re-raised in the caller's task
            failure.append(error)

    thread = threading.Thread(target=target, name="resetflow-migrate")
    thread.start()
    await asyncio.to_thread(thread.join)
    if failure:
        raise failure[0]


def _prepare_sqlite(database_url: str) -> None:
    """Create the file's folder and switch the file to WAL (a setting the file keeps)."""
    path = database_url.split(":///", 1)[-1]
    if not path or path == ":memory:":
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
