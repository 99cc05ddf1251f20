"""Putting messages in the durable outbox.

:meth:`Outbox.enqueue` writes the job on the caller's connection, so it commits or rolls
back together with the code it carries. The message context (which holds the code in
clear, because the worker must render it) is sealed with AES-GCM under a key derived
from the secret and bound to the job id; the worker erases it once the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from resetflow.accounts.models import Channel, User
from resetflow.crypto import Keyring
from resetflow.notify.messages import Notification, Route
from resetflow.storage.deliveries import DECOY, DeliveryRepository, JobStatus
from resetflow.storage.users import UserRepository

# PostgreSQL channel that wakes workers in other processes (notify/listener.py).

# Where decoy jobs pretend to go; the reserved .invalid domain never resolves.
DECOY_ROUTE = Route(channel=Channel.EMAIL, to="decoy@resetflow.invalid")
# The one route of a ``courier-profile`` job: not an address, the job merges a profile.
PROFILE_ROUTE = Route(channel=Channel.EMAIL, to="profile@resetflow.invalid")


def courier_profile(user: User) -> dict[str, Any]:
    """The account's Courier profile: the tutorial's fields, the preference as custom."""
    profile: dict[str, Any] = {"email": user.email}
    if user.phone:
        profile["phone_number"] = user.phone
    profile["name"] = user.name
    profile["custom"] = {"preference": user.preference.value}
    return profile


class Outbox:
    """Writes jobs, wakes the in-process worker, and (when enabled) holds requests back
    while that worker is behind.

    Backpressure: with the worker in the web process (the embedded default), both share
    one event loop, and a steady stream of requests can starve the worker: messages then
    wait for as long as the load lasts (10 s and more, docs/performance.md). With
    :meth:`hold_requests_while_behind`, requests that would write jobs first wait in
    :meth:`admit` while the worker's last claim came back full (it has more due work than
    one batch), for at most the given number of seconds. Admission then follows the rate
    at which messages actually go out. It treats every request alike (decoys count as
    jobs), so it reveals nothing about accounts (R20).
    """

    def __init__(self, *, keyring: Keyring, profile_sync: bool = False) -> None:
        """``profile_sync``: a provider keeps a profile per person (Courier), so changes
        to an account queue its merge (:meth:`profile_changed`)."""
        self._keyring = keyring
        self._profile_sync = profile_sync
        self._wake = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self._admission_wait = 0.0  # seconds; 0: admit at once (separate workers)

    async def enqueue(
        self,
        conn: AsyncConnection,
        *,
        notification: Notification,
        routes: list[Route],
        context: dict[str, Any],
        locale: str,
        user_id: str | None,
        now: datetime,
        expires_at: datetime | None = None,
        decoy: bool = False,
    ) -> str:
        """Record a delivery job in the caller's transaction; returns the job id.

        ``routes`` are tried in order (failover); ``expires_at`` stops a job from being
        sent after the code in it has expired. Call :meth:`wake` after the commit. A
        ``decoy`` job is written exactly like a real one but no worker ever claims it.
        """
        if not routes:
            raise ValueError("a delivery job needs at least one route")
        job_id = secrets.token_hex(16)
        sealed = self._seal(job_id, routes, context)
        repo = DeliveryRepository(conn)
        await repo.enqueue(
            job_id=job_id,
            user_id=user_id,
            notification=notification.value,
            locale=locale,
            sealed_payload=sealed,
            expires_at=expires_at,
            now=now,
            status=DECOY if decoy else JobStatus.QUEUED,
        )
        await repo.wake_workers()
        return job_id

    def _seal(self, job_id: str, routes: list[Route], context: dict[str, Any]) -> bytes:
        payload = {
            "routes": [{"channel": r.channel.value, "to": r.to} for r in routes],
            "context": context,
        }
        return self._keyring.seal(json.dumps(payload).encode(), context=job_id.encode())

    async def profile_changed(self, conn: AsyncConnection, *, user_id: str, now: datetime) -> None:
        """The account's name, contacts or preference changed, in the caller's transaction:
        with a provider that keeps profiles, queue the merge of the account as it is now
        (:meth:`enqueue_courier_profile`); otherwise nothing."""
        if not self._profile_sync:
            return
        user = await UserRepository(conn).get(user_id)
        assert user is not None
        await self.enqueue_courier_profile(conn, user=user, now=now)

    async def enqueue_courier_profile(
        self, conn: AsyncConnection, *, user: User, now: datetime
    ) -> str:
        """Record a job that merges ``user``'s profile into Courier (in the caller's
        transaction, like every job); the worker sends nothing for it.

        Coalesced: while a profile job of the user is still ``queued`` (no worker holds
        it yet), the new snapshot replaces its payload instead of adding a second job, so
        that one change is one merge. The worker merges the account as it is when the job
        runs, one job of a user at a time (notify/worker.py), so an older snapshot can
        never land after a newer one.
        """
        context = {"profile": courier_profile(user)}
        repo = DeliveryRepository(conn)
        queued = await repo.newest_queued(
            user_id=user.id, notification=Notification.COURIER_PROFILE.value
        )
        if queued is not None:
            sealed = self._seal(queued, [PROFILE_ROUTE], context)
            if await repo.replace_queued(queued, sealed_payload=sealed, now=now):
                return queued
        return await self.enqueue(
            conn,
            notification=Notification.COURIER_PROFILE,
            routes=[PROFILE_ROUTE],
            context=context,
            locale=user.locale,
            user_id=user.id,
            now=now,
        )

    def open_payload(self, job_id: str, sealed: bytes) -> tuple[list[Route], dict[str, Any]]:
        payload = json.loads(self._keyring.open(sealed, context=job_id.encode()))
        routes = [Route(channel=Channel(r["channel"]), to=r["to"]) for r in payload["routes"]]
        return routes, payload["context"]

    def wake(self) -> None:
        """Tell an in-process worker that new jobs are waiting."""
        self._wake.set()

    def hold_requests_while_behind(self, max_wait_seconds: float) -> None:
        """Enable backpressure for an in-process worker (see the class docstring)."""
        self._admission_wait = max(0.0, max_wait_seconds)

    def report_claim(self, *, claimed: int, batch_size: int) -> None:
        """The worker's claim result: a full batch means it is behind."""
        if claimed >= batch_size:
            self._caught_up.clear()
        else:
            self._caught_up.set()

    async def admit(self) -> None:
        """Wait (bounded) while the in-process worker is behind; at once otherwise."""
        if self._admission_wait <= 0 or self._caught_up.is_set():
            return
        # Bounded: a stuck or slow delivery must not stop the service; the outbox is
        # durable, so a request let through after the wait loses nothing.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), self._admission_wait)

    async def wait(self, timeout: float) -> None:
        """Wait until :meth:`wake` is called or ``timeout`` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
