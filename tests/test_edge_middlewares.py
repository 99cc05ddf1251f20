"""The edge's middlewares keep their contracts with the cheaper code of issue 15 (docs/
performance.md, "The thin edge"): headers put on in one pass still replace the app's own,
request ids from a pooled random read stay fresh and well-formed, and the metrics'
looked-up series count like labels() did."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from resetflow.metrics import SERIES_CACHE_LIMIT, Metrics
from resetflow.web.request_id import IDS_PER_READ, RequestIdMiddleware
from resetflow.web.security import SecurityMiddleware


def answer_of(app: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> list[Any]:
    """The messages ``app`` sends for a GET of ``path`` over https."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "scheme": "https",
        "headers": headers or [],
        "client": ("127.0.0.1", 40000),
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def app_setting(headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


OWN = [
    (b"cache-control", b"public, max-age=60"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"x-frame-options", b"ALLOW-FROM x"),
    (b"content-type", b"text/plain"),
]


def test_security_headers_replace_the_apps_own_of_the_same_name_and_keep_the_rest() -> None:
    app = SecurityMiddleware(app_setting(OWN), max_body_bytes=1000, https_only=True)
    start = answer_of(app, "/login")[0]
    names = [name for name, _ in start["headers"]]
    headers = dict(start["headers"])
    assert names.count(b"x-frame-options") == 1 and headers[b"x-frame-options"] == b"DENY"
    assert names.count(b"cache-control") == 1 and headers[b"cache-control"] == b"no-store"
    assert headers[b"content-type"] == b"text/plain"
    assert headers[b"strict-transport-security"].startswith(b"max-age=31536000")
    assert b"frame-ancestors 'none'" in headers[b"content-security-policy"]
    assert headers[b"pragma"] == b"no-cache"


def test_static_files_keep_their_cache_control_and_docs_get_their_policy() -> None:
    app = SecurityMiddleware(app_setting(OWN), max_body_bytes=1000, https_only=False)
    static = dict(answer_of(app, "/static/app.css")[0]["headers"])
    assert static[b"cache-control"] == b"public, max-age=60"
    assert b"strict-transport-security" not in static
    docs = dict(answer_of(app, "/docs")[0]["headers"])
    assert b"cdn.jsdelivr.net" in docs[b"content-security-policy"]
    page = dict(answer_of(app, "/login")[0]["headers"])
    assert b"cdn.jsdelivr.net" not in page[b"content-security-policy"]


def test_request_ids_are_fresh_across_pool_refills_and_replace_the_apps_own() -> None:
    app = RequestIdMiddleware(app_setting([(b"x-request-id", b"from-the-app")]))
    ids = []
    for _ in range(IDS_PER_READ * 2 + 3):  # past two refills of the pool
        start = answer_of(app, "/healthz")[0]
        [value] = [v for name, v in start["headers"] if name == b"x-request-id"]
        ids.append(value.decode())
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    kept = answer_of(app, "/healthz", [(b"x-request-id", b"lb-0123456789")])[0]
    assert [v for name, v in kept["headers"] if name == b"x-request-id"] == [b"lb-0123456789"]


def requests_total(metrics: Metrics, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name == "resetflow_http_requests_total"
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def test_request_series_count_alike_however_they_were_looked_up() -> None:
    metrics = Metrics()
    for method in ("GET", "get", "GET", "brew", "BREW"):
        metrics.observe_request(route="/healthz", method=method, status=200, seconds=0.001)
    metrics.observe_request(route="/healthz", method="GET", status=1000, seconds=0.001)
    assert requests_total(metrics, route="/healthz", method="GET", status="200") == 3
    assert requests_total(metrics, route="/healthz", method="other") == 2
    assert requests_total(metrics, route="/healthz", status="other") == 1


def test_the_series_cache_stays_bounded() -> None:
    metrics = Metrics()
    for n in range(SERIES_CACHE_LIMIT + 10):
        metrics.observe_request(route="/x", method=f"m{n}", status=200, seconds=0.001)
    assert requests_total(metrics, route="/x", method="other") == SERIES_CACHE_LIMIT + 10
    assert len(metrics._request_series) == SERIES_CACHE_LIMIT
