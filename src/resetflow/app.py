"""``create_app(settings)``: the ASGI application. Resources open in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from resetflow import __version__
from resetflow.clock import Clock
from resetflow.config import Settings, load_settings
from resetflow.notify.listener import OutboxListener
from resetflow.services import build_services
from resetflow.storage.deliveries import DeliveryRepository
from resetflow.storage.migrate import upgrade_async
from resetflow.web import account_actions, actions, admin, admin_api, pages, webhooks
from resetflow.web.errors import install_error_handlers
from resetflow.web.inputs import session_of
from resetflow.web.metrics import MetricsMiddleware, metrics_router
from resetflow.web.request_id import RequestIdMiddleware
from resetflow.web.security import SecurityMiddleware
from resetflow.web.sessions import SessionMiddleware

log = logging.getLogger("resetflow")
STATIC = Path(__file__).parent / "web" / "static"


def create_app(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate: bool | None = None
) -> FastAPI:
    """Build the app. ``migrate`` defaults to on in dev (the embedded default upgrades its
    own SQLite file) and off in prod (run ``resetflow migrate`` as a deploy step)."""
    settings = settings or load_settings()
    services = build_services(settings, clock=clock)
    run_migrations = (not settings.is_prod) if migrate is None else migrate

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            await upgrade_async(settings.resolved_database_url)
        if not metrics_exposed:
            log.warning("metrics_off", extra={"reason": "RESETFLOW_METRICS_TOKEN is not set"})
        worker_task = None
        listener = None
        if settings.run_worker_in_process:
            services.outbox.hold_requests_while_behind(settings.inprocess_backpressure_seconds)
            services.worker.delay_after_wake(settings.inprocess_delivery_jitter_seconds)
            worker_task = asyncio.create_task(services.worker.run(), name="resetflow-delivery")
            if services.database.url.startswith("postgresql"):
                # Jobs written by other web processes wake this worker too.
                listener = OutboxListener(
                    database_url=services.database.url, outbox=services.outbox
                )
                listener.start()
        try:
            yield
        finally:
            if listener is not None:
                await listener.stop()
            if worker_task is not None:
                services.worker.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(worker_task, timeout=10)
            await services.close()

    app = FastAPI(
        title="resetflow",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        # resetflow's own observability is /metrics and JSON logs. FastAPI's OpenTelemetry
        # bridge, left on, looks for a configured provider on every request (environment
        # look-ups, ~3 % of a /send-token's CPU, docs/performance.md) to find none.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.services = services
    install_error_handlers(app)

    async def current_user(request: Request) -> None:
        user_id = session_of(request).user_id
        request.scope["state"]["user"] = await services.accounts.get(user_id) if user_id else None

    app.include_router(pages.router, dependencies=[Depends(current_user)])
    if not settings.is_prod:
        app.include_router(pages.dev_router, dependencies=[Depends(current_user)])
    app.include_router(actions.router)
    app.include_router(account_actions.router, dependencies=[Depends(current_user)])
    app.include_router(admin.router, dependencies=[Depends(current_user)])
    app.include_router(webhooks.router)
    # Bearer tokens only, no session (R60); 404 while no token exists.
    app.include_router(admin_api.router)
    # Its counters move for a known contact and not for an unknown one (codes issued,
    # deliveries sent): in prod, /metrics exists only behind a token (R19).
    metrics_exposed = settings.metrics_token is not None or not settings.is_prod
    if metrics_exposed:
        app.include_router(
            metrics_router(
                metrics=services.metrics,
                database=services.database,
                clock=services.clock,
                token=settings.metrics_token,
            )
        )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        """Ready when the database and the session store answer and the outbox is not
        lagging behind (oldest waiting job under RESETFLOW_READY_MAX_OUTBOX_LAG_SECONDS)."""
        report: dict[str, object] = {"status": "ok"}
        try:
            async with services.database.read() as conn:
                repo = DeliveryRepository(conn)
                report["outbox_pending"] = await repo.count_pending()
                oldest = await repo.oldest_queued_at()
            report["database"] = "up"
            lag = (services.clock.now() - oldest).total_seconds() if oldest else 0.0
            report["outbox_lag_seconds"] = round(max(lag, 0.0), 3)
            if lag > settings.ready_max_outbox_lag_seconds:
                # Messages wait too long: no worker runs, or too few for the load.
                report.update(status="unavailable", outbox="lagging")
        except Exception:
            report.update(status="unavailable", database="down")
        try:
            await services.sessions.ping()
            report["sessions"] = "up"
        except Exception:
            report.update(status="unavailable", sessions="down")
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    # Outermost first at run time: security checks and headers wrap everything.
    app.add_middleware(
        SessionMiddleware,
        store=services.sessions,
        clock=services.clock,
        cookie_name=settings.cookie_name,
        secure=settings.is_prod,
        ttl_seconds=settings.session_ttl_seconds,
        still_valid=services.accounts.session_is_current,
    )
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(
        SecurityMiddleware,
        max_body_bytes=settings.max_body_bytes,
        https_only=settings.is_prod,
        trusted_proxies=settings.trusted_proxy_networks,
    )
    # Added last, so outermost: counts and times every answer, early refusals included.
    app.add_middleware(MetricsMiddleware, metrics=services.metrics, router=app.router)
    return app
