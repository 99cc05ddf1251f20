"""Waking workers across processes with PostgreSQL ``LISTEN/NOTIFY``.

:meth:`Outbox.enqueue` sends ``NOTIFY resetflow_outbox`` inside the transaction that
writes the job, so the notice goes out exactly when the job becomes visible. Every
worker process listens on one dedicated connection and wakes its loop; if that
connection drops, polling (``RESETFLOW_WORKER_POLL_SECONDS``) still finds the jobs, and
the listener reconnects with a growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from resetflow.notify.outbox import Outbox
from resetflow.storage.deliveries import NOTIFY_CHANNEL

log = logging.getLogger("resetflow.delivery")


class OutboxListener:
    def __init__(self, *, database_url: str, outbox: Outbox) -> None:
        self._dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._outbox = outbox
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="resetflow-outbox-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            lost = asyncio.Event()

            def on_lost(_conn: Any, lost: asyncio.Event = lost) -> None:
                lost.set()

            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notice)
                conn.add_termination_listener(on_lost)
                self.connected.set()
                delay = 0.5
                # A missed notice while reconnecting is found by the next poll.
                self._outbox.wake()
                await lost.wait()
                log.warning("outbox_listener_lost")
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.close()

    def _on_notice(self, *_args: Any) -> None:
        self._outbox.wake()
