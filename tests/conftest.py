"""Shared fixtures. Everything runs against real parts on loopback: SQLite files, uvicorn,
aiosmtpd; PostgreSQL and Chromium where the machine has them (required when CI=true)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from resetflow.app import create_app
from resetflow.clock import Clock
from resetflow.config import Settings, load_settings
from tests.support.databases import fresh_postgres_database
from tests.support.servers import SmtpSink, free_port, serve_in_thread, smtp_server

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No RESETFLOW_* or COURIER_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("RESETFLOW_", "COURIER_")):
            monkeypatch.delenv(name)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "worker_poll_seconds": 0.2,
            "delivery_backoff_seconds": 0.1,
            # Generous limits, so that flow tests measure the flow; the tests of the limits
            # themselves set the production defaults back (tests/test_abuse.py).
            "limit_ip": "10000/minute",
            "limit_destination": "1000/minute",
            "_env_file": None,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    with smtp_server() as server:
        yield server


class LiveApp:
    """A running resetflow: its URL, settings and a JSON client with a cookie jar."""

    def __init__(self, url: str, settings: Settings, stop: Callable[[], None]) -> None:
        self.url = url
        self.settings = settings
        self.stop = stop  # shut the server (and its in-process worker) down now

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture
def live_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveApp]]:
    """Start resetflow under uvicorn on a free port; call with settings overrides."""
    started: list[Any] = []

    def start(*, clock: Clock | None = None, migrate: bool = True, **overrides: Any) -> LiveApp:
        port = free_port()
        overrides.setdefault("base_url", f"http://127.0.0.1:{port}")
        settings = make_settings(**overrides)
        context = serve_in_thread(create_app(settings, clock=clock, migrate=migrate), port=port)
        url = context.__enter__()
        running = [True]

        def stop() -> None:
            if running:
                running.clear()
                context.__exit__(None, None, None)

        started.append(stop)
        return LiveApp(url, settings, stop)

    yield start
    for stop in reversed(started):
        stop()


# PostgreSQL ------------------------------------------------------------------------------

POSTGRES_URL = os.environ.get(
    "RESETFLOW_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's URL; skipped (failed in CI) when it cannot be reached."""
    import asyncio

    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL), timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError) as error:
        message = f"PostgreSQL not reachable at {POSTGRES_URL}: {error}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the server, dropped after the test."""
    with fresh_postgres_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: an SQLite file, then a PostgreSQL database."""
    return migrated_database(request.param, request, tmp_path)


def migrated_database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    from resetflow.storage.migrate import upgrade

    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    upgrade(url)
    return url


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Redis -----------------------------------------------------------------------------------

REDIS_URL = os.environ.get("RESETFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The Redis server's URL; skipped (failed in CI) when it cannot be reached. Tests use
    their own key prefixes and never flush: the server may be shared."""
    import asyncio

    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    async def probe() -> None:
        client = Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(probe())
    except (OSError, RedisError) as error:
        message = f"Redis not reachable at {REDIS_URL}: {error}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgres+redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides for the two storage set-ups: the embedded default (SQLite,
    in-process limits and sessions), and the production pair, PostgreSQL with Redis."""
    if request.param == "sqlite":
        return {}
    return {
        "database_url": request.getfixturevalue("postgres_url"),
        "redis_url": request.getfixturevalue("redis_server"),
        "redis_prefix": f"resetflow-test-{secrets.token_hex(6)}",
    }
