"""When Redis or PostgreSQL goes away: 503 with Retry-After and the generic body, never a
500 or a half-written reset, and recovery by itself once it is back. Each test runs its
own server on a free port; the machine's shared services are never stopped."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, LiveApp
from tests.support.flow import PASSWORD, find_code, sign_up_verified, wait_for_dev_message
from tests.support.servers import free_port

REDIS_SERVER = shutil.which("redis-server")


@contextmanager
def own_redis(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [
            REDIS_SERVER or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}", timeout=0.2)
            except httpx.RemoteProtocolError:
                break  # something answers on the port (not HTTP): Redis is up
            except httpx.HTTPError:
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_binary() -> str:
    if REDIS_SERVER is None:
        if IN_CI:
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return REDIS_SERVER


def test_redis_going_away_gives_503_then_the_service_recovers(
    live_app: Callable[..., LiveApp], redis_binary: str, tmp_path: Path
) -> None:
    port = free_port()
    with own_redis(port, tmp_path):
        app = live_app(redis_url=f"redis://127.0.0.1:{port}/0")
        client = app.client()
        sign_up_verified(client)
        assert client.post("/send-token", json={"email": "ada@example.com"}).status_code == 202
        code = find_code(
            wait_for_dev_message(client, to="ada@example.com", notification="password-reset-token")[
                "text"
            ]
        )
    # Redis is gone (and its sessions with it: it kept nothing on disk).
    for path, body in [
        ("/verify-token", {"token": code}),
        ("/send-token", {"email": "ada@example.com"}),
    ]:
        answer = client.post(path, json=body)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json() == {
            "error": "The service is busy. Please try again shortly.",
            "code": "service_unavailable",
        }
        assert int(answer.headers["retry-after"]) > 0
    page = client.get("/forgot-password")
    assert page.status_code == 503
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    with own_redis(port, tmp_path):
        assert client.get("/readyz").status_code == 200
        fresh = app.client()
        assert (
            fresh.post(
                "/login", json={"email": "ada@example.com", "password": PASSWORD}
            ).status_code
            == 200
        )
        assert fresh.get("/account").status_code == 200
        fresh.close()
    client.close()
