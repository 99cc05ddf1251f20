"""Starting and stopping what the app runs besides answering requests.

On start: migrations (dev), the in-process delivery worker and, on PostgreSQL, its LISTEN
connection. On stop: those, then every service (database pool, session store, providers).

The app's lifespan starts and stops a :class:`Runtime`. Starlette does not run the
lifespan of a mounted app (``host.mount("/auth", create_app())``), so
:class:`StartOnFirstUse` starts it on the first request instead, and the host hands
resetflow its shutdown by awaiting ``resetflow_app.aclose()`` from its own lifespan
(docs/integration.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from resetflow.notify.listener import OutboxListener
from resetflow.services import Services
from resetflow.storage.migrate import upgrade_async

log = logging.getLogger("resetflow")


class Runtime:
    """Starts once (whichever comes first: the lifespan or the first request) and stops
    once per start; safe to call from both."""

    def __init__(self, *, services: Services, run_migrations: bool, metrics_exposed: bool) -> None:
        self._services = services
        self._migrate = run_migrations
        self._metrics_exposed = metrics_exposed
        self._lock: asyncio.Lock | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._listener: OutboxListener | None = None
        self.started = False

    async def ensure_started(self) -> None:
        if self.started:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.started:
                await self._start()
                self.started = True

    async def _start(self) -> None:
        services, settings = self._services, self._services.settings
        if self._migrate:
            await upgrade_async(settings.resolved_database_url)
        if not self._metrics_exposed:
            log.warning("metrics_off", extra={"reason": "RESETFLOW_METRICS_TOKEN is not set"})
        if settings.run_worker_in_process:
            services.outbox.hold_requests_while_behind(settings.inprocess_backpressure_seconds)
            services.worker.delay_after_wake(settings.inprocess_delivery_jitter_seconds)
            self._worker_task = asyncio.create_task(
                services.worker.run(), name="resetflow-delivery"
            )
            if services.database.url.startswith("postgresql"):
                # Jobs written by other web processes wake this worker too.
                self._listener = OutboxListener(
                    database_url=services.database.url, outbox=services.outbox
                )
                self._listener.start()

    async def aclose(self) -> None:
        """Stop the worker and close every service. Idempotent."""
        if not self.started:
            return
        self.started = False
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._worker_task is not None:
            self._services.worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._worker_task, timeout=10)
            self._worker_task = None
        await self._services.close()


class StartOnFirstUse:
    """Starts the :class:`Runtime` before the first request when no lifespan did."""

    def __init__(self, app: ASGIApp, *, runtime: Runtime) -> None:
        self.app = app
        self._runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._runtime.started:
            await self._runtime.ensure_started()
        await self.app(scope, receive, send)
