"""``resetflow serve``'s connections: TCP_NODELAY whoever bound the listening socket, and
one clear line when the port is taken.

With ``--workers N`` uvicorn's supervisor binds the listening socket with ``proto`` 0, so
asyncio left Nagle's algorithm on for every accepted connection (~40 ms per keep-alive
request; uvicorn issue #3149). resetflow/web/nodelay.py sets TCP_NODELAY in the HTTP
protocol itself. No timing is asserted here: the socket option and the behaviour are.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from resetflow.cli.sockets import ListenError, check_can_listen
from resetflow.web import nodelay
from tests.support.processes import ProcessSet, run_resetflow
from tests.support.servers import free_port

PROTOCOLS = {
    "auto": nodelay.HTTP_PROTOCOL,  # what ``resetflow serve`` passes
    "h11": "resetflow.web.nodelay:NoDelayH11Protocol",
    "httptools": "resetflow.web.nodelay:NoDelayHttpToolsProtocol",
}


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
HOSTS = ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)]
# asyncio is where the option was missing; uvloop (uvicorn[standard]) sets it itself.
LOOPS = ["asyncio", "uvloop"]


def _listener_like_uvicorns_supervisor(host: str) -> socket.socket:
    """A listening socket bound the way uvicorn's ``Config.bind_socket`` does for
    ``--workers``: ``socket.socket(family)``, so ``proto`` 0 (the cause of the bug)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.set_inheritable(True)
    return sock


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def _uvicorn_worker(
    listener: socket.socket, protocol: str, loop: str = "asyncio"
) -> Iterator[uvicorn.Server]:
    """``uvicorn.Server.run(sockets=[listener])`` in a thread: what each worker process of
    ``serve --workers N`` runs, on the socket its supervisor bound."""
    config = uvicorn.Config(_ok, http=protocol, loop=loop, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _keep_alive_gets(host: str, port: int, path: str, count: int) -> list[tuple[int, bytes]]:
    """``count`` GETs on one HTTP/1.1 connection; fails if it was not reused."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    answers: list[tuple[int, bytes]] = []
    try:
        local: Any = None
        for _ in range(count):
            connection.request("GET", path)
            response = connection.getresponse()
            answers.append((response.status, response.read()))
            assert connection.sock is not None, "the server closed the connection"
            local = local or connection.sock.getsockname()
            assert connection.sock.getsockname() == local, "a new connection was opened"
    finally:
        connection.close()
    return answers


# The protocol ---------------------------------------------------------------------------


def test_the_protocol_serve_uses_is_the_one_uvicorn_auto_picks_with_nodelay() -> None:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    config = uvicorn.Config(_ok, http=nodelay.HTTP_PROTOCOL)
    config.load()
    assert config.http_protocol_class is nodelay.NoDelayHTTPProtocol
    assert issubclass(nodelay.NoDelayHTTPProtocol, AutoHTTPProtocol)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("protocol", ["auto", "h11", "httptools"])
@pytest.mark.parametrize("loop", LOOPS)
def test_connections_accepted_on_a_proto_0_listener_have_tcp_nodelay(
    host: str, protocol: str, loop: str
) -> None:
    if protocol == "httptools":
        pytest.importorskip("httptools")
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    listener = _listener_like_uvicorns_supervisor(host)
    assert listener.proto == 0  # asyncio would not set TCP_NODELAY on what it accepts
    port = listener.getsockname()[1]
    with _uvicorn_worker(listener, PROTOCOLS[protocol], loop) as server:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            connection.request("GET", "/")
            assert connection.getresponse().read() == b"ok"
            accepted = [
                protocol.transport.get_extra_info("socket")
                for protocol in list(server.server_state.connections)
            ]
            assert len(accepted) == 1
            assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            connection.close()


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_keep_alive_requests_are_answered_through_the_nodelay_protocols(protocol: str) -> None:
    if protocol == "httptools":
        pytest.importorskip("httptools")
    listener = _listener_like_uvicorns_supervisor("127.0.0.1")
    with _uvicorn_worker(listener, PROTOCOLS[protocol]):
        answers = _keep_alive_gets("127.0.0.1", listener.getsockname()[1], "/", 5)
    assert answers == [(200, b"ok")] * 5


# The pre-flight check -------------------------------------------------------------------


def test_check_can_listen_accepts_a_free_port() -> None:
    check_can_listen("127.0.0.1", free_port())


@pytest.mark.parametrize("host", HOSTS)
def test_check_can_listen_names_a_taken_port_in_one_line(host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            check_can_listen(host, port)
    message = str(caught.value)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert message == (
        f"cannot listen on {where}: port {port} is already in use (is another server running?)"
    )


def test_check_can_listen_refuses_an_address_of_another_machine() -> None:
    with pytest.raises(ListenError, match="not an address of this machine"):
        check_can_listen("192.0.2.1", free_port())  # TEST-NET-1: never local


# ``resetflow serve`` as a process ---------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
def test_serve_with_two_workers_answers_keep_alive_requests_and_stops_on_sigterm(
    tmp_path: Path, host: str
) -> None:
    port = free_port() if host == "127.0.0.1" else _free_ipv6_port()
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    processes = ProcessSet(logs=tmp_path / "logs", env={"RESETFLOW_DATA_DIR": str(tmp_path)})
    try:
        with processes.logs_on_failure():
            processes.start("web", "serve", "--workers", "2", "--host", host, "--port", str(port))
            processes.wait_ready("web", f"{url}/healthz")
            _wait_for_events(processes, "web", "Application startup complete.", count=2)

            answers = _keep_alive_gets(host, port, "/healthz", 10)
            assert [status for status, _ in answers] == [200] * 10
            assert {body for _, body in answers} == {b'{"status":"ok"}'}

            assert processes.stop("web") == 0
            log = processes.log("web")
            assert "Traceback" not in log
            assert _count_events(processes, "web", "Finished server process") == 2  # both workers
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, port), timeout=5).close()
    finally:
        processes.stop_all()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_taken_port_fails_with_one_line(tmp_path: Path, workers: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_resetflow(
            "serve",
            "--workers",
            workers,
            "--port",
            str(port),
            env={"RESETFLOW_DATA_DIR": str(tmp_path / "data")},
            cwd=tmp_path,
        )
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"resetflow: cannot listen on 127.0.0.1:{port}: "
        f"port {port} is already in use (is another server running?)"
    ]
    assert done.stdout == ""  # nothing started: no banner, no migration


def _free_ipv6_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        return int(sock.getsockname()[1])


def _count_events(processes: ProcessSet, name: str, start: str) -> int:
    """How many JSON log entries of the process have an event beginning with ``start``."""
    entries = [json.loads(line) for line in processes.log(name).splitlines() if line[:1] == "{"]
    return sum(1 for entry in entries if str(entry.get("event", "")).startswith(start))


def _wait_for_events(processes: ProcessSet, name: str, start: str, *, count: int) -> None:
    deadline = time.monotonic() + 30
    while _count_events(processes, name, start) < count:
        assert processes.alive(name), processes.log(name)
        assert time.monotonic() < deadline, f"{start!r} not logged {count} times"
        time.sleep(0.1)
