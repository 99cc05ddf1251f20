"""Request metrics (a pure-ASGI middleware) and the ``GET /metrics`` endpoint.

The ``route`` label is the matched route's template (``/send-token``, ``/static``), never
the raw path or query, and ``"unmatched"`` when no route matched (404, or a request
refused before routing whose path matches no route), so its values are a small fixed set.

``/metrics`` is left out of the OpenAPI schema. With ``RESETFLOW_METRICS_TOKEN`` set it
wants ``Authorization: Bearer <token>``. Without, it is open in dev and absent (404) in
prod (app.py): its counters (codes issued, deliveries sent) move for a known contact and
not for an unknown one, which would tell them apart (R19). Like the probes, it is served
over plain http in prod too (security.py): Prometheus scrapes the process itself.
``Cache-Control: no-store`` comes from the security middleware, like on every answer.
"""

from __future__ import annotations

import hmac
import logging
import math
import time

from fastapi import APIRouter
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resetflow.clock import Clock
from resetflow.errors import MetricsTokenRequired
from resetflow.metrics import UNMATCHED, Metrics
from resetflow.notify.delivery_log import DeliveryLog
from resetflow.web.error_json import error_response

log = logging.getLogger("resetflow.metrics")


class MetricsMiddleware:
    """Counts and times every HTTP request; outermost, so early refusals count too."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, router: Router) -> None:
        self.app = app
        self._metrics = metrics
        self._router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # What routing needs, as it was before routing changed the scope (mounts do).
        original: Scope = {
            "type": "http",
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "method": scope["method"],
        }
        started = time.perf_counter()
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            self._metrics.observe_request(
                route=self._route_template(scope, original),
                method=original["method"],
                status=status,
                seconds=time.perf_counter() - started,
            )

    def _route_template(self, scope: Scope, original: Scope) -> str:
        # The router leaves the route it chose in the scope (FULL or PARTIAL match).
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str) and path:
            return path
        # Mounts (static files) are not left there, and requests refused before routing
        # (413, 503, the HTTPS redirect) never reached the router: match them here.
        partial: str | None = None
        for route in self._router.routes:
            match, _ = route.matches(original)
            candidate = getattr(route, "path", None)
            if not isinstance(candidate, str) or not candidate:
                continue
            if match is Match.FULL:
                return candidate
            if match is Match.PARTIAL and partial is None:
                partial = candidate
        return partial or UNMATCHED


def metrics_router(
    *, metrics: Metrics, delivery_log: DeliveryLog, clock: Clock, token: SecretStr | None
) -> APIRouter:
    """The ``GET /metrics`` route, reading the outbox gauges from the database first."""
    router = APIRouter(include_in_schema=False)
    expected = token.get_secret_value().encode() if token is not None else None

    @router.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        if expected is not None and not bearer_matches(request, expected):
            return token_required()
        depth, oldest_age = await _read_outbox(delivery_log, clock)
        metrics.set_outbox(depth=depth, oldest_queued_age_seconds=oldest_age)
        return Response(metrics.render(), media_type=metrics.content_type)

    return router


def token_required() -> Response:
    """The answer to a scrape without the right ``Authorization: Bearer`` token."""
    return error_response(MetricsTokenRequired(), headers={"WWW-Authenticate": "Bearer"})


def bearer_matches(request: Request, expected: bytes) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Headers are decoded as latin-1: encoding back gives the bytes the client sent.
    return hmac.compare_digest(credentials.strip().encode("latin-1"), expected)


async def _read_outbox(delivery_log: DeliveryLog, clock: Clock) -> tuple[float, float]:
    """(jobs queued or sending, age of the oldest queued job); NaNs if the read fails."""
    try:
        backlog = await delivery_log.backlog()
    except Exception:
        # The other metrics are worth most while the database is down: still answer.
        log.warning("metrics_outbox_unreadable", exc_info=True)
        return math.nan, math.nan
    return float(backlog.pending or 0), backlog.lag_seconds(clock.now())
