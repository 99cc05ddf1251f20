"""``GET /metrics``: Prometheus text from a registry of the app's own (issue 4)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from resetflow.clock import FrozenClock
from resetflow.config import Settings
from resetflow.metrics import Metrics
from tests.conftest import LiveApp
from tests.support.flow import (
    NEW_PASSWORD,
    PASSWORD,
    find_code,
    sign_up,
    sign_up_verified,
    wait_for_dev_message,
)
from tests.support.processes import ProcessSet
from tests.support.prod import prod_settings
from tests.support.servers import free_port

EMAIL = "ada@example.com"
PHONE = "+14155550100"
TOKEN = "a-long-random-scrape-token-0123456789"


def scrape(client: httpx.Client, **headers: str) -> list[Sample]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` with these labels; None when there is none."""
    found = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found) if found else None


def scrape_until(
    client: httpx.Client, done: Callable[[list[Sample]], bool], timeout: float = 15
) -> list[Sample]:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(client)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def test_r44_metrics_after_a_whole_reset_flow_with_no_secret_in_labels(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        sign_up_verified(client)
        assert client.post("/send-token", json={"email": EMAIL}).status_code == 202
        message = wait_for_dev_message(client, to=EMAIL, notification="password-reset-token")
        code = find_code(message["text"])
        assert client.post("/verify-token", json={"token": code}).status_code == 200
        reset = client.post(
            "/reset-password",
            json={"newPassword": NEW_PASSWORD, "newPasswordConfirm": NEW_PASSWORD},
        )
        assert reset.status_code == 200, reset.text
        session_id = client.cookies.get("resetflow_session")
        assert session_id

        def delivered(samples: list[Sample]) -> bool:
            # verify-contact, password-reset-token and password-changed, all by email.
            sent = value(samples, "resetflow_deliveries_total", provider="outbox", status="sent")
            return (sent or 0) >= 3 and value(samples, "resetflow_outbox_depth") == 0

        samples = scrape_until(client, delivered)
        answer = client.get("/metrics")
        openapi = client.get("/openapi.json").json()

    assert (
        value(
            samples,
            "resetflow_http_requests_total",
            route="/send-token",
            method="POST",
            status="202",
        )
        == 1
    )
    assert value(samples, "resetflow_http_requests_total", route="/verify-token", status="200") == 1
    assert (
        value(samples, "resetflow_http_requests_total", route="/reset-password", status="200") == 1
    )
    assert value(samples, "resetflow_http_request_duration_seconds_count", route="/send-token")
    assert (
        value(
            samples,
            "resetflow_deliveries_total",
            channel="email",
            provider="outbox",
            status="sent",
        )
        == 3
    )
    assert value(samples, "resetflow_outbox_depth") == 0
    assert value(samples, "resetflow_outbox_oldest_queued_age_seconds") == 0
    for name in ("issued", "accepted", "rejected"):
        assert value(samples, f"resetflow_codes_{name}_total", purpose="reset") is not None

    # R44: no label carries a code, a password, the session id, the email or the phone.
    secrets = [code, PASSWORD, NEW_PASSWORD, session_id, EMAIL, PHONE, PHONE[2:]]
    labels = {v for s in samples for v in s.labels.values()}
    assert not [v for v in labels for secret in secrets if secret.lower() in v.lower()]

    assert answer.headers["cache-control"] == "no-store"
    assert "/metrics" not in openapi["paths"]


def test_the_route_label_is_the_route_template_never_the_raw_path(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app()
    with app.client() as client:
        assert client.get("/dev/outbox.json?x=1").status_code == 200
        assert client.get("/nope/123?ada@example.com").status_code == 404
        assert client.get("/static/resetflow.css?v=123").status_code == 200
        # A method the HTTP parser knows (WebDAV) but resetflow does not serve; made-up ones
        # like BREW never reach the app under httptools (uvicorn answers 400 itself).
        assert client.request("PROPFIND", "/").status_code == 405
        samples = scrape(client)

    requests = [s for s in samples if s.name == "resetflow_http_requests_total"]
    routes = {s.labels["route"] for s in requests}
    assert {"/dev/outbox.json", "unmatched", "/static", "/"} <= routes
    assert all(route == "unmatched" or route.startswith("/") for route in routes)
    for label in {v for s in samples for v in s.labels.values()}:
        for raw in ("?", "x=1", "nope", "123", "ada@", "resetflow.css"):
            assert raw not in label, label

    assert value(requests, requests[0].name, route="/dev/outbox.json", status="200") == 1
    assert value(requests, requests[0].name, route="unmatched", status="404") == 1
    assert value(requests, requests[0].name, route="/static", status="200") == 1
    # Made-up methods do not make new series.
    assert value(requests, requests[0].name, route="/", method="other", status="405") == 1


def test_a_metrics_token_is_required_when_configured(
    live_app: Callable[..., LiveApp], make_settings: Callable[..., Settings]
) -> None:
    app = live_app(metrics_token=TOKEN)
    with app.client() as client:
        refused = [
            client.get("/metrics"),
            client.get("/metrics", headers={"Authorization": "Bearer wrong"}),
            client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}),
            client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"}),
        ]
        for answer in refused:
            assert answer.status_code == 401
            assert answer.json()["code"] == "not_signed_in"
            assert answer.json()["error"]
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.headers["cache-control"] == "no-store"
        samples = scrape(client, Authorization=f"Bearer {TOKEN}")
        assert value(samples, "resetflow_outbox_depth") is not None
        assert scrape(client, Authorization=f"bearer {TOKEN}")
    # The refusals are counted too, under the route's template.
    assert value(samples, "resetflow_http_requests_total", route="/metrics", status="401") == 4

    # An empty token is no token: /metrics is open (to be restricted at the proxy).
    assert make_settings(metrics_token="").metrics_token is None
    assert make_settings().metrics_token is None


def test_outbox_gauges_show_what_waits_for_a_worker(live_app: Callable[..., LiveApp]) -> None:
    clock = FrozenClock()
    app = live_app(clock=clock, inprocess_worker=False)
    with app.client() as client:
        assert value(scrape(client), "resetflow_outbox_depth") == 0
        assert sign_up(client).status_code == 201
        clock.advance(42)
        samples = scrape(client)
    assert value(samples, "resetflow_outbox_depth") == 1
    assert value(samples, "resetflow_outbox_oldest_queued_age_seconds") == 42


def test_failed_delivery_attempts_are_counted_by_provider(
    live_app: Callable[..., LiveApp],
) -> None:
    closed_port = free_port()
    app = live_app(
        email_provider="smtp", smtp_host="127.0.0.1", smtp_port=closed_port, delivery_max_tries=2
    )
    with app.client() as client:
        assert sign_up(client).status_code == 201
        samples = scrape_until(
            client,
            lambda s: (value(s, "resetflow_deliveries_total", provider="smtp") or 0) >= 2,
        )
    assert (
        value(
            samples, "resetflow_deliveries_total", channel="email", provider="smtp", status="retry"
        )
        == 2
    )
    assert value(samples, "resetflow_deliveries_total", status="sent") is None


def test_each_metrics_object_has_its_own_registry_and_bounded_labels() -> None:
    first, second = Metrics(), Metrics()
    first.code_issued("reset")
    first.code_rejected("123456")  # not a purpose: counted as "other", never as itself
    first.delivery_attempt(channel="email", provider="ada@example.com", status="sent")
    first.observe_request(route="/x", method="brew", status=200, seconds=0.01)

    one, two = parse(first.render().decode()), parse(second.render().decode())
    assert value(one, "resetflow_codes_issued_total", purpose="reset") == 1
    assert value(two, "resetflow_codes_issued_total", purpose="reset") == 0
    assert value(one, "resetflow_codes_rejected_total", purpose="other") == 1
    assert value(one, "resetflow_deliveries_total", channel="email", provider="other") == 1
    assert value(one, "resetflow_http_requests_total", method="other") == 1
    labels = {v for s in one for v in s.labels.values()}
    assert not [v for v in labels if "123456" in v or "ada@" in v]


# In prod --------------------------------------------------------------------------------

PROD = prod_settings()


def test_r19_prod_metrics_are_off_without_a_token_since_their_counters_tell_contacts_apart(
    live_app: Callable[..., LiveApp],
) -> None:
    # Why: open, /metrics shows a reset code issued for a known contact and none for an
    # unknown one, whatever /send-token answers (the same for both).
    dev = live_app()
    with dev.client() as client:
        sign_up_verified(client)

        def issued() -> float | None:
            return value(scrape(client), "resetflow_codes_issued_total", purpose="reset")

        before = issued()
        assert client.post("/send-token", json={"email": "nobody@example.com"}).status_code == 202
        after_unknown = issued()
        assert client.post("/send-token", json={"email": EMAIL}).status_code == 202
        after_known = issued()
    assert (before, after_unknown, after_known) == (0, 0, 1)

    # So in prod, without RESETFLOW_METRICS_TOKEN there is no /metrics at all.
    prod = live_app(**PROD)
    with prod.client() as client:
        answer = client.get("/metrics", headers={"X-Forwarded-Proto": "https"})
        plain = client.get("/metrics", follow_redirects=False)
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"
    assert plain.status_code == 404


def test_r49_prod_serves_metrics_over_plain_http_to_the_token_holder_and_redirects_the_rest(
    live_app: Callable[..., LiveApp],
) -> None:
    app = live_app(**PROD, metrics_token=TOKEN)
    with app.client() as client:
        # Prometheus asks the process itself, on its private address: no redirect to https.
        samples = scrape(client, Authorization=f"Bearer {TOKEN}")
        refused = client.get("/metrics", follow_redirects=False)
        page = client.get("/login", follow_redirects=False)
    assert value(samples, "resetflow_outbox_depth") == 0
    assert refused.status_code == 401
    assert "location" not in refused.headers
    assert refused.headers["strict-transport-security"].startswith("max-age=31536000")
    assert page.status_code == 308
    assert page.headers["location"] == "https://auth.example.org/login"


# Several processes -----------------------------------------------------------------------


def test_serve_with_two_workers_answers_the_same_totals_whichever_process_is_scraped(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes = ProcessSet(logs=tmp_path / "logs", env={"RESETFLOW_DATA_DIR": str(tmp_path)})
    try:
        with processes.logs_on_failure():
            processes.start("web", "serve", "--workers", "2", "--port", str(port))
            processes.wait_ready("web", f"{url}/healthz")
            deadline = time.monotonic() + 30
            while len(processes.events("web", "Application startup complete.")) < 2:
                assert time.monotonic() < deadline, "the two web processes did not start"
                time.sleep(0.1)
            # One connection each, so that the kernel hands them to either process.
            statuses = [httpx.get(f"{url}/readyz").status_code for _ in range(40)]
            assert statuses == [200] * 40

            def readyz_total() -> float | None:
                samples = parse(httpx.get(f"{url}/metrics").text)
                return value(samples, "resetflow_http_requests_total", route="/readyz")

            # A request is counted once its answer is out: the last may lag the client.
            deadline = time.monotonic() + 10
            while readyz_total() != 40 and time.monotonic() < deadline:
                time.sleep(0.1)
            # Each process alone answered about half: with one registry each, the scrapes
            # would disagree with one another and with 40.
            assert [readyz_total() for _ in range(20)] == [40] * 20
            assert processes.stop("web") == 0
    finally:
        processes.stop_all()
