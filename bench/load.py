"""Load benchmark for ``POST /send-token`` (issue 4, item 6): throughput, latency and
delivery under load, on the embedded default (SQLite, in-process worker) and on
PostgreSQL + Redis (a separate ``resetflow worker`` process), with 1k, 100k and 1M users.

For every (store, users) cell it:

1. creates a fresh database (a SQLite file in a temporary data directory, or a
   PostgreSQL database ``resetflow_load_<random>`` that it drops afterwards), runs
   ``resetflow migrate`` and inserts the users directly (one precomputed Argon2id hash,
   a verified email, no phone): executemany in one transaction on SQLite,
   ``copy_records_to_table`` on PostgreSQL;
2. starts ``resetflow serve`` (and ``resetflow worker``) on 127.0.0.1 with the email
   provider pointed at an SMTP sink (aiosmtpd, in this process, on a free loopback port)
   and the rate limits set out of the way;
3. measures the ceiling, ``GET /healthz`` (a constant JSON body through the same
   middleware), with wrk, then ``POST /send-token`` with wrk (same connections, same
   duration): a JSON body per request, half known and half unknown addresses, taken in
   turn from a pre-generated list, no cookies (every request is a first visit);
4. while wrk runs, a probe thread sends a request every ``--probe-interval`` seconds for
   a known probe account of its own and records when the message reaches the sink:
   the delivery latency under load;
5. after the load, waits until the outbox is drained, then checks that every code the
   load asked for on a known account arrived exactly once (messages at the sink against
   the delivery jobs the server wrote for those accounts, each answered 202) and that
   nothing was sent for the unknown ones.

Besides these six cells: PostgreSQL + Redis again with ``serve --workers 2`` (when that
option exists), and SQLite with the dev ``mailbox`` provider (the embedded default's own
provider; messages read back from its table) at 100k users. The throughput counts wrk's
requests and the probes; p50/p99 are wrk's. Each run also records the CPU used by the
server, the worker, PostgreSQL, Redis, wrk and this process, and flags runs during which
something else kept the machine busy. Diagnosis options: ``--profile DIR`` (py-spy),
``--no-delivery``, ``--limits-off``.

Traffic goes only to 127.0.0.1, every wrk run is bounded by ``--duration`` and
``--connections``, and everything started here is stopped in every case (SIGTERM, then
SIGKILL), databases dropped, Redis keys of the run's own prefix deleted.

    make bench
    .venv/bin/python -m bench.load --stores sqlite --users 1000 --duration 5

Needs ``wrk`` (Debian: ``apt-get install -y wrk``) and aiosmtpd (``pip install -e
'.[bench]'``). Results and analysis: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import wrk
from bench.common import (
    BenchError,
    failed,
    hard_timeout,
    no_timeout_during_cleanup,
    percentile,
    tail,
)
from bench.options import add_load_options, check_load_options
from bench.procs import (
    LIMITS,
    QUIET_CORES,
    Proc,
    clean_env,
    cpu_meter,
    resetflow_command,
    run_migrate,
    wait_quiet,
)
from bench.profile import start_profiler, summarise_profile
from bench.report import machine, report
from bench.sink import TimedSink, running_sink
from bench.stores import (
    JOBS_SQL,
    PENDING_SQL,
    STATUS_SQL,
    PgStore,
    SqliteStore,
    Store,
    hash_password,
    preflight_postgres,
)
from tests.support.servers import free_port

WARMUP_KNOWN = 10
LIST_SAMPLE = 50_000  # known (and as many unknown) addresses in wrk's list, at most


# Command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load benchmark for POST /send-token (throughput, latency, delivery).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--stores",
        default="sqlite,postgres",
        help="comma-separated: sqlite (embedded default), postgres (PostgreSQL + Redis)",
    )
    add_load_options(parser, users="1000,100000,1000000", threads=1)
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=0.1,
        help="seconds between the delivery probes sent during the /send-token run (they "
        "count in the throughput; their latency is not in wrk's percentiles)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="after the load, seconds to wait at most for the outbox to be delivered",
    )
    parser.add_argument(
        "--mailbox-run",
        "--outbox-run",  # its name from before the dev mailbox had its own
        dest="mailbox_run",
        type=int,
        default=100_000,
        help="also run SQLite with the dev mailbox provider (the embedded default's own "
        "provider, messages read from its table) at this many users; 0: no such run",
    )
    parser.add_argument(
        "--pg-workers",
        default="auto",
        help="comma-separated `resetflow serve --workers` counts for PostgreSQL + Redis; auto: 1,2",
    )
    parser.add_argument(
        "--sqlite-workers",
        default="1",
        help="comma-separated `resetflow serve --workers` counts for SQLite (each web "
        "process runs its own in-process delivery worker on the same database file)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the server (and worker) with py-spy during each /send-token run into "
        "this directory (raw collapsed stacks) and print the top costs; slows the run",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only threads holding the GIL (Python CPU time)",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: include C frames (py-spy --native; pauses the process at "
        "each sample, 100 Hz, so it slows the server more)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=20.0,
        help="before each run, wait up to this many seconds for the machine to be idle "
        f"(≤ {0.25} cores busy with anything else); a run on a busy machine is flagged",
    )
    parser.add_argument(
        "--no-delivery",
        action="store_true",
        help="diagnosis: nobody delivers (no in-process worker, no worker process), so the "
        "request path is measured alone; no delivery figures",
    )
    parser.add_argument(
        "--limits-off",
        action="store_true",
        help="diagnosis: RESETFLOW_LIMITS_ENABLED=false instead of high limits, to see what "
        "the rate limiting itself costs",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="hard limit for the whole benchmark, s"
    )
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not args.stores or set(args.stores) - {"sqlite", "postgres"}:
        parser.error("--stores takes sqlite and/or postgres")
    if not 0.01 <= args.probe_interval <= 5:
        parser.error("--probe-interval must be between 0.01 and 5 seconds")
    return args


# Runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    store: str  # sqlite | postgres
    users: int
    provider: str = "smtp"  # smtp (the sink) | mailbox (the dev mailbox's table)
    workers: int = 1
    # inprocess (the server's own loop: SQLite, the dev default) | process (a separate
    # `resetflow worker`: PostgreSQL) | none (nobody delivers: the request path alone)
    delivery: str = "inprocess"
    limits_off: bool = False

    @property
    def label(self) -> str:
        name = "SQLite" if self.store == "sqlite" else "PostgreSQL + Redis"
        if self.provider == "mailbox":
            name += ", dev mailbox"
        if self.workers > 1:
            name += f", {self.workers} workers"
        if self.delivery == "none":
            name += ", no delivery"
        if self.limits_off:
            name += ", limits off"
        return name

    @property
    def slug(self) -> str:
        return f"{self.store}-{self.users}-{self.provider}-w{self.workers}-{self.delivery}" + (
            "-nolimits" if self.limits_off else ""
        )


def plan(args: argparse.Namespace) -> list[Spec]:
    specs: list[Spec] = []
    if args.pg_workers == "auto":
        pg_workers = [1, 2]
    else:
        pg_workers = [int(w) for w in args.pg_workers.split(",") if w.strip()]
    for store in args.stores:
        delivery = "none" if args.no_delivery else "inprocess" if store == "sqlite" else "process"
        sqlite_workers = [int(w) for w in args.sqlite_workers.split(",") if w.strip()]
        for workers in pg_workers if store == "postgres" else sqlite_workers:
            specs += [
                Spec(
                    store=store,
                    users=n,
                    workers=workers,
                    delivery=delivery,
                    limits_off=args.limits_off,
                )
                for n in args.users
            ]
    if "sqlite" in args.stores and args.mailbox_run and not args.no_delivery:
        specs.append(Spec(store="sqlite", users=args.mailbox_run, provider="mailbox"))
    return specs


def load(
    args: argparse.Namespace,
    base_url: str,
    script: Path,
    lua_args: list[str],
    *,
    duration: int | None = None,
) -> dict[str, Any]:
    """One wrk run with this benchmark's threads, connections and duration."""
    return wrk.run(
        base_url,
        script,
        lua_args,
        threads=args.threads,
        connections=args.connections,
        duration=duration or args.duration,
    )


# Probes -------------------------------------------------------------------------------


@dataclass
class Probe:
    to: str
    sent: float  # time.time() before the request
    answered: float
    status: int


class Prober(threading.Thread):
    """Open loop: one request every ``interval`` for a known probe account (each used
    once), whatever the answers take, from a client that keeps no cookies (every request
    a first visit), until stopped; then waits for the answers still due."""

    def __init__(self, base_url: str, addresses: list[str], interval: float) -> None:
        super().__init__(name="bench-probe", daemon=True)
        self.base_url = base_url
        self.addresses = addresses
        self.interval = interval
        self.stopping = threading.Event()
        self.probes: list[Probe] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:
            self.error = error

    async def _main(self) -> None:
        from http.cookiejar import CookieJar, DefaultCookiePolicy

        jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # accepts none
        async with httpx.AsyncClient(
            base_url=self.base_url,
            timeout=60,
            cookies=jar,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        ) as client:
            tasks: list[asyncio.Task[None]] = []
            next_at = time.monotonic()
            for address in self.addresses:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if self.stopping.is_set():
                    break
                next_at += self.interval
                tasks.append(asyncio.create_task(self._one(client, address)))
            await asyncio.gather(*tasks)
            if len(jar):
                raise BenchError("the probe client kept a cookie")

    async def _one(self, client: httpx.AsyncClient, address: str) -> None:
        sent = time.time()
        response = await client.post("/send-token", json={"email": address})
        self.probes.append(Probe(address, sent, time.time(), response.status_code))


# One run ------------------------------------------------------------------------------


def address(rng: random.Random) -> str:
    return f"load-{rng.getrandbits(64):016x}@example.com"


def server_env(spec: Spec, data_dir: Path, store: Store, sink: TimedSink) -> dict[str, str]:
    # No RESETFLOW_* from the caller's shell; the server runs in data_dir (no .env read).
    env = clean_env(**LIMITS)
    env.update(
        {
            "RESETFLOW_ENV": "dev",
            "RESETFLOW_DATA_DIR": str(data_dir),
            "RESETFLOW_DATABASE_URL": store.url,
            "RESETFLOW_EMAIL_PROVIDER": spec.provider,
            "RESETFLOW_SMS_PROVIDER": "mailbox",
            "RESETFLOW_SMTP_HOST": "127.0.0.1",
            "RESETFLOW_SMTP_PORT": str(sink.port),
            "RESETFLOW_INPROCESS_WORKER": "true" if spec.delivery == "inprocess" else "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if spec.limits_off:
        env["RESETFLOW_LIMITS_ENABLED"] = "false"
    if isinstance(store, PgStore):
        env["RESETFLOW_REDIS_URL"] = store.redis_url
        env["RESETFLOW_REDIS_PREFIX"] = store.prefix
    return env


def run_one(
    args: argparse.Namespace,
    spec: Spec,
    sink: TimedSink,
    password_hash: str,
    script: Path,
    status: list[str],
) -> dict[str, Any]:
    rng = random.Random(f"{args.seed}-{spec.slug}")  # noqa: S311 (addresses, not secrets)
    n_probe = int(args.duration / args.probe_interval) + 50
    temp = Path(tempfile.mkdtemp(prefix="resetflow-load-"))
    data_dir = temp / "data"
    data_dir.mkdir()
    log = temp / "server.log"
    tag = f"{rng.getrandbits(48):012x}"
    store: Store
    if spec.store == "sqlite":
        store = SqliteStore(data_dir)
    else:
        store = PgStore(args.database_url, f"resetflow_load_{tag}", args.redis_url, f"bench{tag}")
    procs: list[Proc] = []
    profilers: list[subprocess.Popen[bytes]] = []
    prober: Prober | None = None
    result: dict[str, Any] = {"spec": spec.__dict__ | {"label": spec.label}}
    sink.clear()
    try:
        if isinstance(store, PgStore):
            status.append(f"{spec.slug}: creating database {store.db.name}")
            store.create()
        env = server_env(spec, data_dir, store, sink)
        status.append(f"{spec.slug}: migrating")
        run_migrate(env, temp, log)

        status.append(f"{spec.slug}: creating {spec.users:,} users")
        total = spec.users + n_probe + WARMUP_KNOWN
        emails = [address(rng) for _ in range(total)]
        ids = [f"{rng.getrandbits(128):032x}" for _ in range(total)]
        started = time.monotonic()
        store.insert_users(ids, emails, password_hash)
        result["insert_seconds"] = time.monotonic() - started
        pool = emails[: spec.users]
        probes = emails[spec.users : spec.users + n_probe]
        warm = emails[spec.users + n_probe :]
        id_of = dict(zip(emails, ids, strict=True))

        # wrk's list: known addresses (a sample of the pool) and as many unknown ones.
        known = rng.sample(pool, min(len(pool), LIST_SAMPLE))
        unknown = [address(rng) for _ in known]
        listing = wrk.write_list(temp / "addresses.txt", known, unknown, rng)
        del emails, ids

        base_port = free_port()
        base_url = f"http://127.0.0.1:{base_port}"
        serve = [*resetflow_command(), "serve", "--host", "127.0.0.1", "--port", str(base_port)]
        if spec.workers > 1:
            serve += ["--workers", str(spec.workers)]
        server = Proc("server", serve, env, temp, log)
        procs.append(server)
        status.append(f"{spec.slug}: starting the server")
        server.start()
        server.wait_ready(f"{base_url}/readyz")
        worker: Proc | None = None
        if spec.delivery == "process":
            worker = Proc(
                "worker", [*resetflow_command(), "worker"], env, temp, temp / "worker.log"
            )
            procs.append(worker)
            worker.start()

        # Warm-up: a few known and unknown requests, and their messages must arrive.
        status.append(f"{spec.slug}: warming up")
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for a in [*warm, *(address(rng) for _ in warm)]:
                client.cookies.clear()
                answer = client.post("/send-token", json={"email": a})
                if answer.status_code != 202:
                    raise BenchError(f"warm-up: /send-token answered {answer.status_code}")
        if spec.delivery != "none":
            wait_for(lambda: count_delivered(spec, store, sink) >= len(warm), 30, "warm-up mail")
        load(args, base_url, script, wrk.get_args(), duration=2)
        sink.clear()
        baseline = count_delivered(spec, store, sink) if spec.provider == "mailbox" else 0

        pg_name = store.db.name if isinstance(store, PgStore) else None
        status.append(f"{spec.slug}: waiting for a quiet machine")
        result["background_cores"] = wait_quiet(args.wait_quiet)
        if result["background_cores"] > QUIET_CORES:
            print(
                f"bench: WARNING: {result['background_cores']:.2f} cores busy with something "
                "else before this run; its figures are spoiled",
                file=sys.stderr,
            )
        status.append(f"{spec.slug}: /healthz for {args.duration} s")
        with cpu_meter(procs, pg_name) as cpu:
            result["healthz"] = load(args, base_url, script, wrk.get_args())
        result["healthz"].update(cpu)
        for proc in procs:
            proc.check("a resetflow process")

        status.append(f"{spec.slug}: /send-token for {args.duration} s")
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profilers += [
                start_profiler(
                    proc.pid,
                    args.duration,
                    args.profile / f"{spec.slug}-{proc.name}.txt",
                    gil=args.profile_gil,
                    native=args.profile_native,
                )
                for proc in procs
            ]
        prober = Prober(base_url, probes, args.probe_interval)
        prober.start()
        load_started, load_started_wall = time.monotonic(), time.time()
        with cpu_meter(procs, pg_name) as cpu:
            result["send_token"] = load(
                args, base_url, script, wrk.list_args(listing, "/send-token")
            )
        result["send_token"].update(cpu)
        load_ended, load_ended_wall = time.monotonic(), time.time()
        prober.stopping.set()
        prober.join(timeout=60)
        if prober.error is not None:
            raise BenchError(f"the probe thread failed: {prober.error!r}")
        in_window = [p for p in prober.probes if load_started_wall <= p.answered <= load_ended_wall]
        result["send_token"]["probe_rps"] = len(in_window) / (load_ended_wall - load_started_wall)
        for proc in procs:
            proc.check("a resetflow process")
        for profiler in profilers:
            profiler.wait(timeout=60)

        # Drain: every job written must be delivered (or settle), within the limit.
        status.append(f"{spec.slug}: draining the outbox")
        drained = spec.delivery != "none" and drain(
            spec, store, sink, baseline=baseline, warm=len(warm), seconds=args.drain_timeout
        )
        result["drain_seconds_after_load"] = time.monotonic() - load_ended
        result["drained"] = drained
        result["load_seconds"] = load_ended - load_started
        jobs = {row[0]: (int(row[1]), int(row[2] or 0)) for row in store.query(JOBS_SQL)}
        result["job_status"] = {str(s): int(n) for s, n in store.query(STATUS_SQL)}
        result["delivery"] = check_delivery(
            spec, store, sink, jobs, id_of, set(known), prober.probes, set(warm)
        )
        result["send_token"]["connections"] = args.connections
        if args.profile:
            rate = 100 if args.profile_native else 200
            result["profile"] = {
                p.stem: summarise_profile(p, rate=rate, seconds=args.duration)
                for p in sorted(args.profile.glob(f"{spec.slug}-*"))
            }
        return result
    except BenchError as error:
        error.args = (f"{error}\n--- server log (tail) ---\n{tail(log)}",)
        raise
    finally:
        # The hard timeout waits while the run cleans up (processes, database, keys).
        with no_timeout_during_cleanup():
            if prober is not None:
                prober.stopping.set()
                prober.join(timeout=60)
            for profiler in profilers:
                if profiler.poll() is None:
                    profiler.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        profiler.wait(timeout=10)
                    if profiler.poll() is None:
                        profiler.kill()
            for proc in reversed(procs):
                proc.stop()
            store.cleanup()
            if args.keep:
                print(f"bench: kept {temp}", file=sys.stderr)
            else:
                shutil.rmtree(temp, ignore_errors=True)


def drain(
    spec: Spec, store: Store, sink: TimedSink, *, baseline: int, warm: int, seconds: float
) -> bool:
    """Wait until every delivery job written so far has been delivered and none is
    pending, the same on two looks 1 s apart (requests that were still in flight when
    wrk stopped may write theirs a little later); False after ``seconds``."""
    deadline = time.monotonic() + seconds
    previous: tuple[int, int] | None = None
    while time.monotonic() < deadline:
        time.sleep(1.0)
        jobs = sum(int(r[1]) for r in store.query(JOBS_SQL)) - warm
        delivered = count_delivered(spec, store, sink) - baseline
        pending = int(store.query(PENDING_SQL)[0][0])
        done = delivered >= jobs and pending == 0
        if done and previous == (jobs, delivered):
            return True
        previous = (jobs, delivered) if done else None
    return False


def count_delivered(spec: Spec, store: Store, sink: TimedSink) -> int:
    if spec.provider == "mailbox":
        return int(store.query("SELECT count(*) FROM dev_outbox")[0][0])  # its table
    return sink.count()


def wait_for(condition: Any, seconds: float, what: str | None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    if what is not None:
        raise BenchError(f"{what} did not arrive within {seconds:.0f} s")
    return False


def check_delivery(
    spec: Spec,
    store: Store,
    sink: TimedSink,
    jobs: dict[str, tuple[int, int]],
    id_of: dict[str, str],
    known: set[str],
    probes: list[Probe],
    warm: set[str],
) -> dict[str, Any]:
    messages = store.mailbox_messages() if spec.provider == "mailbox" else sink.received()
    probe_set = {p.to for p in probes}
    to_known = [m for m in messages if m.to in known]
    stray = [m for m in messages if m.to not in known and m.to not in probe_set | warm]
    pairs = collections.Counter((m.to, m.code) for m in to_known)
    expected = sum(jobs.get(id_of[a], (0, 0))[0] for a in known)
    sent_jobs = sum(jobs.get(id_of[a], (0, 0))[1] for a in known)
    arrival: dict[str, float] = {}
    for m in messages:
        if m.to in probe_set:
            arrival[m.to] = min(arrival.get(m.to, m.arrived), m.arrived)
    latencies = sorted(arrival[p.to] - p.sent for p in probes if p.to in arrival)
    answered = [p.answered - p.sent for p in probes]
    return {
        "expected": expected,  # delivery jobs for the load's known accounts (each a 202)
        "delivered": len(to_known),
        "distinct": len(pairs),
        "duplicates": sum(n - 1 for n in pairs.values() if n > 1),
        "without_code": sum(1 for m in to_known if m.code is None),
        "jobs_sent": sent_jobs,
        "stray": len(stray),  # messages to unknown addresses: must be 0
        "probes": len(probes),
        "probes_not_202": sum(1 for p in probes if p.status != 202),
        "probes_delivered": len(latencies),
        "latency_s": {
            "p50": percentile(latencies, 0.50) if latencies else None,
            "p99": percentile(latencies, 0.99) if latencies else None,
            "max": latencies[-1] if latencies else None,
        },
        "probe_answer_s": {
            "p50": percentile(answered, 0.50) if answered else None,
            "p99": percentile(answered, 0.99) if answered else None,
        },
    }


# Main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status: list[str] = ["starting"]
    results: list[dict[str, Any]] = []
    script_dir = Path(tempfile.mkdtemp(prefix="resetflow-load-wrk-"))
    stack = contextlib.ExitStack()
    started = time.monotonic()
    try:
        wrk.preflight()
        with hard_timeout(args.timeout):
            if "postgres" in args.stores:
                preflight_postgres(args.database_url, args.redis_url)
            specs = plan(args)
            print(
                "bench: runs: " + ", ".join(f"{s.label} × {s.users:,}" for s in specs),
                file=sys.stderr,
            )
            script = wrk.write_script(script_dir)
            password_hash = hash_password()
            sink = stack.enter_context(running_sink())
            for spec in specs:
                began = time.monotonic()
                results.append(run_one(args, spec, sink, password_hash, script, status))
                print(
                    f"bench: {spec.label} × {spec.users:,}: "
                    f"{results[-1]['send_token']['rps']:,.0f} req/s "
                    f"({time.monotonic() - began:.0f} s)",
                    file=sys.stderr,
                )
    except (Exception, KeyboardInterrupt) as error:
        return failed(error, status[-1])
    finally:
        stack.close()
        shutil.rmtree(script_dir, ignore_errors=True)
    info = machine()
    info["total_seconds"] = time.monotonic() - started
    print(report(results, info, args))
    print(f"\n(total {info['total_seconds']:.0f} s)")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "args": _plain(vars(args)), "results": results}, indent=2)
        )
    return 0


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


if __name__ == "__main__":
    sys.exit(main())
