"""Separate worker and web processes: LISTEN/NOTIFY wake-ups on PostgreSQL, SIGTERM, and
``serve --workers N``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveApp
from tests.support.flow import create_verified_account, find_code, sign_up
from tests.support.processes import run_resetflow
from tests.support.prod import prod_environment
from tests.support.servers import SmtpSink, free_port


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESETFLOW_")}
    env.update(values)
    return env


def _listening(database_url: str) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %resetflow_outbox%'"
            )
        finally:
            await conn.close()
        return bool(count)

    return asyncio.run(check())


def test_a_worker_in_another_process_wakes_on_notify_not_on_its_poll(
    live_app: Callable[..., LiveApp], postgres_url: str, smtp: tuple[SmtpSink, int], tmp_path: Path
) -> None:
    sink, port = smtp
    app = live_app(
        database_url=postgres_url,
        inprocess_worker=False,
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
    )

    create_verified_account(app.settings)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "resetflow", "worker"],
        env=_env(
            RESETFLOW_DATA_DIR=str(app.settings.data_dir),
            RESETFLOW_DATABASE_URL=postgres_url,
            RESETFLOW_EMAIL_PROVIDER="smtp",
            RESETFLOW_SMTP_HOST="127.0.0.1",
            RESETFLOW_SMTP_PORT=str(port),
            RESETFLOW_WORKER_POLL_SECONDS="60",  # only a NOTIFY can wake it in time
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not _listening(postgres_url):
            assert time.monotonic() < deadline, "the worker never listened"
            time.sleep(0.1)
        with app.client() as client:
            sent_at = time.monotonic()
            assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
            mail = sink.wait_for("ada@example.com", timeout=20)[0]
            assert time.monotonic() - sent_at < 10  # far below the 60 s poll
            assert (
                client.post("/verify-token", json={"token": find_code(mail.text)}).status_code
                == 200
            )
        # SIGTERM: the worker finishes what it holds and exits cleanly.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()


def _wait_until_ok(
    url: str, process: subprocess.Popen[bytes], log: Path, *, timeout: float = 30
) -> None:
    """Until ``url`` answers 200; fails with the process's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_serve_with_two_web_processes(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "resetflow", "serve", "--port", str(port), "--workers", "2"],
        env=_env(RESETFLOW_DATA_DIR=str(tmp_path / "data"), RESETFLOW_LIMIT_IP="10000/minute"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_ok(f"{base}/readyz", server, tmp_path / "serve.log", timeout=60)
        with httpx.Client(base_url=base, timeout=30) as client:
            answer = sign_up(client, name="Ada")
            assert answer.status_code == 201
            # Many requests, so that both processes answer some; the session holds in all.
            pages = {client.get("/verify-contact").status_code for _ in range(20)}
            assert pages == {200}
        assert len(_children(server.pid)) >= 2
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


# resetflow worker --metrics-port ----------------------------------------------------------

METRICS_TOKEN = "worker-scrape-token-0123456789abcdef"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_worker_with_a_metrics_port_reports_its_own_deliveries(
    live_app: Callable[..., LiveApp], smtp: tuple[SmtpSink, int], tmp_path: Path
) -> None:
    """A worker alone in its container: no web process sums its counts, so it serves
    them itself; the web process, which sent nothing, reports none of them."""
    sink, port = smtp
    app = live_app(
        inprocess_worker=False, email_provider="smtp", smtp_host="127.0.0.1", smtp_port=port
    )
    create_verified_account(app.settings)
    metrics_port = free_port()
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "resetflow", "worker", "--metrics-port", str(metrics_port)],
        env=_env(
            RESETFLOW_DATA_DIR=str(app.settings.data_dir),
            RESETFLOW_EMAIL_PROVIDER="smtp",
            RESETFLOW_SMTP_HOST="127.0.0.1",
            RESETFLOW_SMTP_PORT=str(port),
            RESETFLOW_WORKER_POLL_SECONDS="0.2",
            RESETFLOW_METRICS_TOKEN=METRICS_TOKEN,
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{metrics_port}"
    sent = (
        "resetflow_deliveries_total",
        (("channel", "email"), ("provider", "smtp"), ("status", "sent")),
    )
    try:
        _wait_until_ok(f"{url}/healthz", worker, tmp_path / "worker.log")
        with app.client() as client:
            assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
            sink.wait_for("ada@example.com", timeout=20)
            web = _samples(client.get("/metrics").text)

        bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        deadline = time.monotonic() + 10
        while (own := _samples(httpx.get(f"{url}/metrics", headers=bearer).text)).get(sent) != 1:
            assert time.monotonic() < deadline, own
            time.sleep(0.1)
        refused = httpx.get(f"{url}/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        # The outbox gauges are the web processes' (read from the database when scraped).
        assert not [name for name, _ in own if name.startswith("resetflow_outbox_")]
        assert web.get(sent) is None
        assert web[("resetflow_codes_issued_total", (("purpose", "reset"),))] == 1

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"RESETFLOW_METRICS_DIR": "shared"}, "would count them twice"),
        (
            prod_environment(),
            "set RESETFLOW_METRICS_TOKEN",
        ),
    ],
)
def test_a_worker_refuses_a_metrics_port_that_would_mislead_or_leak(
    tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    done = run_resetflow(
        "worker",
        "--metrics-port",
        str(free_port()),
        env={"RESETFLOW_DATA_DIR": str(tmp_path / "data"), **env},
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert reason in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
