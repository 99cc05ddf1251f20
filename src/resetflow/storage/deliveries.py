"""The durable outbox (``delivery_jobs``) and the delivery log (``delivery_attempts``).

A job is written in the same transaction as whatever made it necessary (a new code), so
an answer the client saw always has its job on disk. Workers claim due jobs under a lease;
a job whose lease ran out (its worker died) is due again.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, bindparam, case, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.storage import batch
from resetflow.storage.prepared import Prepared
from resetflow.storage.tables import UtcDateTime, delivery_attempts, delivery_jobs


class JobStatus(StrEnum):
    """A delivery job's status, in the order of its life (SPEC §5)."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    # Set by provider webhooks (web/webhooks.py), only ever on a job that is ``sent``; and
    # on an event job (channel ``webhook``) when the host application answered 2xx.
    DELIVERED = "delivered"
    FAILED = "failed"
    UNDELIVERABLE = "undeliverable"


# The PostgreSQL channel worker processes LISTEN on (notify/listener.py).
NOTIFY_CHANNEL = "resetflow_outbox"

# Every status a real job can have, in the order of its life (the delivery log's filters).
JOB_STATUSES = tuple(JobStatus)
# The providers a job can name (notify/providers/), for the delivery log's filters.
PROVIDERS = ("console", "courier", "outbox", "postmark", "smtp", "twilio", "webhook")
# The channel of events for the host application (notify/events.py), set when queued.
EVENT_CHANNEL = "webhook"
# The attempt status of a provider's report; what it said is in the attempt's ``error``.
WEBHOOK = "webhook"
# A job's ``last_error`` once a claim took it over from a worker whose lease ran out (it
# stopped while sending: the message may or may not have gone out), until its next outcome.
LEASE_LOST = "lease ran out: the worker sending it stopped; the message may have gone out"
# The status of the attempt the next worker records for that (notify/worker.py).
INTERRUPTED = "interrupted"
# Written for unknown accounts so that they cost what real requests cost; a worker claims
# and renders them like real jobs, then drops them unsent.
DECOY = "decoy"


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    id: str
    user_id: str | None
    notification: str
    locale: str
    status: str
    sealed_payload: bytes | None
    route_index: int
    tries: int
    expires_at: datetime | None
    channel: str | None
    provider: str | None
    provider_message_id: str | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What a provider's report did: the job's status before and after it."""

    job_id: str
    previous: str
    status: str
    moved: bool


@dataclass(frozen=True, slots=True)
class SentJob:
    """A job its worker has sent: closed by :meth:`DeliveryRepository.close_sent`."""

    job_id: str
    channel: str
    provider: str
    destination: str  # masked (accounts/contacts.py)
    provider_message_id: str | None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    job_id: str
    channel: str
    provider: str
    destination: str
    status: str
    provider_message_id: str | None
    error: str | None
    created_at: datetime


# Built once (parameters passed at execution): every /send-token enqueues a job, and
# every delivery records an attempt and closes or drops its job.
_INSERT_JOB = Prepared(insert(delivery_jobs))
_INSERT_ATTEMPT = Prepared(insert(delivery_attempts))
_LEASED_BY = (delivery_jobs.c.id == bindparam("job_id")) & (
    delivery_jobs.c.lease_owner == bindparam("owner")
)
_UPDATE_LEASED = Prepared(update(delivery_jobs).where(_LEASED_BY))
_DISCARD = Prepared(delete(delivery_jobs).where(_LEASED_BY))


def _due(limit: int) -> Select[tuple[str]]:
    """The ids of up to ``limit`` due jobs, oldest first: queued (or decoy) and due at
    ``:now``, or sending with a lease that ran out. Spelled without IN (…) so that the
    statement is the same on every call (storage/prepared.py)."""
    jobs = delivery_jobs.c
    now = bindparam("now", type_=UtcDateTime())
    due = (
        ((jobs.status == JobStatus.QUEUED) | (jobs.status == DECOY)) & (jobs.next_attempt_at <= now)
    ) | ((jobs.status == JobStatus.SENDING) & (jobs.lease_until <= now))
    return (
        select(jobs.id)
        .where(due)
        .order_by(jobs.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


# Set from the row's old values: a job still ``sending`` when claimed had a lease that ran out.
_LAST_ERROR_ON_CLAIM = case(
    (delivery_jobs.c.status == JobStatus.SENDING, LEASE_LOST), else_=delivery_jobs.c.last_error
)
# ... and that lost try counts: a job that stops its worker every time it is sent (a crash
# in a provider, say) ends after max_tries instead of being claimed again for ever.
_TRIES_ON_CLAIM = case(
    (delivery_jobs.c.status == JobStatus.SENDING, delivery_jobs.c.tries + 1),
    else_=delivery_jobs.c.tries,
)


@functools.cache
def _claim_statement(limit: int) -> Prepared:
    """Lease the due jobs to ``:owner`` until ``:lease_until`` and return them (one per
    batch size: a worker's batch size does not change)."""
    return Prepared(
        update(delivery_jobs)
        .where(delivery_jobs.c.id.in_(_due(limit).scalar_subquery()))
        .values(
            status=JobStatus.SENDING,
            lease_owner=bindparam("owner"),
            lease_until=bindparam("lease_until", type_=UtcDateTime()),
            updated_at=bindparam("now", type_=UtcDateTime()),
            last_error=_LAST_ERROR_ON_CLAIM,
            tries=_TRIES_ON_CLAIM,
        )
        .returning(*delivery_jobs.c)
    )


class DeliveryRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def wake_workers(self) -> None:
        """On PostgreSQL, every worker process LISTENing hears at commit that jobs are
        due (notify/listener.py); elsewhere nothing: the in-process worker is woken by
        :meth:`Outbox.wake`."""
        await batch.notify(self._conn, NOTIFY_CHANNEL)  # with the batch if one is open

    async def enqueue(
        self,
        *,
        job_id: str,
        user_id: str | None,
        notification: str,
        locale: str,
        sealed_payload: bytes,
        expires_at: datetime | None,
        now: datetime,
        status: str = JobStatus.QUEUED,
        channel: str | None = None,
        provider: str | None = None,
    ) -> None:
        # Channel and provider are known up front only for events (notify/events.py);
        # messages learn theirs when sent, and their insert keeps its one set of columns.
        known = {"channel": channel, "provider": provider} if channel or provider else {}
        await batch.write(  # with the batch if one is open (storage/batch.py)
            self._conn,
            _INSERT_JOB,
            {
                **known,
                "id": job_id,
                "user_id": user_id,
                "notification": notification,
                "locale": locale,
                "status": status,
                "sealed_payload": sealed_payload,
                "next_attempt_at": now,
                "expires_at": expires_at,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def claim_due(
        self, *, owner: str, now: datetime, lease_seconds: int, limit: int
    ) -> list[DeliveryJob]:
        """Lease up to ``limit`` due jobs to ``owner`` and return them.

        Due: queued (or decoy) with ``next_attempt_at <= now``, or sending with an
        expired lease; such a job comes back with ``last_error`` :data:`LEASE_LOST` and one
        more try counted (the interrupted one).
        On PostgreSQL the candidate rows are locked with ``FOR UPDATE SKIP LOCKED`` so
        concurrent workers take different jobs; SQLite serialises writers anyway.
        """
        if self._conn.dialect.update_returning:
            # One statement (PostgreSQL; SQLite 3.35+): the classic SKIP LOCKED queue pop,
            # run directly on SQLite (storage/prepared.py).
            rows = await _claim_statement(limit).rows(
                self._conn,
                {
                    "now": now,
                    "owner": owner,
                    "lease_until": now + timedelta(seconds=lease_seconds),
                },
            )
            return [_to_job(row) for row in rows]
        # An older SQLite without RETURNING: three statements (SQLite serialises writers).
        ids = [row[0] for row in await self._conn.execute(_due(limit), {"now": now})]
        if not ids:
            return []
        await self._conn.execute(
            update(delivery_jobs)
            .where(delivery_jobs.c.id.in_(ids))
            .values(
                status=JobStatus.SENDING,
                lease_owner=owner,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
                last_error=_LAST_ERROR_ON_CLAIM,
                tries=_TRIES_ON_CLAIM,
            )
        )
        leased = await self._conn.execute(select(delivery_jobs).where(delivery_jobs.c.id.in_(ids)))
        return [_to_job(row._mapping) for row in leased]

    async def record_attempt(
        self,
        *,
        job_id: str,
        channel: str,
        provider: str,
        destination: str,
        status: str,
        provider_message_id: str | None,
        error: str | None,
        now: datetime,
    ) -> None:
        await _INSERT_ATTEMPT.execute(
            self._conn,
            {
                "job_id": job_id,
                "channel": channel,
                "provider": provider,
                "destination": destination,
                "status": status,
                "provider_message_id": provider_message_id,
                "error": error,
                "created_at": now,
            },
        )

    async def finish(
        self,
        job_id: str,
        *,
        owner: str,
        status: str,
        now: datetime,
        channel: str | None = None,
        provider: str | None = None,
        provider_message_id: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Close a job for good and erase its sealed payload (and so the code in it)."""
        return await self._update_leased(
            job_id,
            owner,
            status=status,
            sealed_payload=None,
            lease_owner=None,
            lease_until=None,
            channel=channel,
            provider=provider,
            provider_message_id=provider_message_id,
            last_error=error,
            updated_at=now,
        )

    async def reschedule(
        self,
        job_id: str,
        *,
        owner: str,
        route_index: int,
        tries: int,
        next_attempt_at: datetime,
        error: str | None,
        now: datetime,
    ) -> bool:
        """Put a job back in the queue for a later try (backoff or the next channel)."""
        return await self._update_leased(
            job_id,
            owner,
            status=JobStatus.QUEUED,
            route_index=route_index,
            tries=tries,
            next_attempt_at=next_attempt_at,
            lease_owner=None,
            lease_until=None,
            last_error=error,
            updated_at=now,
        )

    async def close_sent(self, sent: Sequence[SentJob], *, owner: str, now: datetime) -> None:
        """Record each job's ``sent`` attempt and close it as :meth:`finish` would: two
        statements for the whole batch (executemany, one round trip each on PostgreSQL).
        A job whose lease ``owner`` lost keeps its newer outcome; its attempt is logged."""
        if not sent:
            return
        await _INSERT_ATTEMPT.execute_many(
            self._conn,
            [
                {
                    "job_id": one.job_id,
                    "channel": one.channel,
                    "provider": one.provider,
                    "destination": one.destination,
                    "status": JobStatus.SENT,
                    "provider_message_id": one.provider_message_id,
                    "error": None,
                    "created_at": now,
                }
                for one in sent
            ],
        )
        await _UPDATE_LEASED.execute_many(
            self._conn,
            [
                {
                    "job_id": one.job_id,
                    "owner": owner,
                    "status": JobStatus.SENT,
                    "sealed_payload": None,
                    "lease_owner": None,
                    "lease_until": None,
                    "channel": one.channel,
                    "provider": one.provider,
                    "provider_message_id": one.provider_message_id,
                    "last_error": None,
                    "updated_at": now,
                }
                for one in sent
            ],
        )

    async def discard_many(self, job_ids: Sequence[str], *, owner: str) -> None:
        """:meth:`discard` for several decoys, in one statement."""
        await _DISCARD.execute_many(
            self._conn, [{"job_id": job_id, "owner": owner} for job_id in job_ids]
        )

    async def newest_queued(self, *, user_id: str, notification: str) -> str | None:
        """The id of ``user_id``'s newest ``queued`` job of this kind, if any (the one a
        new courier-profile snapshot replaces, notify/outbox.py)."""
        jobs = delivery_jobs.c
        found = await self._conn.execute(
            select(jobs.id)
            .where(
                (jobs.user_id == user_id)
                & (jobs.notification == notification)
                & (jobs.status == JobStatus.QUEUED)
            )
            .order_by(jobs.created_at.desc(), jobs.id.desc())
            .limit(1)
        )
        job_id: str | None = found.scalar_one_or_none()
        return job_id

    async def replace_queued(self, job_id: str, *, sealed_payload: bytes, now: datetime) -> bool:
        """Give a job still ``queued`` (no worker holds it) a new payload, due now with
        its tries reset; ``False`` when a worker took it meanwhile (or it is gone)."""
        result = await self._conn.execute(
            update(delivery_jobs)
            .where((delivery_jobs.c.id == job_id) & (delivery_jobs.c.status == JobStatus.QUEUED))
            .values(
                sealed_payload=sealed_payload,
                tries=0,
                route_index=0,
                next_attempt_at=now,
                updated_at=now,
            )
        )
        return result.rowcount == 1

    async def in_flight_before(self, job: DeliveryJob, *, now: datetime) -> bool:
        """Whether another job of ``job``'s user and kind, written before it, is being
        sent (``sending`` under a live lease): per-user order for courier-profile jobs."""
        jobs = delivery_jobs.c
        earlier = (jobs.created_at < job.created_at) | (
            (jobs.created_at == job.created_at) & (jobs.id < job.id)
        )
        found = await self._conn.execute(
            select(jobs.id)
            .where(
                (jobs.user_id == job.user_id)
                & (jobs.notification == job.notification)
                & (jobs.id != job.id)
                & (jobs.status == JobStatus.SENDING)
                & (jobs.lease_until > now)
                & earlier
            )
            .limit(1)
        )
        return found.first() is not None

    async def _update_leased(self, job_id: str, owner: str, **values: Any) -> bool:
        # Only the lease holder may move a job on: a worker that lost its lease (it was
        # too slow and another took over) must not overwrite the newer outcome.
        # The values go as execution parameters of a statement built once (SQLAlchemy
        # caches its compiled form per set of columns): every delivery passes here.
        moved = await _UPDATE_LEASED.execute(
            self._conn, {"job_id": job_id, "owner": owner, **values}
        )
        return moved == 1

    async def discard(self, job_id: str, *, owner: str) -> None:
        """Drop a decoy job its worker has finished pretending to send."""
        await _DISCARD.execute(self._conn, {"job_id": job_id, "owner": owner})

    async def purge_decoys(self, *, before: datetime) -> int:
        result = await self._conn.execute(
            delete(delivery_jobs).where(
                (delivery_jobs.c.status == DECOY) & (delivery_jobs.c.created_at < before)
            )
        )
        return result.rowcount

    async def get(self, job_id: str) -> DeliveryJob | None:
        row = (
            await self._conn.execute(select(delivery_jobs).where(delivery_jobs.c.id == job_id))
        ).first()
        return _to_job(row._mapping) if row else None

    async def list_jobs(
        self,
        *,
        limit: int = 50,
        user_id: str | None = None,
        status: str | None = None,
        channel: str | None = None,
        provider: str | None = None,
    ) -> list[DeliveryJob]:
        """The newest jobs first (decoys never), optionally only those matching."""
        query = (
            select(delivery_jobs)
            .where(delivery_jobs.c.status != DECOY)
            .order_by(delivery_jobs.c.created_at.desc(), delivery_jobs.c.id)
            .limit(limit)
        )
        if user_id is not None:
            query = query.where(delivery_jobs.c.user_id == user_id)
        if status is not None:
            query = query.where(delivery_jobs.c.status == status)
        if channel is not None:
            query = query.where(delivery_jobs.c.channel == channel)
        if provider is not None:
            query = query.where(delivery_jobs.c.provider == provider)
        return [_to_job(row._mapping) for row in await self._conn.execute(query)]

    async def count_by_status(self, *, since: datetime) -> dict[str, int]:
        """Jobs created since ``since``, per status (decoys never counted)."""
        query = (
            select(delivery_jobs.c.status, func.count())
            .where((delivery_jobs.c.created_at >= since) & (delivery_jobs.c.status != DECOY))
            .group_by(delivery_jobs.c.status)
        )
        return {str(status): int(count) for status, count in await self._conn.execute(query)}

    async def last_destinations(self, job_ids: list[str]) -> dict[str, str]:
        """The (masked) destination of each job's latest attempt."""
        if not job_ids:
            return {}
        rows = await self._conn.execute(
            select(delivery_attempts.c.job_id, delivery_attempts.c.destination)
            .where(delivery_attempts.c.job_id.in_(job_ids))
            .order_by(delivery_attempts.c.id)
        )
        return {str(job_id): str(destination) for job_id, destination in rows}

    async def apply_report(
        self,
        *,
        provider: str,
        provider_message_id: str,
        status: str | None,
        report: str,
        now: datetime,
    ) -> ReportOutcome | None:
        """Apply a provider's report (a webhook) on the job it sent as
        ``provider_message_id``; ``None`` when there is no such job.

        ``status`` (``delivered`` or ``undeliverable``; ``None`` for a report that settles
        nothing) is set only on a job that is ``sent``: reports move jobs forward, never
        back, and the first final report wins. Every report on a known job is kept in
        the delivery log as a ``webhook`` attempt whose ``error`` says what was reported.
        """
        row = (
            await self._conn.execute(
                select(delivery_jobs.c.id, delivery_jobs.c.status, delivery_jobs.c.channel)
                .where(
                    (delivery_jobs.c.provider_message_id == provider_message_id)
                    & (delivery_jobs.c.provider == provider)
                    & (delivery_jobs.c.status != DECOY)
                )
                .order_by(delivery_jobs.c.created_at.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        job_id, previous, channel = str(row[0]), str(row[1]), row[2]
        moved = False
        if status is not None:
            values: dict[str, Any] = {"status": status, "updated_at": now}
            if status == JobStatus.UNDELIVERABLE:
                values["last_error"] = report[:500]
            result = await self._conn.execute(
                update(delivery_jobs)
                .where((delivery_jobs.c.id == job_id) & (delivery_jobs.c.status == JobStatus.SENT))
                .values(**values)
            )
            moved = result.rowcount == 1
        destination = (
            await self._conn.execute(
                select(delivery_attempts.c.destination)
                .where(
                    (delivery_attempts.c.job_id == job_id)
                    & (delivery_attempts.c.provider_message_id == provider_message_id)
                )
                .order_by(delivery_attempts.c.id)
                .limit(1)
            )
        ).scalar_one_or_none()
        note = report if moved else f"{report}; no change (job {previous})"
        await self.record_attempt(
            job_id=job_id,
            channel=str(channel or "-"),
            provider=provider,
            destination=str(destination or "-"),
            status=WEBHOOK,
            provider_message_id=provider_message_id,
            error=note[:500],
            now=now,
        )
        return ReportOutcome(
            job_id=job_id,
            previous=previous,
            status=status if moved and status is not None else previous,
            moved=moved,
        )

    async def retry_now(self, job_id: str, *, now: datetime) -> bool:
        """Make a job waiting out its backoff due now. Only a ``queued`` job whose sealed
        payload still exists and whose code has not expired qualifies: a job that ended
        (sent, failed, ...) had its payload erased and can never be sent again."""
        result = await self._conn.execute(
            update(delivery_jobs)
            .where(
                (delivery_jobs.c.id == job_id)
                & (delivery_jobs.c.status == JobStatus.QUEUED)
                & delivery_jobs.c.sealed_payload.is_not(None)
                & (delivery_jobs.c.expires_at.is_(None) | (delivery_jobs.c.expires_at > now))
            )
            .values(next_attempt_at=now, updated_at=now)
        )
        return result.rowcount == 1

    async def attempts(self, job_id: str) -> list[DeliveryAttempt]:
        rows = await self._conn.execute(
            select(delivery_attempts)
            .where(delivery_attempts.c.job_id == job_id)
            .order_by(delivery_attempts.c.id)
        )
        return [
            DeliveryAttempt(
                job_id=m["job_id"],
                channel=m["channel"],
                provider=m["provider"],
                destination=m["destination"],
                status=m["status"],
                provider_message_id=m["provider_message_id"],
                error=m["error"],
                created_at=m["created_at"],
            )
            for m in (row._mapping for row in rows)
        ]

    async def oldest_queued_at(self) -> datetime | None:
        """When the oldest job still waiting for a worker was written (outbox lag).

        Decoys included, here and in :meth:`count_pending`: a worker handles them like
        real jobs, and /readyz is public, so its figures must move alike after a request
        for a known and for an unknown contact (R19).
        """
        waiting = delivery_jobs.c.status.in_([JobStatus.QUEUED, DECOY]) & _NOT_EVENT
        query = select(func.min(delivery_jobs.c.created_at)).where(waiting)
        oldest: datetime | None = (await self._conn.execute(query)).scalar_one_or_none()
        return oldest

    async def count_pending(self) -> int:
        """Jobs a worker has yet to finish: waiting (decoys too) or being sent."""
        pending = (
            delivery_jobs.c.status.in_([JobStatus.QUEUED, DECOY, JobStatus.SENDING]) & _NOT_EVENT
        )
        return int((await self._conn.execute(select(func.count()).where(pending))).scalar_one())


# Events for the host app are left out of the outbox's lag and depth (/readyz, metrics):
# a receiver that is down must not make resetflow unready, and the count of events
# queued by a sign-up must not tell a new account from a taken contact (R19, R52).
_NOT_EVENT = delivery_jobs.c.channel.is_(None) | (delivery_jobs.c.channel != EVENT_CHANNEL)


def _to_job(m: Any) -> DeliveryJob:
    return DeliveryJob(
        id=m["id"],
        user_id=m["user_id"],
        notification=m["notification"],
        locale=m["locale"],
        status=m["status"],
        sealed_payload=bytes(m["sealed_payload"]) if m["sealed_payload"] is not None else None,
        route_index=m["route_index"],
        tries=m["tries"],
        expires_at=m["expires_at"],
        channel=m["channel"],
        provider=m["provider"],
        provider_message_id=m["provider_message_id"],
        last_error=m["last_error"],
        created_at=m["created_at"],
        next_attempt_at=m["next_attempt_at"],
        updated_at=m["updated_at"],
    )
