"""Timing benchmark for SECURITY.md R20: does ``POST /send-token`` take measurably longer
for an address that has an account than for one that has none?

It starts resetflow in a subprocess on a fresh, temporary data directory (SQLite, the
embedded default) or on a fresh PostgreSQL database it creates and drops, adds known
accounts with a verified email, warms up, then sends ``--requests`` requests (default
500) for known and unknown addresses in a random interleaved order, one at a time, from
one keep-alive HTTP client with an empty cookie jar each time, and compares the two
latency distributions. Every address is used once, so no per-address limit applies.

Target (R20): |median(known) - median(unknown)| < 2 ms, and the two-sample
Kolmogorov-Smirnov test does not tell the distributions apart (p > 0.01).
Exit status: 0 pass, 1 fail, 2 the benchmark itself could not run.

    .venv/bin/python -m bench.timing
    .venv/bin/python -m bench.timing \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/14

With ``--database-url`` the database named in the URL is only used to connect for
``CREATE DATABASE`` / ``DROP DATABASE``; the benchmark runs in its own database
``resetflow_bench_<random>``, which it drops afterwards. See docs/timing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    BenchError,
    failed,
    hard_timeout,
    no_timeout_during_cleanup,
    percentile,
    tail,
)
from bench.procs import Proc, clean_env, resetflow_command, run_migrate
from bench.stores import PgDatabase, accounts_with_reset_code, create_accounts, new_address
from tests.support.servers import free_port

TARGET_MEDIAN_MS = 2.0
TARGET_KS_P = 0.01
MAX_REQUESTS = 20_000
MAX_ACCOUNTS = 100_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="R20 timing benchmark for POST /send-token (known vs unknown accounts).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--requests", type=int, default=500, help="measured requests, half known, half unknown"
    )
    parser.add_argument("--warmup", type=int, default=50, help="requests sent first, discarded")
    parser.add_argument(
        "--accounts",
        type=int,
        default=250,
        help="known accounts created for the measured requests (raised to requests/2 if lower)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--samples", action="store_true", help="with --json: include every latency in ms"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="postgresql+asyncpg://user@host:port/db: run on a fresh database created on "
        "that server (db is only used to connect for CREATE/DROP DATABASE); default: SQLite",
    )
    parser.add_argument(
        "--redis-url", default=None, help="passed to the server as RESETFLOW_REDIS_URL"
    )
    parser.add_argument(
        "--worker",
        choices=("inprocess", "process", "none"),
        default="inprocess",
        help="inprocess: the server delivers the queued messages itself (the dev default); "
        "process: a separate `resetflow worker` process does (the prod topology); "
        "none: nothing delivers, jobs stay queued (isolates the worker's share of the cost)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="hard limit for the whole run, seconds"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (server log, SQLite)"
    )
    args = parser.parse_args(argv)
    if not 2 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be between 2 and {MAX_REQUESTS}")
    if not 0 <= args.warmup <= MAX_REQUESTS:
        parser.error(f"--warmup must be between 0 and {MAX_REQUESTS}")
    if not 1 <= args.accounts <= MAX_ACCOUNTS:
        parser.error(f"--accounts must be between 1 and {MAX_ACCOUNTS}")
    if not 10 <= args.timeout <= 3600:
        parser.error("--timeout must be between 10 and 3600 seconds")
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a postgresql+asyncpg:// URL (default: SQLite)")
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    return args


# The server -----------------------------------------------------------------------------


def server_env(
    args: argparse.Namespace, data_dir: Path, database_url: str | None
) -> dict[str, str]:
    # Start from the caller's environment without any RESETFLOW_* (a stray setting in the
    # shell would change what is measured); the server runs in data_dir, so no .env is read.
    env = clean_env()
    env.update(
        {
            "RESETFLOW_ENV": "dev",
            "RESETFLOW_DATA_DIR": str(data_dir),
            "RESETFLOW_EMAIL_PROVIDER": "mailbox",
            "RESETFLOW_SMS_PROVIDER": "mailbox",
            "RESETFLOW_INPROCESS_WORKER": "true" if args.worker == "inprocess" else "false",
            # High limits: measure the normal path, not 429s or silently dropped sends.
            "RESETFLOW_LIMIT_IP": "1000000/minute",
            "RESETFLOW_LIMIT_GLOBAL": "1000000/minute",
            "RESETFLOW_LIMIT_DESTINATION": "1000/minute",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if database_url:
        env["RESETFLOW_DATABASE_URL"] = database_url
    if args.redis_url:
        env["RESETFLOW_REDIS_URL"] = args.redis_url
    return env


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{(data_dir / 'resetflow.db').resolve()}"


@dataclass
class Sample:
    kind: str  # "known" | "unknown"
    ns: int


@dataclass
class Reference:
    """The first answer; every other one must match it."""

    status: int | None = None
    body: bytes | None = None
    header_names: tuple[str, ...] | None = None
    kind: str | None = None


def send_all(
    client: httpx.Client, plan: list[tuple[str, str]], reference: Reference
) -> list[Sample]:
    samples: list[Sample] = []
    for kind, email in plan:
        client.cookies.clear()  # every request is a first visit (no session cookie)
        started = time.perf_counter_ns()
        response = client.post("/send-token", json={"email": email})
        elapsed = time.perf_counter_ns() - started
        check_answer(response, kind, reference)
        samples.append(Sample(kind=kind, ns=elapsed))
    return samples


def check_answer(response: httpx.Response, kind: str, reference: Reference) -> None:
    names = tuple(sorted({name.lower() for name in response.headers}))
    if response.status_code != 202:
        raise BenchError(
            f"/send-token answered {response.status_code} for a {kind} address (expected 202): "
            f"{response.text[:300]}"
        )
    if reference.body is None:
        reference.status, reference.body = response.status_code, response.content
        reference.header_names, reference.kind = names, kind
        return
    if response.content != reference.body:
        raise BenchError(
            f"/send-token answered differently for a {kind} address than for a "
            f"{reference.kind} one (R19): {response.content!r} != {reference.body!r}"
        )
    if names != reference.header_names:
        raise BenchError(
            f"/send-token sent other headers for a {kind} address than for a {reference.kind} "
            f"one (R19): {names} != {reference.header_names}"
        )


# Statistics -----------------------------------------------------------------------------


def summarise(values: list[float]) -> dict[str, float | int]:
    return {
        "count": len(values),
        "median_ms": statistics.median(values),
        "p10_ms": percentile(values, 0.10),
        "p90_ms": percentile(values, 0.90),
        "mean_ms": statistics.fmean(values),
        "min_ms": min(values),
        "max_ms": max(values),
    }


def analyse(samples: list[Sample]) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    known = [s.ns / 1e6 for s in samples if s.kind == "known"]
    unknown = [s.ns / 1e6 for s in samples if s.kind == "unknown"]
    ks = ks_2samp(known, unknown)
    difference = statistics.median(known) - statistics.median(unknown)
    median_ok = abs(difference) < TARGET_MEDIAN_MS
    ks_ok = float(ks.pvalue) > TARGET_KS_P
    # Not part of the verdict: does the kind of the *previous* request show in the time
    # of the next one (work left behind, e.g. a delivery woken by a known request)?
    after_known = [b.ns / 1e6 for a, b in itertools.pairwise(samples) if a.kind == "known"]
    after_unknown = [b.ns / 1e6 for a, b in itertools.pairwise(samples) if a.kind == "unknown"]
    spill = ks_2samp(after_known, after_unknown) if after_known and after_unknown else None
    return {
        "known": summarise(known),
        "unknown": summarise(unknown),
        "after_previous": None
        if spill is None
        else {
            "after_known_median_ms": statistics.median(after_known),
            "after_unknown_median_ms": statistics.median(after_unknown),
            "median_difference_ms": statistics.median(after_known)
            - statistics.median(after_unknown),
            "ks_statistic": float(spill.statistic),
            "ks_pvalue": float(spill.pvalue),
        },
        "median_difference_ms": difference,
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "target": {"median_difference_ms_below": TARGET_MEDIAN_MS, "ks_pvalue_above": TARGET_KS_P},
        "median_ok": median_ok,
        "ks_ok": ks_ok,
        "passed": median_ok and ks_ok,
    }


# The run --------------------------------------------------------------------------------


def plan_requests(rng: random.Random, known: list[str], count: int) -> list[tuple[str, str]]:
    """``count`` requests, half for ``known`` addresses, half for fresh unknown ones, in
    a random order."""
    n_known = count // 2
    plan = [("known", email) for email in known[:n_known]]
    plan += [("unknown", new_address("bench")) for _ in range(count - n_known)]
    rng.shuffle(plan)
    return plan


def run(args: argparse.Namespace, status: list[str]) -> dict[str, Any]:
    rng = random.Random(args.seed)  # noqa: S311 (the order of requests, not a secret)
    n_known = max(args.accounts, args.requests // 2)
    warmup_known = args.warmup // 2
    temp = Path(tempfile.mkdtemp(prefix="resetflow-bench-"))
    data_dir = temp / "data"
    data_dir.mkdir()
    log = temp / "server.log"
    pg: PgDatabase | None = None
    server: Proc | None = None
    worker: Proc | None = None
    try:
        if args.database_url:
            pg = PgDatabase(args.database_url, f"resetflow_bench_{secrets.token_hex(6)}")
            status.append(f"creating database {pg.name}")
            pg.create()
            database_url = pg.url
            env = server_env(args, data_dir, database_url)
        else:
            database_url = sqlite_url(data_dir)
            env = server_env(args, data_dir, None)
        status.append("migrating")
        run_migrate(env, temp, log)

        # Addresses are normalised the way the service stores them.
        from resetflow.accounts.contacts import normalise_email

        known = [normalise_email(new_address("bench")) for _ in range(n_known + warmup_known)]
        status.append(f"creating {len(known)} accounts")
        ids = asyncio.run(create_accounts(database_url, known))

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        server = Proc("the server", [*resetflow_command(), *serve], env, temp, log)
        status.append(f"starting the server on port {port}")
        server.start()
        server.wait_ready(f"{base_url}/readyz")
        if args.worker == "process":
            worker = Proc("the worker", [*resetflow_command(), "worker"], env, temp, temp / "w.log")
            status.append("starting the worker")
            worker.start()
            time.sleep(1.0)
            worker.check()

        warmup = plan_requests(rng, known[n_known:], args.warmup)
        measured = plan_requests(rng, known[:n_known], args.requests)
        reference = Reference()
        with httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"user-agent": "resetflow-bench-timing"},
        ) as client:
            status.append(f"warming up ({len(warmup)} requests)")
            send_all(client, warmup, reference)
            status.append(f"measuring ({len(measured)} requests)")
            gc.collect()
            gc.disable()
            started = time.monotonic()
            try:
                samples = send_all(client, measured, reference)
            finally:
                gc.enable()
            wall = time.monotonic() - started
        if worker is not None:
            worker.check()

        # A known request must have issued a code; if not, the run compared nothing.
        asked = set(_known(warmup)) | set(_known(measured))
        used = [user_id for user_id, email in zip(ids, known, strict=True) if email in asked]
        with_code = asyncio.run(accounts_with_reset_code(database_url, used))
        if with_code != len(used):
            raise BenchError(
                f"only {with_code} of {len(used)} known accounts got a reset code: the 'known' "
                "requests did not take the known path (limits? verification?)"
            )

        result = analyse(samples)
        result["run"] = {
            "database": "postgresql" if pg else "sqlite",
            "redis_url": args.redis_url,
            "worker": args.worker,
            "requests": len(measured),
            "warmup": len(warmup),
            "accounts": len(known),
            "seed": args.seed,
            "wall_seconds": wall,
            "resetflow_command": " ".join(resetflow_command()),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "server_log": str(log) if args.keep else None,
            "answer": {"status": reference.status, "body": (reference.body or b"").decode()},
        }
        if args.samples:
            result["samples_ms"] = [{"kind": s.kind, "ms": round(s.ns / 1e6, 4)} for s in samples]
        return result
    except BenchError as error:
        if server is not None:
            error.args = (f"{error}\n--- server log (tail) ---\n{tail(log)}",)
        raise
    finally:
        # No timeout may interrupt the clean-up: the server and the database must go.
        with no_timeout_during_cleanup():
            for proc in (worker, server):
                if proc is not None:
                    proc.stop()
            if pg is not None:
                try:
                    pg.drop()
                except Exception as error:
                    print(f"bench: could not drop database {pg.name}: {error}", file=sys.stderr)
            if args.keep:
                print(f"bench: kept {temp}", file=sys.stderr)
            else:
                shutil.rmtree(temp, ignore_errors=True)


def _known(plan: list[tuple[str, str]]) -> list[str]:
    return [email for kind, email in plan if kind == "known"]


def report(result: dict[str, Any]) -> str:
    run_info = result["run"]
    known, unknown = result["known"], result["unknown"]
    lines = [
        f"resetflow /send-token timing (R20): {run_info['database']}"
        + (f" + redis {run_info['redis_url']}" if run_info["redis_url"] else "")
        + f", worker={run_info['worker']}, seed={run_info['seed']}",
        f"  {run_info['requests']} requests after {run_info['warmup']} warm-up, "
        f"{run_info['wall_seconds']:.1f} s; every answer {run_info['answer']['status']} "
        f"{run_info['answer']['body']}",
        f"  {'':8} {'count':>6} {'median':>9} {'p10':>9} {'p90':>9} {'mean':>9}",
    ]
    for name, group in (("known", known), ("unknown", unknown)):
        lines.append(
            f"  {name:8} {group['count']:>6} {group['median_ms']:>7.3f}ms "
            f"{group['p10_ms']:>7.3f}ms {group['p90_ms']:>7.3f}ms {group['mean_ms']:>7.3f}ms"
        )
    lines += [
        f"  median difference (known - unknown): {result['median_difference_ms']:+.3f} ms "
        f"(target |d| < {TARGET_MEDIAN_MS} ms: {'ok' if result['median_ok'] else 'NOT MET'})",
        f"  Kolmogorov-Smirnov: D = {result['ks_statistic']:.4f}, p = {result['ks_pvalue']:.3g} "
        f"(target p > {TARGET_KS_P}: {'ok' if result['ks_ok'] else 'NOT MET'})",
    ]
    spill = result["after_previous"]
    if spill is not None:
        lines.append(
            "  (not judged) by the previous request's kind: after known "
            f"{spill['after_known_median_ms']:.3f} ms, after unknown "
            f"{spill['after_unknown_median_ms']:.3f} ms, "
            f"d = {spill['median_difference_ms']:+.3f} ms, KS p = {spill['ks_pvalue']:.3g}"
        )
    lines.append("PASS" if result["passed"] else "FAIL")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    status: list[str] = []
    try:
        try:
            import scipy.stats  # noqa: F401
        except ImportError:
            raise BenchError(
                "scipy is missing: .venv/bin/pip install -e '.[bench]' (or make bench-timing)"
            ) from None
        with hard_timeout(args.timeout):
            result = run(args, status)
    except Exception as error:
        step = status[-1] if status else "starting"
        if args.json:
            print(json.dumps({"error": str(error), "step": step}))
        return failed(error, step)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
