"""CPU per request, in process (``make bench-cpu``): a quick, low-noise companion to the
load benchmark for working on the hot path (docs/performance.md).

It builds the app of the embedded default (a SQLite file in a temporary directory,
in-process delivery, the rate limits out of the way as in ``bench.load``), inserts
``--users`` accounts, then sends ``-n`` requests straight into the ASGI app from
``--concurrency`` tasks — half for known, half for unknown addresses, no cookies — and
waits until the in-process worker has delivered every job. No HTTP server and no load
generator share the process, so the figure is this process's CPU time (all threads) per
request: the application's own cost, without uvicorn's. ``--path /healthz`` measures the
ceiling's route the same way; ``--path /sessions/whoami`` and ``--path /auth/check`` ask
with one signed-in session's cookie (docs/integration.md); ``--smtp`` delivers to an
aiosmtpd sink in a child process instead of the dev mailbox; ``--cprofile FILE`` writes a
profile of the run.

    .venv/bin/python -m bench.cpu -n 5000 [--smtp] [--path /healthz|/sessions/whoami]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

# The same users, limits and helpers as the load benchmark.
from bench.procs import LIMITS
from bench.stores import SqliteStore, hash_password
from tests.support.servers import free_port


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=3000)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--path", default="/send-token", choices=["/send-token", "/healthz", *SESSION_PATHS]
    )
    parser.add_argument("--smtp", action="store_true", help="deliver to an aiosmtpd sink")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of the run here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--bare",
        action="store_true",
        help="with --path /healthz: the bare FastAPI app of bench/peers/bare_fastapi.py "
        "instead (the thin edge's floor, measured the same way)",
    )
    parser.add_argument(
        "--no-direct-statements",
        action="store_true",
        help="keep the inline connection but run every statement through SQLAlchemy "
        "(what storage/prepared.py saves; RESETFLOW_SQLITE_FAST_PATH=false turns off both)",
    )
    return parser.parse_args(argv)


SESSION_PATHS = ("/sessions/whoami", "/auth/check")
SESSION_ID = "bench-cpu-" + "s" * 40


def scope_for(path: str, body: bytes) -> dict[str, Any]:
    cookie = [(b"cookie", f"resetflow_session={SESSION_ID}".encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST" if path == "/send-token" else "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"user-agent", b"bench-cpu"),
            *(cookie if path in SESSION_PATHS else []),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def run(args: argparse.Namespace, data_dir: Path, password_hash: str) -> str:
    from resetflow.app import create_app
    from resetflow.config import load_settings

    app = create_app(load_settings())
    if args.bare:
        from bench.peers.bare_fastapi import app as bare

        target: Any = bare
    else:
        target = app
    rng = random.Random(args.seed)  # noqa: S311 - which addresses, not a secret
    emails = [f"user{i}@example.com" for i in range(args.users)]
    bodies = [
        json.dumps({"email": rng.choice(emails) if i % 2 == 0 else f"n{i}@example.org"}).encode()
        for i in range(args.requests)
    ]
    statuses: dict[int, int] = {}

    async def call(body: bytes) -> None:
        delivered = False

        async def receive() -> MutableMapping[str, Any]:
            nonlocal delivered
            if delivered:  # the app only asks again for a disconnect
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await target(scope_for(args.path, body), receive, send)

    async def client(queue: list[bytes]) -> None:
        while queue:
            await call(queue.pop())

    async with app.router.lifespan_context(app):
        SqliteStore(data_dir).insert_users(
            [f"u{i:031x}" for i in range(args.users)], emails, password_hash
        )
        if args.path in SESSION_PATHS:
            await sign_in(app, user_id=f"u{0:031x}")
        database = sqlite3.connect(data_dir / "resetflow.db")
        profile = cProfile.Profile() if args.cprofile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        queue = list(bodies)
        await asyncio.gather(*(client(queue) for _ in range(args.concurrency)))
        answered = time.process_time()
        pending = (
            "SELECT count(*) FROM delivery_jobs WHERE status IN ('queued', 'sending', 'decoy')"
        )
        while database.execute(pending).fetchone()[0]:  # noqa: ASYNC110 - rows, not an event
            await asyncio.sleep(0.01)
        if profile:
            profile.disable()
            profile.dump_stats(args.cprofile)
        cpu_total, wall_total = time.process_time() - cpu, time.perf_counter() - wall
        jobs = dict(database.execute("SELECT status, count(*) FROM delivery_jobs GROUP BY 1"))
        database.close()
    n = args.requests
    return (
        f"{args.path}: {n} requests, answers {statuses}; CPU per request "
        f"{1e3 * (answered - cpu) / n:.3f} ms answering, {1e3 * cpu_total / n:.3f} ms with "
        f"delivery; {n / wall_total:.0f} req/s; jobs {jobs}"
    )


async def sign_in(app: Any, *, user_id: str) -> None:
    """A signed-in session for the first user, as a sign-in would have saved it."""
    from datetime import timedelta

    from resetflow.crypto import sha256_hex
    from resetflow.storage.sessions import SessionRecord

    services = app.state.services
    now = services.clock.now()
    record = SessionRecord(
        user_id=user_id,
        data={"csrf": "x" * 43, "authenticated_at": now.isoformat()},
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    await services.sessions.save(sha256_hex(SESSION_ID), record)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare and args.path != "/healthz":
        raise SystemExit("--bare answers /healthz only")
    if args.no_direct_statements:
        from resetflow.storage import prepared

        # Benchmark only: Prepared then finds no inline sqlite3 connection to run on.
        prepared.inline_sqlite = lambda _conn: None  # type: ignore[assignment]
    password_hash = hash_password()
    sink = None
    with tempfile.TemporaryDirectory(prefix="resetflow-cpu-") as tmp:
        os.environ.update(LIMITS)
        os.environ.update(
            {
                "RESETFLOW_ENV": "dev",
                "RESETFLOW_DATA_DIR": tmp,
                "RESETFLOW_EMAIL_PROVIDER": "mailbox",
                "RESETFLOW_SMS_PROVIDER": "mailbox",
            }
        )
        try:
            if args.smtp:
                port = free_port()
                sink_command = ["-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink"]
                sink = subprocess.Popen(  # noqa: S603 - our own sink on loopback
                    [sys.executable, *sink_command, "-l", f"127.0.0.1:{port}"]
                )
                time.sleep(1.0)
                os.environ.update(
                    {
                        "RESETFLOW_EMAIL_PROVIDER": "smtp",
                        "RESETFLOW_SMTP_HOST": "127.0.0.1",
                        "RESETFLOW_SMTP_PORT": str(port),
                    }
                )
            # The dev mailbox prints each message: not what is measured.
            with open(os.devnull, "w") as quiet:
                stdout, sys.stdout = sys.stdout, quiet
                try:
                    line = asyncio.run(run(args, Path(tmp), password_hash))
                finally:
                    sys.stdout = stdout
        finally:
            if sink is not None:
                sink.terminate()
                sink.wait(timeout=10)
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
