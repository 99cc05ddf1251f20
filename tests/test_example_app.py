"""examples/fastapi_app, end to end: a host FastAPI app that mounts resetflow at /auth,
served by uvicorn as its README says, driven over real HTTP with a cookie jar."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.flow import PASSWORD, find_code
from tests.support.processes import clean_env
from tests.support.servers import free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app"


@pytest.fixture
def example_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        PYTHONUNBUFFERED="1",
        RESETFLOW_DATA_DIR=str(tmp_path / "data"),
        RESETFLOW_BASE_URL=f"{url}/auth",
        RESETFLOW_COOKIE_PATH="/",
        RESETFLOW_RETURN_TO_ALLOWED=f"{url}/",
    )
    log = (tmp_path / "example.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)],
        cwd=EXAMPLE,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "example.log").read_text()
            try:
                if httpx.get(f"{url}/auth/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the example app did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _dev_code(client: httpx.Client, to: str) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for message in client.get("/auth/dev/outbox.json").json():
            if message["to"] == to and message["notification"] == "verify-contact":
                return find_code(message["text"])
        time.sleep(0.05)
    raise AssertionError(f"no verification code for {to}")


def test_example_app_sends_visitors_to_sign_in_and_back_and_greets_them(
    example_url: str,
) -> None:
    with httpx.Client(base_url=example_url, timeout=30) as client:
        anonymous = client.get("/")
        assert anonymous.status_code == 303
        target = urlsplit(anonymous.headers["location"])
        assert target.path == "/auth/login"
        assert parse_qs(target.query)["return_to"] == [f"{example_url}/"]

        # The sign-in page links to sign-up, which keeps the return_to of this visit.
        login_page = client.get(anonymous.headers["location"])
        assert login_page.status_code == 200
        assert 'href="/auth/new-user' in login_page.text
        created = client.post(
            "/auth/create-user",
            json={
                "return_to": f"{example_url}/",
                "name": "Grace Hopper",
                "email": "grace@example.com",
                "phone": "+14155550123",
                "password": PASSWORD,
                "preference": "email",
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["redirect"] == "/auth/verify-contact"
        verified = client.post(
            "/auth/verify-contact", json={"token": _dev_code(client, "grace@example.com")}
        )
        assert verified.status_code == 200, verified.text
        assert verified.json()["redirect"] == f"{example_url}/"

        home = client.get("/")
        assert home.status_code == 200
        assert "Hello, Grace Hopper" in home.text

        assert client.post("/auth/logout", json={}).status_code == 200
        assert client.get("/").status_code == 303
        signed_in = client.post(
            "/auth/login",
            json={
                "email": "grace@example.com",
                "password": PASSWORD,
                "return_to": f"{example_url}/",
            },
        )
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["redirect"] == f"{example_url}/"
        assert "Hello, Grace Hopper" in client.get("/").text
