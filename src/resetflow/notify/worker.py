"""The delivery worker: claims due outbox jobs, renders, sends, retries, fails over.

Order of attempts for one job: its routes in order (preferred channel, then the other
verified one); on each route, the channel's providers in order. A retryable failure on
every provider of a route puts the job back with exponential backoff and full jitter (a
random delay between a small floor and ``backoff_seconds * 2 ** (tries - 1)``), up to
``max_tries`` times on that route; a permanent failure, or running out of tries, moves on
to the next route. A retry is never scheduled at or after the code's expiry: when it
would be, the next route is tried at once (or, with none left, the job fails with "code
expired before a retry"). A failure about the recipient (``ProviderError.recipient``: an inactive
address, an unsubscribed number) skips the route's other providers and moves on at once.
Every attempt is written to the delivery log, without the message; a job whose worker
stopped while sending it (its lease ran out) gets an ``interrupted`` attempt from the
worker that takes it over, before that one's own. The outcomes of a claimed batch's sent
jobs are written together (notify/outcomes.py).

A provider that failed ``uncertain`` (no answer came: it may have accepted the message)
says so in its logged attempt (``OUTCOME_UNKNOWN``). Before that provider is used again
for the job, the worker asks it whether it has the message after all
(:meth:`Provider.find_accepted`, from ``LOOKUP_SKEW`` before the job was written): if so
the job is recorded as sent with that message id, and nothing is sent twice. Nor does
the round go on to the route's next provider after such a failure (that could be a second
message): the job is retried, and when the look-up says the message did not go out, the
next provider, if there is one, takes over.

A ``courier-profile`` job is not a message: its one route is ``PROFILE_ROUTE``, and it
merges the account's profile, as it is when the job runs, into Courier
(:meth:`CourierProvider.merge_profile`), with the same backoff for retryable errors; a
permanent one fails the job with the reason. A user's profile jobs merge one at a time in
the order they were written (a job waits ``PROFILE_WAIT`` while an earlier one is in
flight), so an older profile never lands after a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random as _random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.contacts import mask
from resetflow.accounts.models import Channel
from resetflow.audit import AuditEvent, AuditLog
from resetflow.clock import Clock
from resetflow.metrics import Metrics
from resetflow.notify.events import Events, UserDeletedReason
from resetflow.notify.messages import Notification, RenderedMessage, Route
from resetflow.notify.outbox import DECOY_ROUTE, PROFILE_ROUTE, Outbox, courier_profile
from resetflow.notify.outcomes import DEFAULT_LINGER_SECONDS, BatchOutcomes
from resetflow.notify.providers.base import (
    OUTCOME_UNKNOWN,
    ProfileSync,
    Provider,
    ProviderError,
    SendResult,
)
from resetflow.notify.sms_guard import SmsGuard
from resetflow.notify.templates import TemplateRenderer
from resetflow.notify.webhooks_out import WebhookSender
from resetflow.storage.codes import CodeRepository
from resetflow.storage.database import Database
from resetflow.storage.deliveries import (
    INTERRUPTED,
    LEASE_LOST,
    DeliveryJob,
    DeliveryRepository,
    JobStatus,
    SentJob,
)
from resetflow.storage.sessions import SessionStore
from resetflow.storage.users import UserRepository

log = logging.getLogger("resetflow.delivery")
# Messages that carry a code: their sending is an audit event (R43).
CODE_NOTIFICATIONS = frozenset(
    {Notification.PASSWORD_RESET_TOKEN.value, Notification.VERIFY_CONTACT.value}
)

# How far before a job was written a provider's copy of its message may seem to have been
# created: the provider's clock is not ours, and its times have whole seconds.
LOOKUP_SKEW = timedelta(seconds=60)
# The most a separate worker process (``resetflow worker``) waits after a wake before it
# claims, while not behind: jobs arriving meanwhile share its claim and outcome writes.
GATHER_SECONDS = 0.02
# How long a courier-profile job waits while an earlier one of the same user is in flight.
PROFILE_WAIT = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class WorkerPolicy:
    max_tries: int = 4
    backoff_seconds: float = 2.0
    lease_seconds: int = 60
    poll_seconds: float = 1.0
    batch_size: int = 20
    housekeeping_seconds: float = 60.0
    # The least delay a jittered retry waits (unless the backoff itself is smaller).
    min_backoff_seconds: float = 0.05
    # How long a sent job's outcome waits for the rest of its batch (notify/outcomes.py).
    outcome_linger_seconds: float = DEFAULT_LINGER_SECONDS

    def retry_delay(self, tries: int, *, random: Callable[[], float] = _random.random) -> float:
        """Seconds to wait before try ``tries + 1`` after ``tries`` failed ones: full
        jitter, ``random() * backoff_seconds * 2 ** (tries - 1)``, at least the floor."""
        ceiling = self.backoff_seconds * 2.0 ** max(tries - 1, 0)
        return max(random() * ceiling, min(self.min_backoff_seconds, ceiling))


class DeliveryWorker:
    def __init__(
        self,
        *,
        database: Database,
        outbox: Outbox,
        providers: dict[Channel, list[Provider]],
        renderer: TemplateRenderer,
        clock: Clock,
        policy: WorkerPolicy | None = None,
        metrics: Metrics | None = None,
        sms_guard: SmsGuard | None = None,
        audit: AuditLog | None = None,
        sessions: SessionStore | None = None,
        random: Callable[[], float] | None = None,
        webhooks: WebhookSender | None = None,
        unverified_ttl: timedelta | None = None,
        events: Events | None = None,
    ) -> None:
        self._webhooks = webhooks  # events for the host app (notify/webhooks_out.py)
        self._db = database
        self._outbox = outbox
        self._providers = providers
        self._renderer = renderer
        self._clock = clock
        self._policy = policy or WorkerPolicy()
        self._metrics = metrics
        self._sms_guard = sms_guard
        self._audit = audit
        self._sessions = sessions
        # Sign-ups that verified nothing for this long are deleted (housekeeping).
        self._unverified_ttl = unverified_ttl
        # user.deleted for the sign-ups housekeeping removes (notify/events.py).
        self._events = events or Events.disabled()
        # The jitter source: a float in [0, 1); tests inject a fixed one.
        self._random = random or _random.random
        self._next_housekeeping = 0.0
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stopping = asyncio.Event()
        self._wake_delay = 0.0
        self._wake_random = _random.SystemRandom().random

    def delay_after_wake(
        self, max_seconds: float, *, random: Callable[[], float] | None = None
    ) -> None:
        """While not behind, wait a random 0..``max_seconds`` before each claim.

        For a worker in the web process (R20). Delivering a real message costs more than
        dropping a decoy (a dev-mailbox row, the delivery log, a longer turn at SQLite's
        write lock), and in a shared process that cost landed on the request right after
        a known one: 1 to 2 ms, measured by ``make bench-timing`` ("by the previous
        request's kind"). With a random delay it lands on a random later request, among
        others' work, and jobs that arrive meanwhile share the batch. A worker that is
        behind (its claim came back full) claims again at once, so throughput under load
        does not suffer.

        ``resetflow worker`` uses it too (:data:`GATHER_SECONDS`): woken by every job's
        ``NOTIFY``, it otherwise claims one job at a time under a steady load and pays
        a claim and an outcome transaction per message; a few milliseconds' wait lets
        several share them (docs/performance.md, "The worker").
        """
        self._wake_delay = max(0.0, max_seconds)
        if random is not None:
            self._wake_random = random  # tests: a fixed draw in [0, 1)

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def run(self) -> None:
        """Deliver until :meth:`stop`; wakes on :meth:`Outbox.wake` or every poll interval."""
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= self._next_housekeeping:
                    await self.housekeeping()
                    self._next_housekeeping = time.monotonic() + self._policy.housekeeping_seconds
                handled = await self.run_once()
            except Exception:
                # A database hiccup must not kill the worker; the jobs stay in the outbox.
                log.exception("delivery_worker_error")
                handled = 0
            if handled == 0:
                await self._outbox.wait(self._policy.poll_seconds)
            if self._wake_delay > 0 and handled < self._policy.batch_size:
                # Not behind: let what arrives in the next moments queue up, and deliver
                # at a moment unrelated to any one request (delay_after_wake).
                await self._sleep_unless_stopped(self._wake_random() * self._wake_delay)

    async def housekeeping(self) -> None:
        """Delete what nobody needs any more: decoy jobs, long-expired codes and sessions,
        and sign-ups that never verified a contact. Every worker process may run it at
        once: each step is one idempotent DELETE in its transaction."""
        now = self._clock.now()
        async with self._db.write() as conn:
            await DeliveryRepository(conn).purge_decoys(before=now - timedelta(minutes=10))
            await CodeRepository(conn).purge_expired(before=now - timedelta(days=1))
            if self._unverified_ttl is not None:
                expired = await UserRepository(conn).delete_never_verified(
                    created_before=now - self._unverified_ttl
                )
                if expired:
                    log.info("unverified_sign_ups_deleted", extra={"count": len(expired)})
                    await self._events.users_removed(
                        conn, expired, reason=UserDeletedReason.UNVERIFIED_EXPIRED, now=now
                    )
        if self._sessions is not None:
            await self._sessions.purge_expired(now=now)

    def stop(self) -> None:
        self._stopping.set()
        self._outbox.wake()

    async def drain(self, *, max_rounds: int = 1000) -> int:
        """Process due jobs until none are left; returns how many were handled."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.run_once()
            if handled == 0:
                break
            total += handled
        return total

    async def run_once(self) -> int:
        """Claim one batch of due jobs and process it; returns the batch size."""
        async with self._db.write() as conn:
            jobs = await DeliveryRepository(conn).claim_due(
                owner=self.owner,
                now=self._clock.now(),
                lease_seconds=self._policy.lease_seconds,
                limit=self._policy.batch_size,
            )
        self._outbox.report_claim(claimed=len(jobs), batch_size=self._policy.batch_size)
        if jobs:
            outcomes: BatchOutcomes[_Outcome] = BatchOutcomes(
                self._write_outcomes, members=len(jobs), linger=self._policy.outcome_linger_seconds
            )
            try:
                await asyncio.gather(*(self._process_in(job, outcomes) for job in jobs))
            finally:
                await outcomes.close()
        return len(jobs)

    async def _process_in(self, job: DeliveryJob, outcomes: BatchOutcomes[_Outcome]) -> None:
        try:
            await self._process(job, outcomes)
        finally:
            outcomes.leave(job.id)

    async def _write_outcomes(self, outcomes: list[_Outcome]) -> None:
        """The sent and dropped jobs of a batch, in one transaction: the attempts, the
        jobs closed, the decoys deleted, the audit records of messages that carry a code,
        each kind in one statement. On SQLite that transaction is shared with the
        process's other small writes (group commit)."""
        now = self._clock.now()
        sent = [o.sent for o in outcomes if o.sent is not None]
        dropped = [o.job.id for o in outcomes if o.sent is None]
        audited = [
            (
                o.job.user_id,
                {
                    "notification": o.job.notification,
                    "channel": o.sent.channel,
                    "provider": o.sent.provider,
                },
            )
            for o in outcomes
            if o.sent is not None and o.job.notification in CODE_NOTIFICATIONS
        ]

        async def work(conn: AsyncConnection) -> None:
            repo = DeliveryRepository(conn)
            await repo.close_sent(sent, owner=self.owner, now=now)
            if dropped:
                await repo.discard_many(dropped, owner=self.owner)
            if self._audit is not None and audited:
                await self._audit.record_many(
                    AuditEvent.CODE_SENT, outcome="sent", conn=conn, entries=audited
                )

        # Only this worker's leased jobs: no lock-order clash with another process.
        await self._db.write_coalesced(work, postgres_too=True)

    async def _process(self, job: DeliveryJob, outcomes: BatchOutcomes[_Outcome]) -> None:
        now = self._clock.now()
        if job.sealed_payload is None:
            await self._finish(job, status=JobStatus.FAILED, error="payload missing")
            return
        if job.expires_at is not None and job.expires_at <= now:
            # The code inside is dead: sending it would only confuse (and leak) (SPEC §5).
            await self._finish(job, status=JobStatus.FAILED, error="expired before sending")
            log.info("delivery_expired", extra={"job_id": job.id})
            return
        if self._webhooks is not None and self._webhooks.handles(job):
            if await self._gave_up_interrupted(job):
                return
            retry_delay = partial(self._policy.retry_delay, random=self._random)
            await self._webhooks.deliver(
                job, owner=self.owner, max_tries=self._policy.max_tries, retry_delay=retry_delay
            )
            return
        routes, context = self._outbox.open_payload(job.id, job.sealed_payload)
        if routes == [DECOY_ROUTE]:
            # A decoy: the same rendering work as a real job, then gone, never sent.
            self._renderer.render(
                job.notification,
                channel=DECOY_ROUTE.channel,
                to=DECOY_ROUTE.to,
                locale=job.locale,
                context=context,
            )
            await outcomes.add(job.id, _Outcome(job=job, sent=None))
            return
        if job.last_error == LEASE_LOST:
            # Its last worker stopped while sending it: the delivery log says so first.
            lost = (
                PROFILE_ROUTE
                if job.notification == Notification.COURIER_PROFILE.value
                else routes[min(job.route_index, len(routes) - 1)]
            )
            await self._log_interrupted(job, lost)
            if await self._gave_up_interrupted(job):
                return
            job = replace(job, last_error=None)
        if job.notification == Notification.COURIER_PROFILE.value:
            await self._merge_profile(job, context, outcomes)
            return
        route_index, tries = job.route_index, job.tries
        last_error = "no provider for channel"
        while route_index < len(routes):
            route = routes[route_index]
            outcome = await self._try_route(job, route, context, outcomes)
            if outcome is None:
                return
            retryable, last_error = outcome
            tries += 1
            if retryable and tries < self._policy.max_tries:
                delay = self._policy.retry_delay(tries, random=self._random)
                next_attempt_at = self._clock.now() + timedelta(seconds=delay)
                if job.expires_at is None or next_attempt_at < job.expires_at:
                    async with self._db.write() as conn:
                        await DeliveryRepository(conn).reschedule(
                            job.id,
                            owner=self.owner,
                            route_index=route_index,
                            tries=tries,
                            next_attempt_at=next_attempt_at,
                            error=last_error,
                            now=self._clock.now(),
                        )
                    return
                # The retry would carry a dead code: the next route now, or give up.
                last_error = f"code expired before a retry (last: {last_error})"
                log.info("delivery_retry_past_expiry", extra={"job_id": job.id})
            route_index, tries = route_index + 1, 0
        await self._finish(job, status=JobStatus.FAILED, error=last_error)
        log.warning("delivery_failed", extra={"job_id": job.id, "reason": last_error})

    async def _gave_up_interrupted(self, job: DeliveryJob) -> bool:
        """True, with the job failed, when its worker stopped while sending it on each of
        its ``max_tries`` tries (the claim counts a lost lease as a try): no more tries."""
        if job.last_error != LEASE_LOST or job.tries < self._policy.max_tries:
            return False
        reason = f"interrupted {job.tries} times: its worker stopped while sending it"
        await self._finish(job, status=JobStatus.FAILED, error=reason)
        log.warning("delivery_failed", extra={"job_id": job.id, "reason": reason})
        return True

    async def _merge_profile(
        self, job: DeliveryJob, context: dict[str, object], outcomes: BatchOutcomes[_Outcome]
    ) -> None:
        """Merge the sealed profile into Courier; reschedule a retryable failure."""
        courier = next(
            (
                p
                for providers in self._providers.values()
                for p in providers
                if isinstance(p, ProfileSync)
            ),
            None,
        )
        if courier is None or job.user_id is None or not isinstance(context.get("profile"), dict):
            reason = "no courier provider" if courier is None else "no profile to merge"
            await self._finish(job, status=JobStatus.FAILED, error=reason)
            return
        # One merge of a user at a time, in the order the jobs were written, and of the
        # account as it is now: a newer profile is never overwritten by an older one.
        async with self._db.read() as conn:
            earlier = await DeliveryRepository(conn).in_flight_before(job, now=self._clock.now())
            user = None if earlier else await UserRepository(conn).get(job.user_id)
        if earlier:
            async with self._db.write() as conn:
                await DeliveryRepository(conn).reschedule(
                    job.id,
                    owner=self.owner,
                    route_index=0,
                    tries=job.tries,
                    next_attempt_at=self._clock.now() + PROFILE_WAIT,
                    error=job.last_error,
                    now=self._clock.now(),
                )
            return
        if user is None:
            await self._finish(job, status=JobStatus.FAILED, error="no such account")
            return
        profile = courier_profile(user)
        route = PROFILE_ROUTE
        try:
            await courier.merge_profile(job.user_id, profile)
        except ProviderError as error:
            reason = f"{courier.name}: {error}"
            status = "retry" if error.retryable else "failed"
            await self._log_attempt(job, route, courier, status=status, error=reason)
            tries = job.tries + 1
            if error.retryable and tries < self._policy.max_tries:
                delay = self._policy.retry_delay(tries, random=self._random)
                async with self._db.write() as conn:
                    await DeliveryRepository(conn).reschedule(
                        job.id,
                        owner=self.owner,
                        route_index=0,
                        tries=tries,
                        next_attempt_at=self._clock.now() + timedelta(seconds=delay),
                        error=reason,
                        now=self._clock.now(),
                    )
                return
            await self._finish(job, status=JobStatus.FAILED, error=reason)
            log.warning("courier_profile_failed", extra={"job_id": job.id, "reason": reason})
            return
        await outcomes.add(job.id, _sent(job, route, courier, provider_message_id=None))
        self._count_attempt(route, courier, JobStatus.SENT)
        log.info("courier_profile_merged", extra={"job_id": job.id, "provider": courier.name})

    async def _try_route(
        self,
        job: DeliveryJob,
        route: Route,
        context: dict[str, object],
        outcomes: BatchOutcomes[_Outcome],
    ) -> tuple[bool, str] | None:
        """Send over one route; ``None`` once sent, else (any retryable?, last reason)."""
        message = self._renderer.render(
            job.notification,
            channel=route.channel,
            to=route.to,
            locale=job.locale,
            context=context,
            idempotency_key=job.id,
        )
        message = replace(
            message, recipient_id=job.user_id, variables=context, expires_at=job.expires_at
        )
        retryable, reason = False, f"no {route.channel.value} provider"
        if route.channel is Channel.SMS and self._sms_guard is not None:
            refusal = await self._sms_guard.refusal(route.to)
            if refusal is not None:
                # Not sent, not retried here: the next verified channel takes over.
                await self._log_skip(job, route, reason=refusal)
                return False, refusal
        # Providers whose earlier attempt on this route got no answer (retries only).
        unanswered = await self._unanswered(job, route) if job.tries > 0 else frozenset()
        providers = self._providers.get(route.channel, [])
        for position, provider in enumerate(providers):
            try:
                result = None
                if provider.name in unanswered:
                    result = await _find_accepted(
                        provider, message, since=job.created_at - LOOKUP_SKEW
                    )
                    if result is not None:
                        log.info(
                            "delivery_found_after_timeout",
                            extra={"job_id": job.id, "provider": provider.name},
                        )
                    elif position + 1 < len(providers):
                        # Known now not to have gone out, from a provider that left it
                        # unanswered: the next provider takes over (failover, one message).
                        retryable = True
                        continue
                if result is None:
                    result = await _send(provider, message)
            except ProviderError as error:
                retryable = retryable or error.retryable
                reason = f"{provider.name}: {error}"
                await self._log_attempt(
                    job,
                    route,
                    provider,
                    status="retry" if error.retryable else "failed",
                    error=reason,
                )
                if error.recipient:
                    # No other provider of this channel would do better: next route, now.
                    return False, reason
                if error.uncertain:
                    # It may have gone out: another provider now could be a second message.
                    # The retry looks it up first, then fails over if it did not.
                    return True, reason
                continue
            # Written with the rest of the batch's outcomes (notify/outcomes.py).
            await outcomes.add(
                job.id,
                _sent(job, route, provider, provider_message_id=result.provider_message_id),
            )
            self._count_attempt(route, provider, JobStatus.SENT)
            log.info(
                "delivery_sent",
                extra={
                    "job_id": job.id,
                    "notification": job.notification,
                    "channel": route.channel.value,
                    "provider": provider.name,
                    "to": mask(route.to),
                },
            )
            return None
        return retryable, reason

    async def _unanswered(self, job: DeliveryJob, route: Route) -> frozenset[str]:
        """The providers that may have accepted this job's message on ``route`` already:
        an earlier attempt of theirs failed with ``OUTCOME_UNKNOWN``."""
        async with self._db.read() as conn:
            attempts = await DeliveryRepository(conn).attempts(job.id)
        destination = mask(route.to)
        return frozenset(
            attempt.provider
            for attempt in attempts
            if attempt.status == "retry"
            and attempt.channel == route.channel.value
            and attempt.destination == destination
            and OUTCOME_UNKNOWN in (attempt.error or "")
        )

    async def _log_attempt(
        self, job: DeliveryJob, route: Route, provider: Provider, *, status: str, error: str
    ) -> None:
        await self._write_attempt(job, route, provider=provider.name, status=status, error=error)
        self._count_attempt(route, provider, status)
        log.warning(
            "delivery_attempt_failed",
            extra={
                "job_id": job.id,
                "provider": provider.name,
                "to": mask(route.to),
                "reason": error,
            },
        )

    async def _log_interrupted(self, job: DeliveryJob, route: Route) -> None:
        await self._write_attempt(
            job, route, provider="worker", status=INTERRUPTED, error=LEASE_LOST
        )
        log.warning("delivery_interrupted", extra={"job_id": job.id, "to": mask(route.to)})

    async def _log_skip(self, job: DeliveryJob, route: Route, *, reason: str) -> None:
        await self._write_attempt(job, route, provider="policy", status="skipped", error=reason)
        log.warning(
            "delivery_skipped", extra={"job_id": job.id, "to": mask(route.to), "reason": reason}
        )

    async def _write_attempt(
        self, job: DeliveryJob, route: Route, *, provider: str, status: str, error: str
    ) -> None:
        """One attempt that sent nothing in the delivery log, in its own transaction (the
        destination masked, never the message)."""
        async with self._db.write() as conn:
            await DeliveryRepository(conn).record_attempt(
                job_id=job.id,
                channel=route.channel.value,
                provider=provider,
                destination=mask(route.to),
                status=status,
                provider_message_id=None,
                error=error,
                now=self._clock.now(),
            )

    def _count_attempt(self, route: Route, provider: Provider, status: str) -> None:
        if self._metrics is not None:
            self._metrics.delivery_attempt(
                channel=route.channel.value, provider=provider.name, status=status
            )

    async def _finish(self, job: DeliveryJob, *, status: str, error: str) -> None:
        async with self._db.write() as conn:
            await DeliveryRepository(conn).finish(
                job.id, owner=self.owner, status=status, error=error, now=self._clock.now()
            )


@dataclass(frozen=True, slots=True)
class _Outcome:
    """A job of a batch done: sent (``sent``), or a decoy to drop (``sent`` is None)."""

    job: DeliveryJob
    sent: SentJob | None


def _sent(
    job: DeliveryJob, route: Route, provider: Provider, *, provider_message_id: str | None
) -> _Outcome:
    return _Outcome(
        job=job,
        sent=SentJob(
            job_id=job.id,
            channel=route.channel.value,
            provider=provider.name,
            destination=mask(route.to),
            provider_message_id=provider_message_id,
        ),
    )


async def _send(provider: Provider, message: RenderedMessage) -> SendResult:
    """``provider.send``, with anything but a :class:`ProviderError` turned into a
    retryable one: a provider's bug must cost a retry with backoff (bounded by max_tries),
    not leave the job leased and retried at every lease expiry, for ever."""
    try:
        return await provider.send(message)
    except ProviderError:
        raise
    except Exception as error:
        raise _unexpected(provider, error) from None


async def _find_accepted(
    provider: Provider, message: RenderedMessage, *, since: datetime
) -> SendResult | None:
    """``provider.find_accepted``, with any other exception a retryable, still uncertain
    :class:`ProviderError`: not knowing must never lead to a second message."""
    try:
        return await provider.find_accepted(message, since=since)
    except ProviderError:
        raise
    except Exception as error:
        raise _unexpected(provider, error, doing="look-up: ", uncertain=True) from None


def _unexpected(
    provider: Provider, error: Exception, *, doing: str = "", uncertain: bool = False
) -> ProviderError:
    """A provider's unexpected exception, logged by its type only (a message could hold
    the address or the code, R44), as a retryable :class:`ProviderError`."""
    log.error(
        "provider_unexpected_error",
        extra={"provider": provider.name, "error_type": type(error).__name__},
    )
    return ProviderError(
        f"{doing}unexpected {type(error).__name__}", retryable=True, uncertain=uncertain
    )
