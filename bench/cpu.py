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

``--database-url postgresql+asyncpg://…`` (with ``--redis-url``, default db 12) measures
the web side on PostgreSQL + Redis instead: a fresh database on that server (created,
migrated, dropped after), the limits and sessions in Redis under a key prefix of the run's
own (deleted after), no worker in the process (the jobs only queue, as for a web process
with separate workers). It also counts the round trips per request: statements, BEGINs
and COMMITs sent to PostgreSQL (SQLAlchemy's events) and writes to Redis (one per command
or pipeline, counted by a wrapper in this benchmark only).

    .venv/bin/python -m bench.cpu -n 5000 [--smtp] [--path /healthz|/sessions/whoami]
    .venv/bin/python -m bench.cpu -n 3000 --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

# The same users, limits and helpers as the load benchmark.
from bench.common import save_signed_in_session
from bench.procs import LIMITS
from bench.stores import PgStore, SqliteStore, Store, hash_password
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
        "--database-url",
        help="a PostgreSQL server (postgresql+asyncpg://…/db): measure the web side on "
        "PostgreSQL + Redis, in a fresh database of its own",
    )
    parser.add_argument(
        "--redis-url", default=CPU_REDIS, help=f"with --database-url (default {CPU_REDIS})"
    )
    parser.add_argument(
        "--no-direct-statements",
        action="store_true",
        help="keep the inline connection but run every statement through SQLAlchemy "
        "(what storage/prepared.py saves; RESETFLOW_SQLITE_FAST_PATH=false turns off both); "
        "on PostgreSQL, no statement straight on asyncpg in autocommit either",
    )
    return parser.parse_args(argv)


SESSION_PATHS = ("/sessions/whoami", "/auth/check")
# A database number of its own: the tests use 15, bench.timing 14, bench.load 13.
CPU_REDIS = "redis://127.0.0.1:6379/12"
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


async def run(args: argparse.Namespace, store: Store, password_hash: str) -> str:
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
        # In a thread: PgStore runs its own event loop.
        await asyncio.to_thread(
            store.insert_users, [f"u{i:031x}" for i in range(args.users)], emails, password_hash
        )
        if args.path in SESSION_PATHS:
            await sign_in(app, user_id=f"u{0:031x}")
        counts = RoundTrips.attach(app) if isinstance(store, PgStore) else None
        profile = cProfile.Profile() if args.cprofile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        queue = list(bodies)
        await asyncio.gather(*(client(queue) for _ in range(args.concurrency)))
        answered, answered_wall = time.process_time(), time.perf_counter()
        if isinstance(store, SqliteStore):
            pending = (
                "SELECT count(*) FROM delivery_jobs WHERE status IN ('queued', 'sending', 'decoy')"
            )
            while store.query(pending)[0][0]:  # noqa: ASYNC110 - rows, not an event
                await asyncio.sleep(0.01)
        if profile:
            profile.disable()
            profile.dump_stats(args.cprofile)
        cpu_total, wall_total = time.process_time() - cpu, time.perf_counter() - wall
        if counts is not None:
            counts.detach()
        jobs = dict(
            await asyncio.to_thread(
                store.query, "SELECT status, count(*) FROM delivery_jobs GROUP BY 1"
            )
        )
    n = args.requests
    if counts is not None:  # PostgreSQL + Redis: the web side only, the jobs queue
        return (
            f"{args.path} on PostgreSQL + Redis: {n} requests, answers {statuses}; CPU per "
            f"request {1e3 * (answered - cpu) / n:.3f} ms answering; "
            f"{n / (answered_wall - wall):.0f} req/s; round trips per request: "
            f"{counts.summary(n)}; jobs {jobs}"
        )
    return (
        f"{args.path}: {n} requests, answers {statuses}; CPU per request "
        f"{1e3 * (answered - cpu) / n:.3f} ms answering, {1e3 * cpu_total / n:.3f} ms with "
        f"delivery; {n / wall_total:.0f} req/s; jobs {jobs}"
    )


class RoundTrips:
    """Counts what a run sends: statements to PostgreSQL (SQLAlchemy's
    ``before_cursor_execute``, and those storage/prepared.py sends straight to asyncpg),
    the BEGINs, COMMITs and ROLLBACKs and the statements prepared on a cache miss that
    asyncpg sends for SQLAlchemy (not those of its own cache, for the direct statements:
    at most one per statement and new connection), and writes to Redis (one per command
    or pipeline). The wrappers are this benchmark's, for the run only."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.pg: dict[str, int] = {
            "statements": 0,
            "direct": 0,
            "begin": 0,
            "commit": 0,
            "rollback": 0,
            "prepare": 0,
        }
        self.connects = 0  # new connections (several round trips each, not in the sum)
        self.redis = 0
        self._originals: list[tuple[Any, str, Any]] = []

    @classmethod
    def attach(cls, app: Any) -> RoundTrips:
        import asyncpg
        from asyncpg.transaction import Transaction
        from redis.asyncio.connection import AbstractConnection
        from sqlalchemy import event

        from resetflow.storage import prepared

        counts = cls(app.state.services.database.engine.sync_engine)
        event.listen(counts.engine, "before_cursor_execute", counts._statement)
        event.listen(counts.engine, "connect", counts._connect)
        counts._wrap(Transaction, "start", "begin")
        counts._wrap(Transaction, "commit", "commit")
        counts._wrap(Transaction, "rollback", "rollback")
        counts._wrap(asyncpg.Connection, "prepare", "prepare")
        counts._wrap(AbstractConnection, "send_packed_command", None)
        counts._wrap(prepared, "on_asyncpg", "direct")
        return counts

    def _wrap(self, owner: Any, name: str, key: str | None) -> None:
        original = getattr(owner, name)
        counts = self

        async def counted(*args: Any, **kwargs: Any) -> Any:
            if key is None:
                counts.redis += 1
            else:
                counts.pg[key] += 1
            return await original(*args, **kwargs)

        self._originals.append((owner, name, original))
        setattr(owner, name, counted)

    def detach(self) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "connect", self._connect)
        for owner, name, original in self._originals:
            setattr(owner, name, original)

    def _statement(self, *_: Any) -> None:
        self.pg["statements"] += 1

    def _connect(self, *_: Any) -> None:
        self.connects += 1

    def summary(self, n: int) -> str:
        pg = ", ".join(f"{k} {v / n:.2f}" for k, v in self.pg.items())
        return (
            f"PostgreSQL {sum(self.pg.values()) / n:.2f} ({pg}; {self.connects} new "
            f"connections in the run), Redis {self.redis / n:.2f}"
        )


async def sign_in(app: Any, *, user_id: str) -> None:
    """A signed-in session for the first user, as a sign-in would have saved it."""
    await save_signed_in_session(
        app.state.services, session_id=SESSION_ID, user_id=user_id, lifetime=timedelta(hours=1)
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare and args.path != "/healthz":
        raise SystemExit("--bare answers /healthz only")
    if args.no_direct_statements:
        from resetflow.storage import prepared

        # Benchmark only: Prepared then finds no inline sqlite3 connection, and no asyncpg
        # connection in autocommit, to run on.
        prepared.inline_sqlite = lambda _conn: None  # type: ignore[assignment]
        prepared.autocommit_asyncpg = lambda _conn: None  # type: ignore[assignment]
    if args.database_url and (args.smtp or args.path != "/send-token"):
        raise SystemExit("--database-url measures /send-token's web side: no --smtp, no --path")
    password_hash = hash_password()
    sink = None
    pg: PgStore | None = None
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
            if args.database_url:
                from resetflow.storage.migrate import upgrade

                tag = secrets.token_hex(6)
                pg = PgStore(args.database_url, f"resetflow_cpu_{tag}", args.redis_url, f"cpu{tag}")
                pg.create()
                upgrade(pg.url)
                os.environ.update(
                    {
                        "RESETFLOW_DATABASE_URL": pg.url,
                        "RESETFLOW_REDIS_URL": pg.redis_url,
                        "RESETFLOW_REDIS_PREFIX": pg.prefix,
                        # Separate workers, as in production: the jobs only queue here.
                        "RESETFLOW_INPROCESS_WORKER": "false",
                    }
                )
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
                    store = pg or SqliteStore(Path(tmp))
                    line = asyncio.run(run(args, store, password_hash))
                finally:
                    sys.stdout = stdout
        finally:
            if sink is not None:
                sink.terminate()
                sink.wait(timeout=10)
            if pg is not None:
                pg.cleanup()
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
