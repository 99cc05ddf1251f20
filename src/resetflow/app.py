"""``create_app(settings)``: the ASGI application. Resources open in the lifespan, or on
the first request when mounted in a host app (web/lifecycle.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from resetflow import __version__
from resetflow.clock import Clock
from resetflow.config import Settings, load_settings
from resetflow.services import build_services
from resetflow.web import (
    account_actions,
    actions,
    admin,
    admin_api,
    integration,
    pages,
    theme,
    webhooks,
)
from resetflow.web.errors import install_error_handlers
from resetflow.web.inputs import session_of
from resetflow.web.lifecycle import Runtime, StartOnFirstUse
from resetflow.web.metrics import MetricsMiddleware, bearer_matches, metrics_router
from resetflow.web.render import page_templates
from resetflow.web.request_id import RequestIdMiddleware
from resetflow.web.security import SecurityMiddleware, content_security_policy
from resetflow.web.sessions import SessionMiddleware

log = logging.getLogger("resetflow")
STATIC = Path(__file__).parent / "web" / "static"
HEALTHY = b'{"status":"ok"}'


class ResetflowApp(FastAPI):
    """The app :func:`create_app` returns: a FastAPI app that also starts on its first
    request when its lifespan does not run (mounted in a host app), and that a host stops
    with :meth:`aclose` (docs/integration.md)."""

    def __init__(self, *, runtime: Runtime, **options: Any) -> None:
        super().__init__(**options)
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Servers give every request a ``state`` dict (ASGI lifespan state), which the web
        # layer keeps per-request values in; a host calling resetflow in process (httpx's
        # ASGITransport, a test client without lifespan) may not.
        scope.setdefault("state", {})
        await super().__call__(scope, receive, send)

    async def aclose(self) -> None:
        """Stop the in-process worker and close the database and session store. A host
        that mounts resetflow awaits this from its own lifespan's shutdown."""
        await self.runtime.aclose()


def create_app(
    settings: Settings | None = None, *, clock: Clock | None = None, migrate: bool | None = None
) -> ResetflowApp:
    """Build the app. ``migrate`` defaults to on in dev (the embedded default upgrades its
    own SQLite file) and off in prod (run ``resetflow migrate`` as a deploy step)."""
    settings = settings or load_settings()
    services = build_services(settings, clock=clock)
    run_migrations = (not settings.is_prod) if migrate is None else migrate

    # Its counters move for a known contact and not for an unknown one (codes issued,
    # deliveries sent): in prod, /metrics exists only behind a token (R19).
    metrics_exposed = settings.metrics_token is not None or not settings.is_prod
    runtime = Runtime(
        services=services, run_migrations=run_migrations, metrics_exposed=metrics_exposed
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.ensure_started()
        try:
            yield
        finally:
            await runtime.aclose()

    app = ResetflowApp(
        runtime=runtime,
        title="resetflow",
        version=__version__,
        lifespan=lifespan,
        # A developer page (it loads Swagger UI from a CDN): absent in prod, with
        # /docs/oauth2-redirect; /openapi.json stays for clients (R58).
        docs_url=None if settings.is_prod else "/docs",
        redoc_url=None,
        # resetflow's own observability is /metrics and JSON logs. FastAPI's OpenTelemetry
        # bridge, left on, looks for a configured provider on every request (environment
        # look-ups, ~3 % of a /send-token's CPU, docs/performance.md) to find none.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.services = services
    app.state.pages = page_templates(settings)
    install_error_handlers(app)

    async def current_user(request: Request) -> None:
        user_id = session_of(request).user_id
        request.scope["state"]["user"] = await services.accounts.get(user_id) if user_id else None

    # Routes are tried in the order they are added, and an included router's routes cost
    # FastAPI several dictionary writes each per request tried: the routes asked on every
    # probe and every page view of a host app come first (the thin edge, docs/performance.md).
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        # JSONResponse({"status": "ok"})'s bytes, not encoded again on every probe.
        return Response(HEALTHY, media_type="application/json")

    # The outbox figures move right after a /send-token for a known contact (R19): they
    # are shown only where /metrics would answer (its token; dev without one, where
    # /metrics is open and shows the same gauges). The public answer is up or down.
    readyz_token = (
        settings.metrics_token.get_secret_value().encode()
        if settings.metrics_token is not None
        else None
    )

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """Ready when the database and the session store answer and the outbox is not
        lagging behind (oldest waiting job under RESETFLOW_READY_MAX_OUTBOX_LAG_SECONDS)."""
        if readyz_token is not None:
            figures = bearer_matches(request, readyz_token)
        else:
            figures = not settings.is_prod
        report: dict[str, object] = {"status": "ok"}
        try:
            backlog = await services.delivery_log.backlog(count=figures)
            report["database"] = "up"
            lag = backlog.lag_seconds(services.clock.now())
            if figures:
                report["outbox_pending"] = backlog.pending
                report["outbox_lag_seconds"] = round(lag, 3)
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

    app.include_router(integration.router)
    # The flow's actions (/send-token above all) before the pages: they share some paths
    # but never a method, so which route answers is the same either way.
    app.include_router(actions.router)
    app.include_router(pages.router, dependencies=[Depends(current_user)])
    if not settings.is_prod:
        app.include_router(pages.dev_router, dependencies=[Depends(current_user)])
    app.include_router(account_actions.router, dependencies=[Depends(current_user)])
    app.include_router(admin.router, dependencies=[Depends(current_user)])
    app.include_router(webhooks.router)
    # Bearer tokens only, no session (R60); 404 while no token exists.
    app.include_router(admin_api.router)
    if metrics_exposed:
        app.include_router(
            metrics_router(
                metrics=services.metrics,
                delivery_log=services.delivery_log,
                clock=services.clock,
                token=settings.metrics_token,
            )
        )
    # Before the /static mount, which would otherwise answer these two paths.
    app.include_router(theme.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Outermost first at run time: security checks and headers wrap everything.
    app.add_middleware(
        SessionMiddleware,
        store=services.sessions,
        clock=services.clock,
        cookie_name=settings.cookie_name,
        secure=settings.is_prod,
        ttl_seconds=settings.session_ttl_seconds,
        still_valid=services.accounts.session_is_current,
        cookie_path=settings.cookie_path,
        base_path=settings.base_path,
    )
    # Outside the sessions, which need the (migrated) database.
    app.add_middleware(StartOnFirstUse, runtime=runtime)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(
        SecurityMiddleware,
        max_body_bytes=settings.max_body_bytes,
        https_only=settings.is_prod,
        trusted_proxies=settings.trusted_proxy_networks,
        public_host=urlsplit(settings.base_url).netloc,
        policy=content_security_policy(logo_url=settings.logo_url),
    )
    # Added last, so outermost: counts and times every answer, early refusals included.
    app.add_middleware(MetricsMiddleware, metrics=services.metrics, router=app.router)
    return app
