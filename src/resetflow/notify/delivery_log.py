"""The delivery log as operators and providers see it: one service for every read or
change of delivery jobs that does not come from the outbox or the worker.

Its callers: the operators' page (web/admin.py) and ``resetflow deliveries`` (cli/) list,
count, show and retry jobs; the provider webhooks (web/webhooks.py) record what a
provider reported; ``/readyz`` (app.py) and ``/metrics`` (web/metrics.py) read the
backlog. Queueing a job is the outbox's (notify/outbox.py), claiming and closing one the
worker's (notify/worker.py).

What it never does: open a sealed payload (it holds no key), show a destination other than
masked as the log stores it, or show decoys (the jobs written for unknown accounts) in
the log — only the backlog counts them, on purpose (R19).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from resetflow.clock import Clock
from resetflow.storage.database import Database
from resetflow.storage.deliveries import (
    DECOY,
    DeliveryAttempt,
    DeliveryJob,
    DeliveryRepository,
    JobStatus,
    ReportOutcome,
)


@dataclass(frozen=True, slots=True)
class LoggedJob:
    """A job in the log, with the masked destination of its latest attempt (None before
    any attempt)."""

    job: DeliveryJob
    destination: str | None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job and every attempt on it, oldest first (provider reports included)."""

    job: DeliveryJob
    attempts: list[DeliveryAttempt]


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the workers have yet to do: message jobs waiting (decoys included) or being
    sent; events for the host app are left out (a receiver that is down must not make
    resetflow unready)."""

    # Jobs queued or being sent; None when not asked for.
    pending: int | None
    # When the oldest job still waiting for a worker was written; None: none waits.
    oldest_queued_at: datetime | None

    def lag_seconds(self, now: datetime) -> float:
        """How long the oldest waiting job has waited (0 when none waits)."""
        if self.oldest_queued_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_queued_at).total_seconds())


class RetryRefusal(StrEnum):
    """Why an operator's retry did not make a job due."""

    NO_SUCH_JOB = "no_such_job"
    # Ended: its sealed payload (and any code in it) was erased, by design.
    FAILED = "failed"
    ACCEPTED = "accepted"  # sent, delivered or undeliverable: the provider took it
    SENDING = "sending"  # a worker has it right now
    NO_PAYLOAD = "no_payload"
    CODE_EXPIRED = "code_expired"
    # It was retryable when read, and no longer when changed (a worker took it).
    CHANGED = "changed"


class RetryRefused(Exception):
    """:meth:`DeliveryLog.retry` did not make the job due: ``reason`` says why; ``job`` is
    the job as read (None for :attr:`RetryRefusal.NO_SUCH_JOB`)."""

    def __init__(self, reason: RetryRefusal, job: DeliveryJob | None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.job = job


class DeliveryLog:
    """Reads and operator/provider changes of delivery jobs, each in its own transaction.

    ``clock`` gives "now" for reports, retries and the per-status windows, so that tests
    can freeze it.
    """

    def __init__(self, *, database: Database, clock: Clock) -> None:
        self._database = database
        self._clock = clock

    async def search(
        self,
        *,
        limit: int = 50,
        status: JobStatus | None = None,
        channel: str | None = None,
        provider: str | None = None,
    ) -> list[LoggedJob]:
        """Up to ``limit`` jobs, newest first, matching every filter given (decoys never)."""
        async with self._database.read() as conn:
            repo = DeliveryRepository(conn)
            jobs = await repo.list_jobs(
                limit=limit, status=status, channel=channel, provider=provider
            )
            destinations = await repo.last_destinations([job.id for job in jobs])
        return [LoggedJob(job=job, destination=destinations.get(job.id)) for job in jobs]

    async def status_counts(self, *windows: timedelta) -> list[dict[str, int]]:
        """For each window, the jobs created within it (up to now) per status; a status
        with no job is absent; decoys are never counted."""
        now = self._clock.now()
        async with self._database.read() as conn:
            repo = DeliveryRepository(conn)
            return [await repo.count_by_status(since=now - window) for window in windows]

    async def read(self, job_id: str) -> JobRecord | None:
        """The job and its attempts; None for an unknown id or a decoy."""
        async with self._database.read() as conn:
            repo = DeliveryRepository(conn)
            job = await repo.get(job_id)
            if job is None or job.status == DECOY:
                return None
            return JobRecord(job=job, attempts=await repo.attempts(job_id))

    async def retry(self, job_id: str) -> DeliveryJob:
        """Make a ``queued`` job waiting out its backoff due now, and wake the workers.

        Returns the job as it was before (its ``next_attempt_at`` the time it would have
        been tried). Raises :class:`RetryRefused` for a job that cannot be sent again: one
        that ended (its sealed payload was erased when it did), one a worker is sending,
        one without a payload or whose code expired, or one that changed meanwhile.
        """
        record = await self.read(job_id)
        if record is None:
            raise RetryRefused(RetryRefusal.NO_SUCH_JOB, None)
        job = record.job
        now = self._clock.now()
        reason = _why_not(job, now)
        if reason is not None:
            raise RetryRefused(reason, job)
        async with self._database.write() as conn:
            repo = DeliveryRepository(conn)
            if not await repo.retry_now(job.id, now=now):
                raise RetryRefused(RetryRefusal.CHANGED, job)
            await repo.wake_workers()
        return job

    async def record_report(
        self, *, provider: str, provider_message_id: str, status: JobStatus | None, report: str
    ) -> ReportOutcome | None:
        """Apply a provider's report (a webhook) on the job it sent as
        ``provider_message_id``; None when no job of ``provider`` has that id.

        ``status`` (``delivered`` or ``undeliverable``; None for a report that settles
        nothing) is set only on a job that is ``sent``: reports move jobs forward, never
        back, and the first final report wins. Every report on a known job is kept as a
        ``webhook`` attempt saying what was reported.
        """
        async with self._database.write() as conn:
            return await DeliveryRepository(conn).apply_report(
                provider=provider,
                provider_message_id=provider_message_id,
                status=status,
                report=report,
                now=self._clock.now(),
            )

    async def backlog(self, *, count: bool = True) -> Backlog:
        """The workers' backlog; ``count=False`` skips counting the pending jobs (only the
        oldest waiting one is read)."""
        async with self._database.read() as conn:
            repo = DeliveryRepository(conn)
            pending = await repo.count_pending() if count else None
            oldest = await repo.oldest_queued_at()
        return Backlog(pending=pending, oldest_queued_at=oldest)


def _why_not(job: DeliveryJob, now: datetime) -> RetryRefusal | None:
    if job.status == JobStatus.FAILED:
        return RetryRefusal.FAILED
    if job.status in (JobStatus.SENT, JobStatus.DELIVERED, JobStatus.UNDELIVERABLE):
        return RetryRefusal.ACCEPTED
    if job.status == JobStatus.SENDING:
        return RetryRefusal.SENDING
    if job.sealed_payload is None:
        return RetryRefusal.NO_PAYLOAD
    if job.expires_at is not None and job.expires_at <= now:
        return RetryRefusal.CODE_EXPIRED
    return None
