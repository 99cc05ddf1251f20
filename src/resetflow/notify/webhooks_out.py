"""Sending events to the host application: Standard Webhooks signing and delivery.

Each attempt is a POST of the job's body, exactly as queued, with

- ``webhook-id``: the job id, the same on every retry, so that receivers can drop a
  message they already handled;
- ``webhook-timestamp``: this attempt's time in unix seconds (fresh on every retry, so a
  receiver can refuse anything outside its tolerance, 5 minutes by default);
- ``webhook-signature``: ``v1,`` + base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``
  keyed with the base64-decoded part of the ``whsec_`` secret.

(The Standard Webhooks specification, https://www.standardwebhooks.com; the signer below
is a few lines of the standard library, tested against the reference ``standardwebhooks``
package's ``Webhook.verify``.)

A 2xx answer marks the job ``delivered``. Anything else (another status, redirects
included, since none is followed; a timeout; a connection error) is retried with the
worker's backoff, up to its attempt cap, after which the job is ``failed``; a 410 Gone
fails it at once. Every attempt
goes to the delivery log with the status code or the kind of error; never the body of
either side.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx

from resetflow.clock import Clock
from resetflow.notify.events import WEBHOOK_PROVIDER, Events
from resetflow.storage.database import Database
from resetflow.storage.deliveries import EVENT_CHANNEL, DeliveryJob, DeliveryRepository, JobStatus

log = logging.getLogger("resetflow.webhooks_out")
USER_AGENT = "resetflow-webhooks"


def sign(key: bytes, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt (Standard Webhooks, v1)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def destination(url: str) -> str:
    """What the delivery log shows of an endpoint: its host (and port). Not the path or
    query, which can hold a token of the receiver's."""
    parts = urlsplit(url)
    host = parts.hostname or "-"
    return (f"{host}:{parts.port}" if parts.port else host)[:64]


class WebhookSender:
    """Delivers event jobs (channel ``webhook``) for the delivery worker."""

    def __init__(
        self,
        *,
        events: Events,
        database: Database,
        clock: Clock,
        timeout_seconds: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._events = events
        self._db = database
        self._clock = clock
        self._timeout = timeout_seconds
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @staticmethod
    def handles(job: DeliveryJob) -> bool:
        return job.channel == EVENT_CHANNEL

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                transport=self._transport,
                headers={"user-agent": USER_AGENT},
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(
        self,
        job: DeliveryJob,
        *,
        owner: str,
        max_tries: int,
        retry_delay: Callable[[int], float],
    ) -> None:
        """One attempt; the job ends delivered or failed, or is rescheduled."""
        assert job.sealed_payload is not None  # the worker fails jobs without one
        url, body = self._events.open(job.id, job.sealed_payload)
        endpoint = self._events.endpoint(url)
        where = destination(url)
        if endpoint is None:
            # Its URL left the configuration since the event was queued.
            await self._end(
                job,
                owner,
                where,
                status=JobStatus.FAILED,
                note="endpoint no longer configured",
            )
            return
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": job.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(endpoint.key, msg_id=job.id, timestamp=timestamp, body=body),
        }
        try:
            response = await self._http().post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            note = "timeout"
        except httpx.HTTPError as error:
            note = f"{type(error).__name__}"  # the type only: no URL, no body
        else:
            note = f"HTTP {response.status_code}"
            if response.is_success:
                await self._end(job, owner, where, status=JobStatus.DELIVERED, note=note)
                log.info("webhook_delivered", extra={"job_id": job.id, "event": job.notification})
                return
        tries = job.tries + 1
        # 410 Gone: the receiver wants no more (the specification's advice: stop at once).
        if tries >= max_tries or note == "HTTP 410":
            await self._end(job, owner, where, status=JobStatus.FAILED, note=note)
            log.warning(
                "webhook_failed",
                extra={"job_id": job.id, "event": job.notification, "reason": note},
            )
            return
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = DeliveryRepository(conn)
            await _record_attempt(repo, job, where, status="retry", note=note, now=now)
            await repo.reschedule(
                job.id,
                owner=owner,
                route_index=0,
                tries=tries,
                next_attempt_at=now + timedelta(seconds=retry_delay(tries)),
                error=note,
                now=now,
            )
        log.warning(
            "webhook_attempt_failed",
            extra={"job_id": job.id, "event": job.notification, "reason": note},
        )

    async def _end(
        self, job: DeliveryJob, owner: str, where: str, *, status: str, note: str
    ) -> None:
        """The last attempt and the job's end, in one transaction (the body is erased)."""
        now = self._clock.now()
        async with self._db.write() as conn:
            repo = DeliveryRepository(conn)
            attempt = JobStatus.SENT if status == JobStatus.DELIVERED else JobStatus.FAILED
            await _record_attempt(repo, job, where, status=attempt, note=note, now=now)
            await repo.finish(
                job.id,
                owner=owner,
                status=status,
                channel=EVENT_CHANNEL,
                provider=WEBHOOK_PROVIDER,
                error=None if status == JobStatus.DELIVERED else note,
                now=now,
            )


async def _record_attempt(
    repo: DeliveryRepository,
    job: DeliveryJob,
    where: str,
    *,
    status: str,
    note: str | None,
    now: datetime,
) -> None:
    """One attempt of an event in the delivery log: the endpoint's host, no body."""
    await repo.record_attempt(
        job_id=job.id,
        channel=EVENT_CHANNEL,
        provider=WEBHOOK_PROVIDER,
        destination=where,
        status=status,
        provider_message_id=None,
        error=note,
        now=now,
    )
