"""Reading and writing the delivery log straight through the repository, for tests that
need a job in a given state (a Postmark job without a Postmark stand-in, a failed job
with a message id, an old job) or want to see what a webhook did."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from resetflow.config import Settings
from resetflow.services import build_services
from resetflow.storage.deliveries import DeliveryAttempt, DeliveryJob, DeliveryRepository
from resetflow.storage.tables import delivery_jobs


def put_job(
    settings: Settings,
    *,
    status: str = "sent",
    channel: str = "email",
    provider: str = "postmark",
    destination: str = "a***@example.com",
    provider_message_id: str | None = None,
    notification: str = "password-reset-token",
    age: timedelta = timedelta(0),
    keep_payload: bool = False,
    expires_in: timedelta | None = None,
    due_in: timedelta = timedelta(0),
    last_error: str | None = None,
) -> str:
    """A job in ``status`` with one attempt (``sent`` when it has a message id, else
    ``failed``); its sealed payload is a stand-in, erased unless ``keep_payload``."""

    async def put() -> str:
        services = build_services(settings)
        job_id = secrets.token_hex(16)
        now = datetime.now(UTC)
        created = now - age
        try:
            async with services.database.write() as conn:
                repo = DeliveryRepository(conn)
                await repo.enqueue(
                    job_id=job_id,
                    user_id=None,
                    notification=notification,
                    locale="en",
                    sealed_payload=b"not a real sealed payload",
                    expires_at=now + expires_in if expires_in is not None else None,
                    now=created,
                )
                await conn.execute(
                    update(delivery_jobs)
                    .where(delivery_jobs.c.id == job_id)
                    .values(
                        status=status,
                        channel=channel,
                        provider=provider,
                        provider_message_id=provider_message_id,
                        sealed_payload=b"not a real sealed payload" if keep_payload else None,
                        next_attempt_at=now + due_in,
                        last_error=last_error,
                    )
                )
                await repo.record_attempt(
                    job_id=job_id,
                    channel=channel,
                    provider=provider,
                    destination=destination,
                    status="sent" if provider_message_id else "failed",
                    provider_message_id=provider_message_id,
                    error=last_error,
                    now=created,
                )
            return job_id
        finally:
            await services.close()

    return asyncio.run(put())


def read_job(settings: Settings, job_id: str) -> tuple[DeliveryJob, list[DeliveryAttempt]]:
    async def read() -> tuple[DeliveryJob, list[DeliveryAttempt]]:
        services = build_services(settings)
        try:
            async with services.database.read() as conn:
                repo = DeliveryRepository(conn)
                job = await repo.get(job_id)
                assert job is not None, job_id
                return job, await repo.attempts(job_id)
        finally:
            await services.close()

    return asyncio.run(read())


def wait_for_job(
    settings: Settings, *, provider: str, status: str = "sent", timeout: float = 15
) -> DeliveryJob:
    """The newest job ``provider`` took, once it is in ``status``."""

    async def wait() -> DeliveryJob:
        services = build_services(settings)
        try:
            deadline = time.monotonic() + timeout
            while True:
                async with services.database.read() as conn:
                    jobs = await DeliveryRepository(conn).list_jobs(limit=5, provider=provider)
                if jobs and jobs[0].status == status:
                    return jobs[0]
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {status} job for {provider}: {jobs}")
                await asyncio.sleep(0.05)
        finally:
            await services.close()

    return asyncio.run(wait())
