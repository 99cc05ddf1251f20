"""The PostgreSQL pool per process, from the settings (RESETFLOW_DATABASE_POOL_SIZE,
_MAX_OVERFLOW, _POOL_TIMEOUT_SECONDS): what a deployment sizes against the server's
max_connections (docs/deployment.md). Against the real PostgreSQL."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from resetflow.config import Settings
from resetflow.services import build_services
from tests.support.servers import run

pytestmark = pytest.mark.postgres


def test_a_process_opens_at_most_pool_size_plus_overflow_connections_then_waits_the_timeout(
    postgres_server: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        database_url=postgres_server,
        database_pool_size=2,
        database_max_overflow=1,
        database_pool_timeout_seconds=0.5,
    )
    services = build_services(settings)
    marker = f"resetflow-pool-test-{time.monotonic_ns()}"

    async def scenario() -> None:
        try:
            async with contextlib.AsyncExitStack() as held:
                conns = [await held.enter_async_context(services.database.read()) for _ in range(3)]
                for conn in conns:
                    await conn.execute(text(f"SET application_name = '{marker}'"))
                backends = await conns[0].scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :m"),
                    {"m": marker},
                )
                assert backends == 3  # pool size 2 + overflow 1, each its own connection
                started = time.monotonic()
                with pytest.raises(PoolTimeout):  # answered 503 by the app
                    async with services.database.read():
                        pass
                # It waited for one to come back before giving up.
                assert time.monotonic() - started >= 0.45
        finally:
            await services.close()

    run(scenario())
