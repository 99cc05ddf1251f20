#!/usr/bin/env python3
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
option exists), and SQLite with the dev ``outbox`` provider (the embedded default's own
provider; messages read back from its table) at 100k users. The throughput counts wrk's
requests and the probes; p50/p99 are wrk's. Each run also records the CPU used by the
server, the worker, PostgreSQL, Redis, wrk and this process, and flags runs during which
something else kept the machine busy. Diagnosis options: ``--profile DIR`` (py-spy),
``--no-delivery``, ``--limits-off``.

Traffic goes only to 127.0.0.1, every wrk run is bounded by ``--duration`` and
``--connections``, and everything started here is stopped in every case (SIGTERM, then
SIGKILL), databases dropped, Redis keys of the run's own prefix deleted.

    make bench
    .venv/bin/python scripts/bench_load.py --stores sqlite --users 1000 --duration 5

Needs ``wrk`` (Debian: ``apt-get install -y wrk``) and aiosmtpd (``pip install -e
'.[bench]'``). Results and analysis: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import email
import email.policy
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from bench_timing import (
    BenchError,
    PgDatabase,
    free_port,
    hard_timeout,
    percentile,
    resetflow_command,
    run_migrate,
    tail,
)

# Rate limits out of the way: the benchmark measures the normal path, not 429s or
# silently skipped sends (docs/performance.md says so too).
LIMITS = {
    "RESETFLOW_LIMIT_IP": "100000000/minute",
    "RESETFLOW_LIMIT_GLOBAL": "100000000/minute",
    "RESETFLOW_LIMIT_DESTINATION": "1000000/minute",
}
TARGET_CEILING_RATIO = 0.35
TARGET_P99_GROWTH = 0.20
TARGET_RPS = 2000.0
TARGET_DELIVERY_P99_S = 1.0

PASSWORD = "bench load password, never used to sign in"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
RESET_NOTIFICATION = "password-reset-token"
CODE = re.compile(r"\b(\d{6})\b")
WARMUP_KNOWN = 10
LIST_SAMPLE = 50_000  # known (and as many unknown) addresses in wrk's list, at most

# wrk: every request a POST with its own address from the list (K = known, U = unknown),
# each thread starting at its own place; counts kinds sent and statuses answered, and
# prints one JSON line at the end. No cookies are ever sent (wrk keeps none).
WRK_SCRIPT = r"""
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  known_sent, unknown_sent, answered, ok, bad, first_bad = 0, 0, 0, 0, 0, ""
  if mode == "send-token" then
    kinds, bodies = {}, {}
    for line in io.lines(args[2]) do
      kinds[#kinds + 1] = line:sub(1, 1)
      bodies[#bodies + 1] = '{"email":"' .. line:sub(3) .. '"}'
    end
    n = #bodies
    pos = (tid * 7919) % n
    headers = { ["Content-Type"] = "application/json" }
  else
    healthz = wrk.format("GET", "/healthz")
  end
end

function request()
  if mode ~= "send-token" then
    return healthz
  end
  pos = pos % n + 1
  if kinds[pos] == "K" then
    known_sent = known_sent + 1
  else
    unknown_sent = unknown_sent + 1
  end
  return wrk.format("POST", "/send-token", headers, bodies[pos])
end

function response(status, headers, body)
  answered = answered + 1
  local expected = 200
  if mode == "send-token" then
    expected = 202
  end
  if status == expected then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local k, u, a, o, b, fb = 0, 0, 0, 0, 0, ""
  for _, t in ipairs(threads) do
    k = k + t:get("known_sent")
    u = u + t:get("unknown_sent")
    a = a + t:get("answered")
    o = o + t:get("ok")
    b = b + t:get("bad")
    if fb == "" then
      fb = t:get("first_bad")
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,' ..
    '"max":%d,"mean":%.1f},"known_sent":%d,"unknown_sent":%d,"answered":%d,"ok":%d,' ..
    '"bad":%d,"first_bad":%q}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, k, u, a, o, b, fb))
end
"""


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
    parser.add_argument(
        "--users", default="1000,100000,1000000", help="comma-separated user counts"
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
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
        "--outbox-run",
        type=int,
        default=100_000,
        help="also run SQLite with the dev outbox provider (the embedded default's own "
        "provider, messages read from its table) at this many users; 0: no such run",
    )
    parser.add_argument(
        "--pg-workers",
        default="auto",
        help="comma-separated uvicorn worker counts for PostgreSQL + Redis; auto: 1, and "
        "also 2 if `resetflow serve --workers` exists",
    )
    parser.add_argument(
        "--sqlite-workers",
        default="1",
        help="comma-separated `resetflow serve --workers` counts for SQLite (each web "
        "process runs its own in-process delivery worker on the same database file)",
    )
    parser.add_argument("--database-url", default=DEFAULT_PG, help="PostgreSQL to create on")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis for PostgreSQL runs")
    parser.add_argument("--seed", type=int, default=1, help="random seed for addresses")
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
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="hard limit for the whole benchmark, s"
    )
    parser.add_argument("--keep", action="store_true", help="keep temporary directories")
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not args.stores or set(args.stores) - {"sqlite", "postgres"}:
        parser.error("--stores takes sqlite and/or postgres")
    try:
        args.users = [int(u) for u in args.users.split(",") if u.strip()]
    except ValueError:
        parser.error("--users takes comma-separated integers")
    if not args.users or not all(1 <= u <= 5_000_000 for u in args.users):
        parser.error("--users: each between 1 and 5,000,000")
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be between 1 and 120 seconds")
    if not 1 <= args.connections <= 512:
        parser.error("--connections must be between 1 and 512")
    if not 1 <= args.threads <= min(8, args.connections):
        parser.error("--threads must be between 1 and min(8, connections)")
    if not 0.01 <= args.probe_interval <= 5:
        parser.error("--probe-interval must be between 0.01 and 5 seconds")
    if not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a postgresql+asyncpg:// URL")
    return args


# Runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    store: str  # sqlite | postgres
    users: int
    provider: str = "smtp"  # smtp (the sink) | outbox (the dev outbox table)
    workers: int = 1
    # inprocess (the server's own loop: SQLite, the dev default) | process (a separate
    # `resetflow worker`: PostgreSQL) | none (nobody delivers: the request path alone)
    delivery: str = "inprocess"
    limits_off: bool = False

    @property
    def label(self) -> str:
        name = "SQLite" if self.store == "sqlite" else "PostgreSQL + Redis"
        if self.provider == "outbox":
            name += ", dev outbox"
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


def serve_has_workers() -> bool:
    done = subprocess.run(  # noqa: S603 (our own command, no shell)
        [*resetflow_command(), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    return "--workers" in done.stdout


def plan(args: argparse.Namespace) -> list[Spec]:
    specs: list[Spec] = []
    if args.pg_workers == "auto":
        pg_workers = [1, 2] if serve_has_workers() else [1]
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
    if "sqlite" in args.stores and args.outbox_run and not args.no_delivery:
        specs.append(Spec(store="sqlite", users=args.outbox_run, provider="outbox"))
    return specs


# Processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """A process of ours, in its own process group (``serve --workers`` has children)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 (our own command, no shell)
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check(self, what: str) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"{what} exited (status {self.process.returncode})")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole group of this process after 15 s."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        # Children (uvicorn workers) of a parent that died must not outlive the run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    comm: str
    user: float  # CPU seconds
    system: float
    title: str = ""  # PostgreSQL's process title ("postgres: user db host state")


def proc_snapshot() -> dict[int, ProcStat]:
    """Every process's parent, name and CPU seconds (user, system), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    snapshot: dict[int, ProcStat] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        fields = text.rpartition(")")[2].split()
        # After the name: state, ppid, ... utime and stime are fields 14 and 15 of stat(5).
        title = ""
        if comm == "postgres":
            with contextlib.suppress(OSError):
                title = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
        snapshot[int(entry.name)] = ProcStat(
            int(fields[1]), comm, int(fields[11]) / ticks, int(fields[12]) / ticks, title
        )
    return snapshot


def cpu_groups(
    procs: list[Proc],
    before: dict[int, ProcStat],
    after: dict[int, ProcStat],
    pg_database: str | None = None,
) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds used between two snapshots, by group: each of
    ``procs`` with its children, then PostgreSQL, Redis and this process (the SMTP sink
    and the probes). Per process, so that processes of others that end in between do
    not count; a process that ended in between is missing (its last share)."""

    def used(pid: int) -> tuple[float, float]:
        stat, old = after[pid], before.get(pid)
        if old is None or old.comm != stat.comm:
            return stat.user, stat.system
        return stat.user - old.user, stat.system - old.system

    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, stat in after.items():
        children[stat.ppid].append(pid)
    members: dict[str, list[int]] = {}
    for proc in procs:
        tree, todo = [], [proc.pid]
        while todo:
            current = todo.pop()
            if current in after:
                tree.append(current)
            todo += children.get(current, [])
        members[proc.name] = tree
    members["redis"] = [pid for pid, stat in after.items() if stat.comm == "redis-server"]
    # PostgreSQL: the backends of the run's own database and the shared background
    # processes (WAL writer, checkpointer, ...), not other databases' backends.
    members["postgres"] = [
        pid
        for pid, stat in after.items()
        if stat.comm == "postgres"
        and (
            (pg_database is not None and f" {pg_database} " in stat.title)
            or PG_SHARED.search(stat.title) is not None
        )
    ]
    members["bench (sink, probes)"] = [os.getpid()] if os.getpid() in after else []
    groups: dict[str, tuple[float, float]] = {}
    for name, pids in members.items():
        pairs = [used(pid) for pid in pids]
        groups[name] = (sum(u for u, _ in pairs), sum(s for _, s in pairs))
    return groups


PG_SHARED = re.compile(
    r"^/\S*postgres |: (checkpointer|background writer|walwriter|logical replication"
    r"|autovacuum launcher|archiver|stats collector)"
)
QUIET_CORES = 0.25


def wait_quiet(seconds: float) -> float:
    """Cores busy on the machine over 2 s (our own processes idle); while that is more
    than QUIET_CORES, measure again, for up to ``seconds``. Returns the last figure."""
    deadline = time.monotonic() + seconds
    while True:
        busy0, total0 = machine_busy()
        time.sleep(2.0)
        busy1, total1 = machine_busy()
        cores = (busy1 - busy0) / max(1.0, total1 - total0) * (os.cpu_count() or 1)
        if cores <= QUIET_CORES or time.monotonic() >= deadline:
            return cores


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


@contextlib.contextmanager
def cpu_meter(
    procs: list[Proc], into: dict[str, Any], pg_database: str | None = None
) -> Iterator[None]:
    """Cores used (user + system) by each of ``procs`` (with children), by PostgreSQL,
    Redis, wrk and this process, and by the whole machine, while the block runs."""
    before = proc_snapshot()
    busy0, total0 = machine_busy()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    try:
        yield
    finally:
        wall = time.monotonic() - started
        groups = cpu_groups(procs, before, proc_snapshot(), pg_database)
        # wrk starts and ends inside the block: its CPU is that of our waited-for children.
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        groups["wrk"] = (
            children1.ru_utime - children0.ru_utime,
            children1.ru_stime - children0.ru_stime,
        )
        busy1, total1 = machine_busy()
        cores: dict[str, float] = {}
        system: dict[str, float] = {}
        for name, (user, sys_) in groups.items():
            if (user + sys_) / wall >= 0.005:
                cores[name] = (user + sys_) / wall
                system[name] = sys_ / wall
        share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
        cores["machine"] = share * (os.cpu_count() or 1)
        # Anything else on the machine (another program's load spoils the figures).
        cores["other"] = max(
            0.0, cores["machine"] - sum(v for k, v in cores.items() if k != "machine")
        )
        into["cpu_cores"] = cores
        into["cpu_cores_system"] = system


def wait_ready(base_url: str, proc: Proc, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        proc.check("the server")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"the server did not become ready in {seconds:.0f} s")


# The SMTP sink ------------------------------------------------------------------------


@dataclass
class Message:
    arrived: float  # time.time()
    to: str
    code: str | None


class SmtpSink:
    """aiosmtpd on a free loopback port; records arrival time and raw message only (the
    parsing happens after the run, off the hot path)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._raw: list[tuple[float, tuple[str, ...], bytes]] = []
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.time()
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        with self._lock:
            self._raw.append((arrived, tuple(envelope.rcpt_tos), content))
        return "250 Message accepted"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="sink.localhost",
            ready_timeout=10,
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            with contextlib.suppress(Exception):
                self._controller.stop()
            self._controller = None

    def count(self) -> int:
        with self._lock:
            return len(self._raw)

    def clear(self) -> None:
        with self._lock:
            self._raw.clear()

    def messages(self) -> list[Message]:
        with self._lock:
            raw = list(self._raw)
        out: list[Message] = []
        for arrived, rcpts, content in raw:
            parsed = email.message_from_bytes(content, policy=email.policy.default)
            body = parsed.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
            text = body.get_content() if body is not None else ""
            found = CODE.search(text)
            out += [Message(arrived, to.lower(), found.group(1) if found else None) for to in rcpts]
        return out


# Stores -------------------------------------------------------------------------------


JOBS_SQL = (
    "SELECT user_id, count(*), sum(CASE WHEN status = 'sent' THEN 1 ELSE 0 END) "
    "FROM delivery_jobs WHERE notification = 'password-reset-token' AND user_id IS NOT NULL "
    "GROUP BY user_id"
)
PENDING_SQL = (
    "SELECT count(*) FROM delivery_jobs WHERE user_id IS NOT NULL "
    "AND status IN ('queued', 'sending')"
)
STATUS_SQL = "SELECT status, count(*) FROM delivery_jobs GROUP BY status"
USER_COLUMNS = [
    "id",
    "name",
    "email",
    "phone",
    "password_hash",
    "preference",
    "locale",
    "email_verified_at",
    "phone_verified_at",
    "code_failures",
    "created_at",
    "updated_at",
]


class SqliteStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "resetflow.db"

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path.resolve()}"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def insert_users(self, ids: list[str], emails: list[str], password_hash: str) -> None:
        now = datetime.now(UTC)
        # SQLAlchemy's SQLite DateTime format; UtcDateTime stores UTC without a zone.
        stamp = now.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        columns, marks = ", ".join(USER_COLUMNS), ", ".join("?" * len(USER_COLUMNS))
        sql = f"INSERT INTO users ({columns}) VALUES ({marks})"  # noqa: S608 (no input)
        conn = self._connect()
        try:
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("BEGIN")
            conn.executemany(
                sql,
                ((*row, stamp, None, 0, stamp, stamp) for row in _rows(ids, emails, password_hash)),
            )
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        # synchronous=OFF left the whole file (~250 MB at 1M users) in the page cache,
        # unwritten: the server's first checkpoint would fsync it, a stall of the load
        # measured afterwards that belongs to this set-up. Written out here instead.
        with self.path.open("rb+") as written:
            os.fsync(written.fileno())

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return list(conn.execute(sql))
        finally:
            conn.close()

    def outbox_messages(self) -> list[Message]:
        rows = self.query("SELECT recipient, text, created_at FROM dev_outbox")
        out = []
        for recipient, text, created in rows:
            at = datetime.fromisoformat(created).replace(tzinfo=UTC).timestamp()
            found = CODE.search(text)
            out.append(Message(at, recipient.lower(), found.group(1) if found else None))
        return out

    def cleanup(self) -> None:
        pass


def _rows(ids: list[str], emails: list[str], password_hash: str) -> Iterator[tuple[Any, ...]]:
    for user_id, address in zip(ids, emails, strict=True):
        yield (user_id, "Bench User", address, None, password_hash, "email", "en")


class PgStore:
    def __init__(self, admin_url: str, name: str, redis_url: str, prefix: str) -> None:
        self.db = PgDatabase(admin_url, name)
        self.redis_url = redis_url
        self.prefix = prefix

    @property
    def url(self) -> str:
        return self.db.url

    def create(self) -> None:
        self.db.create()

    def _run(self, coro_fn: Any) -> Any:
        async def go() -> Any:
            import asyncpg

            conn = await asyncpg.connect(**self.db._connect_args() | {"database": self.db.name})
            try:
                return await coro_fn(conn)
            finally:
                await conn.close()

        return asyncio.run(go())

    def insert_users(self, ids: list[str], emails: list[str], password_hash: str) -> None:
        now = datetime.now(UTC)

        async def copy(conn: Any) -> None:
            batch: list[tuple[Any, ...]] = []
            for row in _rows(ids, emails, password_hash):
                batch.append((*row, now, None, 0, now, now))
                if len(batch) == 100_000:
                    await conn.copy_records_to_table("users", records=batch, columns=USER_COLUMNS)
                    batch = []
            if batch:
                await conn.copy_records_to_table("users", records=batch, columns=USER_COLUMNS)
            # Fresh statistics and a checkpoint, so that neither happens during the load.
            await conn.execute("VACUUM ANALYZE users")
            await conn.execute("CHECKPOINT")

        self._run(copy)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        async def fetch(conn: Any) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.fetch(sql)]

        return list(self._run(fetch))

    def outbox_messages(self) -> list[Message]:
        raise BenchError("the dev outbox run is SQLite only")

    def cleanup(self) -> None:
        try:
            self.db.drop()
        except Exception as error:
            print(f"bench: could not drop database {self.db.name}: {error}", file=sys.stderr)
        try:
            import redis

            client = redis.Redis.from_url(self.redis_url)
            try:
                keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
            finally:
                client.close()
        except Exception as error:
            print(f"bench: could not delete Redis keys {self.prefix}:*: {error}", file=sys.stderr)


Store = SqliteStore | PgStore


# wrk ----------------------------------------------------------------------------------


def wrk_run(
    args: argparse.Namespace,
    base_url: str,
    script: Path,
    mode: str,
    *extra: str,
    duration: int | None = None,
) -> dict[str, Any]:
    seconds = duration or args.duration
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        base_url,
        "--",
        mode,
        *extra,
    ]
    done = subprocess.run(  # noqa: S603 (wrk on loopback, no shell)
        argv, capture_output=True, text=True, timeout=seconds + 90, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["argv"] = " ".join(argv)
    return result


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


# Profiles -----------------------------------------------------------------------------


def start_profiler(
    pid: int, seconds: int, output: Path, *, gil: bool = False, native: bool = False
) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return subprocess.Popen(  # noqa: S603 (our own profiler on our own process)
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "100" if native else "200",
            "--format",
            "raw",
            "--subprocesses",
            *(["--native"] if native else ["--nonblocking"]),
            *(["--gil"] if gil else []),
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# Cost buckets for the profile summary: the first pattern found in a stack, from the
# leaf up, names the bucket of that sample.
BUCKETS: list[tuple[str, str]] = [
    ("argon2", "argon2"),
    ("sqlite3 (C: queries, commits, busy waits)", "aiosqlite/core.py"),
    ("asyncpg protocol", "asyncpg/"),
    ("redis client", "redis/"),
    ("limits (rate-limit windows)", "limits/"),
    ("SMTP client (aiosmtplib, email building)", "aiosmtplib/"),
    ("email message building", "email/"),
    ("SMTP sink (not the server)", "aiosmtpd/"),
    ("templates (Jinja2)", "jinja2/"),
    ("JSON logging", "logging/"),
    ("JSON logging", "resetflow/logs.py"),
    ("SQLAlchemy (statement building, compile, results)", "sqlalchemy/"),
    ("crypto (AES-GCM, HMAC)", "cryptography/"),
    ("crypto (AES-GCM, HMAC)", "hmac.py"),
    ("pydantic validation", "pydantic"),
    ("HTTP parsing (h11)", "h11/"),
    ("uvicorn protocol", "uvicorn/"),
    ("starlette / FastAPI routing, middleware", "starlette/"),
    ("starlette / FastAPI routing, middleware", "fastapi/"),
    ("prometheus metrics", "prometheus_client/"),
    ("asyncio event loop", "asyncio/"),
]


IDLE_LINE = re.compile(r"\.(get|select|poll|wait|acquire|recv_into|accept)\(|sleep\(")


def _is_idle(frame: str, cache: dict[str, bool]) -> bool:
    """Is this leaf frame a thread waiting (a queue get, select, a lock, a sleep)? py-spy
    counts such threads as active when they wait in C; the source line tells."""
    if frame not in cache:
        match = re.match(r".* \((.*?):(\d+)\)$", frame.strip())
        line = ""
        if match:
            # py-spy shortens paths to what follows a sys.path entry, as this process has.
            for base in ["", *sys.path, sysconfig.get_paths()["stdlib"]]:
                candidate = Path(base) / match.group(1)
                if candidate.is_file():
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        line = candidate.read_text().splitlines()[int(match.group(2)) - 1]
                    break
        cache[frame] = bool(IDLE_LINE.search(line))
    return cache[frame]


def summarise_profile(path: Path, *, rate: int, seconds: float, top: int = 15) -> dict[str, Any]:
    """Where the busy samples go, from py-spy's raw (collapsed) output: waiting threads
    dropped, then self time by function, inclusive time of resetflow's functions, and
    buckets (the first library found from the leaf up)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    cache: dict[str, bool] = {}
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames or _is_idle(frames[-1], cache):
            idle += count
            continue
        total += count
        own[_frame(frames[-1])] += count
        for name in {_frame(f) for f in frames if "resetflow/" in f}:
            inclusive[name] += count
        bucket = "other"
        for frame in reversed(frames):
            hit = next((name for name, pattern in BUCKETS if pattern in frame), None)
            if hit is not None:
                bucket = hit
                break
            if "resetflow/" in frame:
                bucket = "resetflow's own code"
                break
        buckets[bucket] += count

    def share(counter: collections.Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, 100.0 * c / total) for name, c in counter.most_common(n)] if total else []

    return {
        "busy_samples": total,
        "idle_samples": idle,
        # Threads busy on average (1.0 = one thread running all the time).
        "busy_threads": total / (rate * seconds) if seconds else 0.0,
        "self": share(own, top),
        "inclusive_resetflow": share(inclusive, top),
        "buckets": share(buckets, len(buckets)),
    }


def _frame(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"; the line is dropped.
    match = re.match(r"(.*) \((.*?):\d+\)$", frame.strip())
    if not match:
        return frame.strip()
    function, file = match.groups()
    parts = file.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{function} ({short})"


# One run ------------------------------------------------------------------------------


def address(rng: random.Random) -> str:
    return f"load-{rng.getrandbits(64):016x}@example.com"


def server_env(spec: Spec, data_dir: Path, store: Store, sink: SmtpSink) -> dict[str, str]:
    # No RESETFLOW_* from the caller's shell; the server runs in data_dir (no .env read).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESETFLOW_")}
    env.update(LIMITS)
    env.update(
        {
            "RESETFLOW_ENV": "dev",
            "RESETFLOW_DATA_DIR": str(data_dir),
            "RESETFLOW_DATABASE_URL": store.url,
            "RESETFLOW_EMAIL_PROVIDER": spec.provider,
            "RESETFLOW_SMS_PROVIDER": "outbox",
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
    sink: SmtpSink,
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
        lines = [f"K {a}" for a in known] + [f"U {address(rng)}" for _ in known]
        rng.shuffle(lines)
        listing = temp / "addresses.txt"
        listing.write_text("\n".join(lines) + "\n")
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
        wait_ready(base_url, server)
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
        wrk_run(args, base_url, script, "healthz", duration=2)
        sink.clear()
        baseline = count_delivered(spec, store, sink) if spec.provider == "outbox" else 0

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
        with cpu_meter(procs, cpu := {}, pg_name):
            result["healthz"] = wrk_run(args, base_url, script, "healthz")
        result["healthz"].update(cpu)
        for proc in procs:
            proc.check("a resetflow process")

        status.append(f"{spec.slug}: /send-token for {args.duration} s")
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profilers.append(
                start_profiler(
                    server.pid,
                    args.duration,
                    args.profile / f"{spec.slug}-server.txt",
                    gil=args.profile_gil,
                    native=args.profile_native,
                )
            )
            if worker is not None:
                profilers.append(
                    start_profiler(
                        worker.pid,
                        args.duration,
                        args.profile / f"{spec.slug}-worker.txt",
                        gil=args.profile_gil,
                        native=args.profile_native,
                    )
                )
        prober = Prober(base_url, probes, args.probe_interval)
        prober.start()
        load_started, load_started_wall = time.monotonic(), time.time()
        with cpu_meter(procs, cpu := {}, pg_name):
            result["send_token"] = wrk_run(args, base_url, script, "send-token", str(listing))
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
        left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        cleanup_started = time.monotonic()
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
        if left:
            spent = time.monotonic() - cleanup_started
            signal.setitimer(signal.ITIMER_REAL, max(0.001, left - spent))


def drain(
    spec: Spec, store: Store, sink: SmtpSink, *, baseline: int, warm: int, seconds: float
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


def count_delivered(spec: Spec, store: Store, sink: SmtpSink) -> int:
    if spec.provider == "outbox":
        return int(store.query("SELECT count(*) FROM dev_outbox")[0][0])
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
    sink: SmtpSink,
    jobs: dict[str, tuple[int, int]],
    id_of: dict[str, str],
    known: set[str],
    probes: list[Probe],
    warm: set[str],
) -> dict[str, Any]:
    messages = store.outbox_messages() if spec.provider == "outbox" else sink.messages()
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


# Report -------------------------------------------------------------------------------


def row(result: dict[str, Any]) -> dict[str, Any]:
    send, ceiling, delivery = result["send_token"], result["healthz"], result["delivery"]
    return {
        "store": result["spec"]["label"],
        "users": result["spec"]["users"],
        # wrk's requests and the probes answered in the same window: the server did both.
        "rps": send["rps"] + send.get("probe_rps", 0.0),
        "wrk_rps": send["rps"],
        "p50_ms": send["latency_us"]["p50"] / 1000,
        "p99_ms": send["latency_us"]["p99"] / 1000,
        "ceiling_rps": ceiling["rps"],
        "ratio": send["rps"] / ceiling["rps"] if ceiling["rps"] else 0.0,
        "delivery_p50_s": delivery["latency_s"]["p50"],
        "delivery_p99_s": delivery["latency_s"]["p99"],
        "delivered": delivery["delivered"],
        "expected": delivery["expected"],
        "complete": None
        if result["spec"]["delivery"] == "none"
        else delivery["delivered"] == delivery["expected"]
        and delivery["duplicates"] == 0
        and delivery["stray"] == 0
        and send["bad"] == 0
        and delivery["probes_delivered"] == delivery["probes"],
    }


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def disturbed(result: dict[str, Any]) -> bool:
    """Was something else busy on the machine before or during the measurements?"""
    during = [
        result[part].get("cpu_cores", {}).get("other", 0.0) for part in ("healthz", "send_token")
    ]
    return max([result.get("background_cores", 0.0), *during]) > QUIET_CORES


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| store | users | /send-token req/s | p50 (wrk) | p99 (wrk) | ceiling req/s (/healthz) | "
        "ratio | delivery p50 | delivery p99 | delivered / expected |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        r = row(result)
        lines.append(
            f"| {r['store']} | {r['users']:,} | {r['rps']:,.0f} | {r['p50_ms']:.1f} ms | "
            f"{r['p99_ms']:.1f} ms | {r['ceiling_rps']:,.0f} | {100 * r['ratio']:.0f} % | "
            f"{_s(r['delivery_p50_s'])} | {_s(r['delivery_p99_s'])} | "
            + (
                "not delivered (--no-delivery)"
                if r["complete"] is None
                else f"{r['delivered']:,} / {r['expected']:,}{'' if r['complete'] else ' **!**'}"
            )
            + (" †" if disturbed(result) else "")
            + " |"
        )
    if any(disturbed(result) for result in results):
        lines += [
            "",
            f"† something else used more than {QUIET_CORES} cores of the machine before or "
            "during this run: its figures are low.",
        ]
    if any(row(result)["complete"] is False for result in results):
        lines += [
            "",
            "**!** not every message arrived exactly once, a message went to an unknown "
            "address, or an answer was not 202 (see the details).",
        ]
    return "\n".join(lines)


def details(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        send, delivery = result["send_token"], result["delivery"]
        lines.append(
            f"- {result['spec']['label']}, {result['spec']['users']:,} users: "
            f"insert {result['insert_seconds']:.1f} s; background before the run "
            f"{result['background_cores']:.2f} cores; CPU per /send-token request "
            f"{_cpu_ms(send)}, per /healthz request {_cpu_ms(result['healthz'])}; "
            "CPU cores used during /send-token "
            f"{_cores(send)}, during /healthz {_cores(result['healthz'])}; "
            f"req/s: wrk {send['rps']:,.1f} + probes {send.get('probe_rps', 0.0):,.1f}; "
            f"wrk sent {send['known_sent']:,} known + "
            f"{send['unknown_sent']:,} unknown, answered {send['answered']:,} "
            f"({send['bad']} not 202{', first: ' + send['first_bad'] if send['bad'] else ''}; "
            f"errors {send['errors']}); jobs {result['job_status']}; "
            f"duplicates {delivery['duplicates']}, stray {delivery['stray']}, "
            f"without code {delivery['without_code']}; probes {delivery['probes_delivered']}/"
            f"{delivery['probes']} delivered ({delivery['probes_not_202']} not 202), answer "
            f"p50/p99 {_ms(delivery['probe_answer_s']['p50'])}/"
            f"{_ms(delivery['probe_answer_s']['p99'])}; outbox drained "
            f"{result['drain_seconds_after_load']:.1f} s after the load"
            + (
                ""
                if result["drained"] or result["spec"]["delivery"] == "none"
                else " (NOT drained within --drain-timeout)"
            )
        )
    return "\n".join(lines)


def _cpu_ms(run: dict[str, Any]) -> str:
    """resetflow's own CPU (server + worker) per answered request."""
    cores = run.get("cpu_cores", {})
    own = cores.get("server", 0.0) + cores.get("worker", 0.0)
    return f"{1000 * own / run['rps']:.2f} ms" if run["rps"] else "—"


def _cores(run: dict[str, Any]) -> str:
    system = run.get("cpu_cores_system", {})
    return ", ".join(
        f"{name} {value:.2f}" + (f" ({system[name]:.2f} sys)" if name in system else "")
        for name, value in run.get("cpu_cores", {}).items()
    )


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{1000 * value:.0f} ms"


def targets(results: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    rows = [(res, row(res)) for res in results]
    out: list[tuple[str, bool | None, str]] = []
    ratios = [f"{r['store']} {r['users']:,}: {100 * r['ratio']:.0f} %" for _, r in rows]
    out.append(
        (
            f"/send-token throughput ≥ {100 * TARGET_CEILING_RATIO:.0f} % of the /healthz ceiling",
            all(r["ratio"] >= TARGET_CEILING_RATIO for _, r in rows) if rows else None,
            "; ".join(ratios),
        )
    )
    growth = []
    growth_ok: list[bool] = []
    for label in dict.fromkeys(r["store"] for _, r in rows):
        by_users = {r["users"]: r for _, r in rows if r["store"] == label}
        if 1000 in by_users and 1_000_000 in by_users:
            small, big = by_users[1000]["p99_ms"], by_users[1_000_000]["p99_ms"]
            growth_ok.append(big <= small * (1 + TARGET_P99_GROWTH))
            growth.append(f"{label}: {small:.1f} → {big:.1f} ms ({100 * (big / small - 1):+.0f} %)")
    out.append(
        (
            f"p99 at 1M users within {100 * TARGET_P99_GROWTH:.0f} % of p99 at 1k users",
            all(growth_ok) if growth_ok else None,
            "; ".join(growth) or "not measured (needs 1000 and 1000000 users)",
        )
    )
    default = [
        (res, r)
        for res, r in rows
        if res["spec"]["store"] == "sqlite"
        and r["users"] == 100_000
        and res["spec"]["workers"] == 1
        and res["spec"]["delivery"] == "inprocess"
    ]
    out.append(
        (
            f"≥ {TARGET_RPS:,.0f} /send-token req/s at 100k users on the embedded default, "
            "every message delivered",
            all(r["rps"] >= TARGET_RPS and r["complete"] for _, r in default) if default else None,
            "; ".join(
                f"{r['store']}: {r['rps']:,.0f} req/s, {r['delivered']:,}/{r['expected']:,} "
                f"delivered" + ("" if r["complete"] else " (incomplete)")
                for _, r in default
            )
            or "not measured",
        )
    )
    out.append(
        (
            f"delivery p99 under that load < {TARGET_DELIVERY_P99_S:.0f} s",
            all(
                r["delivery_p99_s"] is not None and r["delivery_p99_s"] < TARGET_DELIVERY_P99_S
                for _, r in default
            )
            if default
            else None,
            "; ".join(f"{r['store']}: {_s(r['delivery_p99_s'])}" for _, r in default)
            or "not measured",
        )
    )
    return out


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: S607
    import resetflow

    source = Path(resetflow.__file__).resolve().parent
    git = shutil.which("git") or "/usr/bin/git"
    head = subprocess.run(  # noqa: S603 (read-only git)
        [git, "-C", str(source), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(  # noqa: S603 (read-only git)
        [git, "-C", str(source), "status", "--porcelain", "--", "."],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "resetflow_source": str(source),
        "git_head": (head + (" (src/ has uncommitted changes)" if dirty else "")) or None,
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else "",
        "platform": platform.platform(),
    }


def report(results: list[dict[str, Any]], info: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"resetflow load benchmark: {info['nproc']} CPUs ({info['cpu']}), Python "
        f"{info['python']}, {info['wrk']}; wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration}s per run; resetflow from {info['resetflow_source']}"
        + (f" at {info['git_head']}" if info.get("git_head") else ""),
        "",
        table(results),
        "",
        details(results),
        "",
        "Targets:",
    ]
    for name, met, detail in targets(results):
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        lines.append(f"- {name}: {verdict} ({detail})")
    for result in results:
        for name, profile in result.get("profile", {}).items():
            lines += [
                "",
                f"Profile {name}: {profile['busy_samples']} busy samples "
                f"({profile['busy_threads']:.2f} threads busy on average; "
                f"{profile['idle_samples']} waiting samples dropped); busy samples by bucket:",
            ]
            lines += [f"  {share:5.1f} %  {bucket}" for bucket, share in profile["buckets"]]
            lines.append("  top self time:")
            lines += [f"  {share:5.1f} %  {fn}" for fn, share in profile["self"]]
            lines.append("  top resetflow functions (inclusive):")
            lines += [f"  {share:5.1f} %  {fn}" for fn, share in profile["inclusive_resetflow"]]
    return "\n".join(lines)


# Main ---------------------------------------------------------------------------------


def preflight_postgres(args: argparse.Namespace) -> None:
    """PostgreSQL and Redis must answer before any PostgreSQL run starts."""
    try:
        asyncio.run(PgDatabase(args.database_url, "unused")._execute("SELECT 1"))
    except Exception as error:
        raise BenchError(
            f"PostgreSQL at {args.database_url} does not answer ({type(error).__name__}: "
            f"{error}); start it, pass --database-url, or run --stores sqlite"
        ) from None
    try:
        import redis

        client = redis.Redis.from_url(args.redis_url, socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        raise BenchError(
            f"Redis at {args.redis_url} does not answer ({type(error).__name__}: {error}); "
            "start it, pass --redis-url, or run --stores sqlite"
        ) from None


def preflight() -> None:
    if shutil.which("wrk") is None:
        raise BenchError(
            "wrk is missing. It generates the load (HTTP/1.1 keep-alive, a Lua script for the "
            "JSON bodies). Install it from Debian: `apt-get install -y wrk` (as root), then "
            "run `make bench` again."
        )
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        raise BenchError(
            "aiosmtpd is missing (the SMTP sink): .venv/bin/pip install -e '.[bench]'"
        ) from None


def hash_password() -> str:
    from resetflow.accounts.passwords import PasswordHasher

    return asyncio.run(PasswordHasher().hash(PASSWORD))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status: list[str] = ["starting"]
    results: list[dict[str, Any]] = []
    sink = SmtpSink()
    script_dir = Path(tempfile.mkdtemp(prefix="resetflow-load-wrk-"))
    started = time.monotonic()
    try:
        preflight()
        with hard_timeout(args.timeout):
            if "postgres" in args.stores:
                preflight_postgres(args)
            specs = plan(args)
            print(
                "bench: runs: " + ", ".join(f"{s.label} × {s.users:,}" for s in specs),
                file=sys.stderr,
            )
            script = script_dir / "send_token.lua"
            script.write_text(WRK_SCRIPT)
            password_hash = hash_password()
            sink.start()
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
        if not isinstance(error, BenchError):
            traceback.print_exc()
        print(f"bench: ERROR while {status[-1]}: {error}", file=sys.stderr)
        return 2
    finally:
        sink.stop()
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
