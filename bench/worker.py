"""The delivery worker's cost per message (issue 15): CPU, statements and drain time.

It makes a fresh store (a SQLite file, or a new database on the PostgreSQL server of
``--database-url``, dropped afterwards), starts an SMTP sink in a child process (so its
CPU is not counted), writes ``--messages`` password-reset jobs through the app's own
:meth:`Outbox.enqueue` (one recipient each; ``--decoys`` adds that share of decoy jobs,
as unknown addresses write), then runs the real worker loop
(:meth:`DeliveryWorker.run`, built by ``build_services`` as ``resetflow worker`` builds
it, on uvloop when installed) in this process until every job is settled.

Reported: this process's CPU (all threads) per delivered message while the worker drains,
the statements and transactions it ran per message (SQLAlchemy ``before_cursor_execute``
and ``begin`` events on the worker's engine; on PostgreSQL a transaction adds two round
trips, BEGIN and COMMIT; on SQLite the direct statements of storage/prepared.py do not
pass the event and are not counted), the drain time, and from the sink how many messages
each recipient got (every one exactly once, or the run fails).

``--rate R`` instead writes the jobs one per transaction at R per second while the worker
runs (as requests would, waking it through ``NOTIFY`` on PostgreSQL) and reports the
delivery latency, commit to the sink's arrival, p50/p99/max; the CPU figure then includes
the writing.

    .venv/bin/python -m bench.worker --messages 2000 [--database-url postgresql+asyncpg://…]
    .venv/bin/python -m bench.worker --messages 2000 --rate 200 --database-url …
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import percentile
from bench.stores import DEFAULT_PG, DEFAULT_REDIS, PgDatabase


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument(
        "--database-url",
        default="sqlite",
        help=f"'sqlite' (a temporary file), or a PostgreSQL server URL such as {DEFAULT_PG} "
        "(a fresh database is created on it and dropped)",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="with PostgreSQL")
    parser.add_argument("--decoys", type=float, default=0.0, help="share of decoy jobs")
    parser.add_argument("--rate", type=float, default=0.0, help="jobs/s written while running")
    parser.add_argument(
        "--wake-delay",
        type=float,
        default=None,
        help="DeliveryWorker.delay_after_wake(seconds), as `resetflow worker` sets it "
        "(default: its GATHER_SECONDS, 0 in a version without it)",
    )
    parser.add_argument("--smtp-pool", type=int, default=4, help="RESETFLOW_SMTP_POOL_SIZE")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of the drain here")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)  # the child process
    return parser.parse_args(argv)


# The sink (child process) -------------------------------------------------------------


def run_sink() -> int:
    """Print the port, receive until stdin closes, then print arrivals per recipient."""
    from bench.sink import running_sink

    with running_sink() as sink:
        print(sink.port, flush=True)
        sys.stdin.read()
        with sink._lock:
            raw = list(sink.raw)
    arrivals: dict[str, list[float]] = {}
    for arrived, rcpts, _ in raw:
        for to in rcpts:
            arrivals.setdefault(to.lower(), []).append(arrived)
    print(json.dumps(arrivals), flush=True)
    return 0


class Sink:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", "--sink", "1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def arrivals(self) -> dict[str, list[float]]:
        out, _ = self.process.communicate(timeout=60)
        found: dict[str, list[float]] = json.loads(out)
        return found


# The run ------------------------------------------------------------------------------


class Statements:
    """Statements and transactions on one engine (SQLAlchemy events)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.statements = 0
        self.transactions = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._statement)
        event.listen(engine.sync_engine, "begin", self._begin)

    def _statement(self, *_args: Any) -> None:
        self.statements += 1

    def _begin(self, *_args: Any) -> None:
        self.transactions += 1

    def reset(self) -> None:
        self.statements = self.transactions = 0


async def write_jobs(services: Any, recipients: list[tuple[str, bool]], per_tx: int) -> list[float]:
    """Write one job per recipient (decoy or real) through the outbox, ``per_tx`` per
    transaction; the commit time of each."""
    from resetflow.accounts.models import Channel
    from resetflow.notify.messages import Notification, Route
    from resetflow.notify.outbox import DECOY_ROUTE

    committed: list[float] = []
    for start in range(0, len(recipients), per_tx):
        async with services.database.write() as conn:
            now = services.clock.now()
            for to, decoy in recipients[start : start + per_tx]:
                await services.outbox.enqueue(
                    conn,
                    notification=Notification.PASSWORD_RESET_TOKEN,
                    routes=[DECOY_ROUTE] if decoy else [Route(channel=Channel.EMAIL, to=to)],
                    context={
                        "name": "Bench",
                        "base_url": services.settings.base_url,
                        "ttl_minutes": 15,
                        "token": f"{secrets.randbelow(10**6):06d}",
                    },
                    locale="en",
                    user_id=None if decoy else secrets.token_hex(16),
                    now=now,
                    expires_at=now + timedelta(minutes=15),
                    decoy=decoy,
                )
        committed += [time.time()] * len(recipients[start : start + per_tx])
        services.outbox.wake()
    return committed


async def pending(services: Any) -> int:
    from resetflow.storage.deliveries import DeliveryRepository

    async with services.database.read() as conn:
        return await DeliveryRepository(conn).count_pending()


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    from resetflow.config import load_settings
    from resetflow.notify.listener import OutboxListener
    from resetflow.services import build_services
    from resetflow.storage.database import Database

    services = build_services(load_settings())
    counted = Statements(services.database.engine)
    # The completion check runs on an engine of its own: not counted.
    watcher = Database(url)
    n = args.messages
    decoys = int(n * args.decoys)
    recipients = [(f"bench{i}@example.com", i < decoys) for i in range(n)]
    recipients.sort(key=lambda _: secrets.randbelow(1 << 30))
    real = [to for to, decoy in recipients if not decoy]
    listener = None
    try:
        await services.worker.housekeeping()  # once, before anything is measured
        committed: dict[str, float] = {}
        if not args.rate:
            times = await write_jobs(services, recipients, per_tx=100)
            committed = {to: at for (to, _), at in zip(recipients, times, strict=True)}
        if services.database.url.startswith("postgresql"):
            listener = OutboxListener(database_url=url, outbox=services.outbox)
            listener.start()
            await asyncio.wait_for(listener.connected.wait(), 10)
        from resetflow.notify import worker as worker_module

        gather = getattr(worker_module, "GATHER_SECONDS", 0.0)
        wake_delay = gather if args.wake_delay is None else args.wake_delay
        if wake_delay:
            services.worker.delay_after_wake(wake_delay)
        counted.reset()
        profile = cProfile.Profile() if args.cprofile else None
        if profile is not None:
            profile.enable()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        worker = asyncio.create_task(services.worker.run())
        if args.rate:
            interval = 1.0 / args.rate
            for i, (to, decoy) in enumerate(recipients):
                delay = wall0 + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                (at,) = await write_jobs(services, [(to, decoy)], per_tx=1)
                committed[to] = at
        while True:
            async with watcher.read() as conn:
                from resetflow.storage.deliveries import DeliveryRepository

                left = await DeliveryRepository(conn).count_pending()
            if left == 0:
                break
            await asyncio.sleep(0.01)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.cprofile)
        statements, transactions = counted.statements, counted.transactions
        services.worker.stop()
        await worker
        async with watcher.read() as conn:
            from sqlalchemy import text

            statuses = dict(
                (str(s), int(c))
                for s, c in await conn.execute(
                    text("SELECT status, count(*) FROM delivery_jobs GROUP BY status")
                )
            )
    finally:
        if listener is not None:
            await listener.stop()
        await watcher.close()
        await services.close()
    return {
        "store": "postgresql" if url.startswith("postgresql") else "sqlite",
        "messages": len(real),
        "decoys": decoys,
        "cpu_s": cpu,
        "wall_s": wall,
        "statements": statements,
        "transactions": transactions,
        "statuses": statuses,
        "committed": {to: committed[to] for to in real},
    }


def summarise(result: dict[str, Any], arrivals: dict[str, list[float]]) -> dict[str, Any]:
    committed: dict[str, float] = result.pop("committed")
    copies = Counter(len(arrivals.get(to, [])) for to in committed)
    latencies = sorted(arrivals[to][0] - at for to, at in committed.items() if arrivals.get(to))
    jobs = result["messages"] + result["decoys"]
    pg = result["store"] == "postgresql"
    round_trips = result["statements"] + (2 * result["transactions"] if pg else 0)
    n = max(result["messages"], 1)
    return {
        **result,
        "cpu_ms_per_message": 1e3 * result["cpu_s"] / n,
        "cpu_ms_per_job": 1e3 * result["cpu_s"] / max(jobs, 1),
        "statements_per_message": result["statements"] / n,
        "transactions_per_message": result["transactions"] / n,
        "round_trips_per_message": round_trips / n if pg else None,
        "messages_per_s": result["messages"] / result["wall_s"],
        "copies": {str(k): v for k, v in sorted(copies.items())},
        "latency_p50_ms": 1e3 * percentile(latencies, 0.5) if latencies else None,
        "latency_p99_ms": 1e3 * percentile(latencies, 0.99) if latencies else None,
        "latency_max_ms": 1e3 * latencies[-1] if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sink:
        return run_sink()
    from resetflow.cli.server import run_on_fastest_loop
    from resetflow.storage.migrate import upgrade

    sink = Sink()
    pg: PgDatabase | None = None
    with tempfile.TemporaryDirectory(prefix="resetflow-worker-") as tmp:
        env = {
            "RESETFLOW_ENV": "dev",
            "RESETFLOW_DATA_DIR": tmp,
            "RESETFLOW_EMAIL_PROVIDER": "smtp",
            "RESETFLOW_SMS_PROVIDER": "outbox",
            "RESETFLOW_SMTP_HOST": "127.0.0.1",
            "RESETFLOW_SMTP_PORT": str(sink.port),
            "RESETFLOW_SMTP_POOL_SIZE": str(args.smtp_pool),
            "RESETFLOW_LOG_LEVEL": "WARNING",
        }
        try:
            if args.database_url == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            else:
                pg = PgDatabase(args.database_url, f"resetflow_bench_{secrets.token_hex(5)}")
                pg.create()
                url = pg.url
                env["RESETFLOW_REDIS_URL"] = args.redis_url
                env["RESETFLOW_REDIS_PREFIX"] = f"resetflow-bench-{secrets.token_hex(5)}"
            env["RESETFLOW_DATABASE_URL"] = url
            os.environ.update(env)
            upgrade(url)
            outcome: dict[str, Any] = {}

            async def go() -> None:
                outcome.update(await run(args, url))

            import logging

            logging.disable(logging.INFO)  # the delivery lines are not what is measured
            run_on_fastest_loop(go())
        finally:
            arrivals = sink.arrivals()  # closes its stdin: it stops and reports
            if pg is not None:
                pg.drop()
    report = summarise(outcome, arrivals)
    if args.json:
        print(json.dumps(report))
    else:
        rt = report["round_trips_per_message"]
        print(
            f"{report['store']}: {report['messages']} messages (+{report['decoys']} decoys) in "
            f"{report['wall_s']:.2f} s ({report['messages_per_s']:.0f}/s); CPU "
            f"{report['cpu_ms_per_message']:.3f} ms per message; statements "
            f"{report['statements_per_message']:.2f}, transactions "
            f"{report['transactions_per_message']:.2f}"
            + (f", round trips {rt:.2f}" if rt is not None else "")
            + f" per message; copies per recipient {report['copies']}; latency p50 "
            f"{report['latency_p50_ms']:.0f} ms p99 {report['latency_p99_ms']:.0f} ms; "
            f"jobs {report['statuses']}"
        )
    if report["copies"] != {"1": report["messages"]}:
        print("bench.worker: not every message was delivered exactly once", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
