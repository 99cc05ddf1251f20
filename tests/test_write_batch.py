"""A /send-token on PostgreSQL: the look-up, then the code, the job, the audit record and
the workers' wake-up as one statement (storage/batch.py). Whole or nothing, heard by the
workers only once committed, and the same statements for every kind of request (R20)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.config import Settings
from resetflow.services import build_services
from resetflow.storage import prepared
from resetflow.storage.database import Database
from resetflow.storage.deliveries import NOTIFY_CHANNEL, DeliveryRepository
from resetflow.storage.migrate import upgrade
from resetflow.storage.tables import audit_events, delivery_jobs, one_time_codes
from tests.support.flow import trace_each_reset_kind, verified_and_unverified_accounts

TABLES = ("users", "one_time_codes", "delivery_jobs", "audit_events")
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _shape(statement: str) -> str:
    words = statement.replace("(", " ").split()
    return " ".join([words[0].upper(), *(w for w in words if w in TABLES)])


def test_r20_every_send_token_is_one_look_up_and_one_write_on_postgresql(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    redis_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_server,
        redis_prefix=f"resetflow-test-{secrets.token_hex(6)}",
        limit_destination="1/hour",
        inprocess_worker=False,
    )
    upgrade(postgres_url)

    async def scenario() -> tuple[dict[str, list[str]], dict[str, int]]:
        services = build_services(settings)
        seen: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            seen.append(_shape(statement))

        # Both are sent straight to asyncpg (storage/prepared.py, in autocommit), which
        # SQLAlchemy's cursor events do not see: traced where they are sent.
        straight = prepared.on_asyncpg

        async def traced(conn: AsyncConnection, raw: Any, method: str, sql: str, *args: Any) -> Any:
            seen.append(_shape(sql))
            return await straight(conn, raw, method, sql, *args)

        monkeypatch.setattr(prepared, "on_asyncpg", traced)
        try:
            await verified_and_unverified_accounts(services)
            engine = services.database.engine.sync_engine
            event.listen(engine, "before_cursor_execute", record)
            traces = await trace_each_reset_kind(services, seen)
            event.remove(engine, "before_cursor_execute", record)
            async with services.database.read() as conn:
                counts = {
                    table.name: (await conn.execute(select(func.count()).select_from(table))).one()[
                        0
                    ]
                    for table in (delivery_jobs, audit_events)
                }
                resets = await conn.execute(
                    select(func.count())
                    .select_from(audit_events)
                    .where(audit_events.c.event == "reset_requested")
                )
                counts["reset_requested"] = resets.one()[0]
        finally:
            await services.close()
        return traces, counts

    traces, counts = asyncio.run(scenario())
    assert traces["known"] == traces["unknown"] == traces["unverified"] == traces["limited"]
    assert traces["known"] == [
        "SELECT users users",
        "WITH one_time_codes delivery_jobs audit_events",
    ]
    assert counts["reset_requested"] == 4  # one audit record per request, each written


def test_a_batch_is_written_whole_or_not_at_all(postgres_url: str) -> None:
    upgrade(postgres_url)

    async def scenario() -> tuple[int, int, int]:
        db = Database(postgres_url)
        repo_job = {
            "user_id": None,
            "notification": "password-reset-token",
            "locale": "en",
            "sealed_payload": b"x",
            "expires_at": None,
            "now": NOW,
        }
        try:

            async def first(conn: AsyncConnection) -> None:
                await DeliveryRepository(conn).enqueue(job_id="j" * 32, **repo_job)

            await db.write_batched(first)

            async def duplicate(conn: AsyncConnection) -> None:
                repo = DeliveryRepository(conn)
                await repo.enqueue(job_id="k" * 32, **repo_job)  # fine on its own
                await repo.enqueue(job_id="j" * 32, **repo_job)  # the primary key refuses
                await repo.wake_workers()

            with pytest.raises(IntegrityError):
                await db.write_batched(duplicate)

            async def raises(conn: AsyncConnection) -> None:
                await DeliveryRepository(conn).enqueue(job_id="m" * 32, **repo_job)
                raise RuntimeError("the action fails after its write was gathered")

            with pytest.raises(RuntimeError):
                await db.write_batched(raises)
            async with db.read() as conn:
                jobs = (await conn.execute(select(func.count()).select_from(delivery_jobs))).one()[
                    0
                ]
                codes = (
                    await conn.execute(select(func.count()).select_from(one_time_codes))
                ).one()[0]
                audit = (await conn.execute(select(func.count()).select_from(audit_events))).one()[
                    0
                ]
        finally:
            await db.close()
        return jobs, codes, audit

    jobs, codes, audit = asyncio.run(scenario())
    assert (jobs, codes, audit) == (1, 0, 0)  # only the first batch's job


def test_workers_hear_of_a_batched_job_once_it_is_committed(postgres_url: str) -> None:
    upgrade(postgres_url)

    async def scenario() -> tuple[list[str], int]:
        db = Database(postgres_url)
        heard: list[str] = []
        listener = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
        seen_jobs = -1

        def on_notify(*args: Any) -> None:
            heard.append(args[2])

        async def check_on_hearing() -> None:
            nonlocal seen_jobs
            while not heard:
                await asyncio.sleep(0.01)
            seen_jobs = await listener.fetchval("SELECT count(*) FROM delivery_jobs")

        try:
            await listener.add_listener(NOTIFY_CHANNEL, on_notify)

            async def enqueue(conn: AsyncConnection) -> None:
                repo = DeliveryRepository(conn)
                await repo.enqueue(
                    job_id="j" * 32,
                    user_id=None,
                    notification="password-reset-token",
                    locale="en",
                    sealed_payload=b"x",
                    expires_at=None,
                    now=NOW,
                )
                await repo.wake_workers()

            waiting = asyncio.create_task(check_on_hearing())
            await db.write_batched(enqueue)
            await asyncio.wait_for(waiting, 10)
        finally:
            await listener.close()
            await db.close()
        return heard, seen_jobs

    heard, seen_jobs = asyncio.run(scenario())
    assert heard == [NOTIFY_CHANNEL]
    assert seen_jobs == 1  # the job was there when the workers were told
