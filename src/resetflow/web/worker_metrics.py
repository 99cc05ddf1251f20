"""The small HTTP app of ``resetflow worker --metrics-port``: ``GET /metrics`` (this
worker's own counts, Prometheus text, behind ``RESETFLOW_METRICS_TOKEN`` when set) and
``GET /healthz``. For a worker on a host, or in a container, without a web process to
report its deliveries (docs/deployment.md)."""

from __future__ import annotations

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resetflow.metrics import Metrics
from resetflow.web.metrics import bearer_matches, token_required


def worker_metrics_app(*, metrics: Metrics, token: SecretStr | None) -> Starlette:
    expected = token.get_secret_value().encode() if token is not None else None

    async def prometheus_metrics(request: Request) -> Response:
        if expected is not None and not bearer_matches(request, expected):
            return token_required()
        return Response(
            metrics.render_own(),
            media_type=metrics.content_type,
            headers={"Cache-Control": "no-store"},
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/metrics", prometheus_metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
