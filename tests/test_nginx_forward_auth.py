"""The nginx snippet of docs/integration.md, run for real: Debian's nginx in front of
resetflow and a tiny upstream that echoes the headers it receives (GET /auth/check, R59).

Skipped, with the reason, when nginx is not installed; failed when CI=true.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import IN_CI, LiveApp
from tests.support.flow import PASSWORD, sign_up_verified
from tests.support.servers import free_port

DOC = Path(__file__).parent.parent / "docs" / "integration.md"
SPOOFED = {
    "X-Resetflow-User-Id": "attacker-id",
    "X-Resetflow-User-Email": "attacker@evil.example",
    "X-Resetflow-User-Name": "Mallory",
    "X-Resetflow-User-Phone": "+15555550123",
}


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if found is None:
        message = "nginx not installed: apt-get install nginx to run the forward-auth test"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: it must run in CI)")
        pytest.skip(message)
    return found


def documented_snippet() -> str:
    """The ```nginx block of docs/integration.md, as a reader would copy it."""
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/integration.md should hold exactly one nginx snippet"
    return str(blocks[0])


def nginx_config(snippet: str, *, resetflow: int, app: int, listen: int, tmp: Path) -> str:
    """The snippet on loopback ports without TLS, inside a minimal nginx.conf whose files
    all live in ``tmp``. Every edit must find its text once: the doc cannot drift away."""
    edits = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{resetflow};",
        "server 127.0.0.1:3000;": f"server 127.0.0.1:{app};",
        "listen 443 ssl;": f"listen 127.0.0.1:{listen};",
    }
    for old, new in edits.items():
        assert snippet.count(old) == 1, old
        snippet = snippet.replace(old, new)
    snippet = "\n".join(
        line for line in snippet.splitlines() if not line.strip().startswith("ssl_certificate")
    )
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / name).mkdir()
    return f"""
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{snippet}
}}
"""


class Echo(BaseHTTPRequestHandler):
    """The application behind the proxy: answers with the headers it received."""

    received: ClassVar[list[list[tuple[str, str]]]] = []

    def do_GET(self) -> None:
        headers = list(self.headers.items())
        type(self).received.append(headers)
        body = json.dumps({"path": self.path, "headers": headers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def echo_server() -> Iterator[tuple[int, list[list[tuple[str, str]]]]]:
    received: ClassVar[list[list[tuple[str, str]]]] = []
    handler = type("EchoHandler", (Echo,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), received
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running_nginx(binary: str, config: str, tmp: Path, port: int) -> Iterator[None]:
    conf = tmp / "nginx.conf"
    conf.write_text(config)
    command = [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/static/nothing", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
                    raise AssertionError(f"nginx did not start: {log}") from None
                time.sleep(0.05)
        yield
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def proxied(
    live_app: Callable[..., LiveApp], tmp_path: Path
) -> Iterator[tuple[str, LiveApp, list[list[tuple[str, str]]]]]:
    """nginx on a free loopback port, configured with the documented snippet, in front
    of resetflow and the echo app; yields the proxy's URL."""
    binary = nginx_binary()
    listen = free_port()
    proxy_url = f"http://127.0.0.1:{listen}"
    app = live_app(
        base_url=proxy_url,
        trusted_proxies="127.0.0.1/32",
        return_to_allowed=f"{proxy_url}/",
    )
    resetflow_port = int(app.url.rsplit(":", 1)[1])
    with echo_server() as (echo_port, received):
        config = nginx_config(
            documented_snippet(),
            resetflow=resetflow_port,
            app=echo_port,
            listen=listen,
            tmp=tmp_path,
        )
        with running_nginx(binary, config, tmp_path, listen):
            yield proxy_url, app, received


def test_r59_nginx_sends_anonymous_people_to_sign_in_with_return_to(
    proxied: tuple[str, LiveApp, list[list[tuple[str, str]]]],
) -> None:
    proxy_url, _, received = proxied
    with httpx.Client(base_url=proxy_url, timeout=30) as client:
        wanted = "/reports/2026?view=all&q=a%20b"
        response = client.get(wanted, headers=SPOOFED)
        assert response.status_code == 302
        assert response.headers["location"] == (
            f"{proxy_url}/login?return_to={quote(proxy_url + wanted, safe='')}"
        )
        # A POST is sent the same way (the redirect is asked with GET).
        posted = client.post("/reports", content=b"x=1")
        assert posted.status_code == 302
        assert posted.headers["location"].startswith(f"{proxy_url}/login?return_to=")
        # A forged Host cannot make it point elsewhere: no return_to at all.
        forged = client.get("/reports", headers={"Host": "evil.example"})
        assert forged.status_code == 302
        assert forged.headers["location"] == f"{proxy_url}/login"
        # The sign-in page itself is resetflow's, through the same proxy.
        page = client.get(response.headers["location"])
        assert page.status_code == 200
        assert 'name="return_to"' in page.text
    assert received == []  # the app never saw an anonymous request


def test_nginx_hands_the_signed_in_user_to_the_app_and_never_a_spoofed_one(
    proxied: tuple[str, LiveApp, list[list[tuple[str, str]]]],
) -> None:
    proxy_url, app, received = proxied
    with app.client() as direct:  # the dev mailbox is not among the proxied paths
        sign_up_verified(direct, name="Zoë Ünal")
    with httpx.Client(base_url=proxy_url, timeout=30) as client:
        login = client.post(
            "/login",
            json={
                "email": "ada@example.com",
                "password": PASSWORD,
                "return_to": f"{proxy_url}/reports",
            },
        )
        assert login.status_code == 200
        assert login.json()["redirect"] == f"{proxy_url}/reports"
        me = client.get("/sessions/whoami").json()["user"]

        variants = [
            SPOOFED,
            {k.lower(): v for k, v in SPOOFED.items()},
            {k.replace("-", "_"): v for k, v in SPOOFED.items()},
        ]
        for spoofed in variants:
            response = client.get("/reports?x=1", headers=spoofed)
            assert response.status_code == 200, response.text
            seen = response.json()
            assert seen["path"] == "/reports?x=1"
            user_headers = [
                (name.lower(), value)
                for name, value in seen["headers"]
                if name.lower().replace("_", "-").startswith("x-resetflow-user")
            ]
            assert sorted(user_headers) == sorted(
                [
                    ("x-resetflow-user-id", me["id"]),
                    ("x-resetflow-user-email", "ada@example.com"),
                    ("x-resetflow-user-name", "Zo%C3%AB%20%C3%9Cnal"),
                    ("x-resetflow-user-phone", "+14155550100"),
                ]
            )
        assert len(received) == len(variants)
        for headers in received:
            assert not any(value in SPOOFED.values() for _, value in headers)

        # Signed out: back to the sign-in page, and the app sees nothing more.
        assert client.post("/logout", json={}).status_code == 200
        assert client.get("/reports", headers=SPOOFED).status_code == 302
        assert len(received) == len(variants)
