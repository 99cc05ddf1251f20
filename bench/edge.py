"""The thin edge over HTTP (issue 15, target 2): resetflow's ``GET /healthz`` and
``GET /sessions/whoami`` (one signed-in session's cookie) against a bare FastAPI app's
``/healthz``, each under 2 server processes, interleaved, with wrk.

Servers (``--servers``, in this order every round):

- ``resetflow``: ``resetflow serve --workers 2``, embedded default (SQLite, in-process
  delivery), the rate limits out of the way as in ``make bench``;
- ``resetflow@DIR``: the same with resetflow's sources from ``DIR`` (``PYTHONPATH``), e.g.
  an earlier commit's ``src`` from ``git archive``, for before/after in one run;
- ``bare``: bench/peers/bare_fastapi.py under the same uvicorn settings;

With ``--database-url`` (and ``--redis-url``) the resetflow servers run on PostgreSQL +
Redis instead (a fresh database and key prefix, dropped afterwards; no worker: the
signed-in reads need none), as production does;
- ``granian``: the same resetflow app under granian (``--interface asgi --workers 2``,
  its access log on like uvicorn's), from the Python given by ``--granian-python`` (a
  virtual environment of its own with resetflow and granian installed, docs/performance.md).

    python -m bench.edge --rounds 3 --duration 5
    python -m bench.edge --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test
    python -m bench.edge --servers resetflow,granian --paths /healthz,/send-token \\
        --granian-python /tmp/granian-venv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil

from bench.common import save_signed_in_session
from bench.procs import LIMITS, Proc, clean_env, resetflow_command, run_migrate
from bench.stores import PgStore, SqliteStore, hash_password, preflight_postgres
from tests.support.servers import free_port

SESSION_ID = "bench-edge-" + "s" * 40
USER_ID = f"u{0:031x}"
EMAIL = "user0@example.com"
SEND_TOKEN_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local email
  if counter % 2 == 0 then email = "user0@example.com"
  else email = "n" .. counter .. "@example.org" end
  return wrk.format(nil, nil, nil, '{"email":"' .. email .. '"}')
end
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="resetflow,bare")
    parser.add_argument("--paths", default="/healthz,/sessions/whoami")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--granian-python", default=str(Path(tempfile.gettempdir(), "granian-venv/bin/python"))
    )
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument(
        "--database-url", help="run resetflow on this PostgreSQL server (+ Redis) instead"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    return parser.parse_args(argv)


def server_env(data: Path) -> dict[str, str]:
    env = clean_env(**LIMITS)
    env.update(
        {
            "RESETFLOW_ENV": "dev",
            "RESETFLOW_DATA_DIR": str(data),
            "RESETFLOW_EMAIL_PROVIDER": "outbox",
            "RESETFLOW_SMS_PROVIDER": "outbox",
            "RESETFLOW_INPROCESS_WORKER": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


async def sign_in(env: dict[str, str]) -> None:
    """One signed-in session for the first user, saved as a sign-in would have."""
    from resetflow.config import load_settings
    from resetflow.services import build_services

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        services = build_services(load_settings())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    await save_signed_in_session(
        services, session_id=SESSION_ID, user_id=USER_ID, lifetime=timedelta(days=1)
    )
    await services.close()


def start(server: str, port: int, env: dict[str, str], home: Path, args: Any) -> Proc:
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    if server.startswith("resetflow"):
        argv = [*resetflow_command(), "serve", *bind, "--workers", "2"]
        _, _, sources = server.partition("@")
        if sources:
            env = {**env, "PYTHONPATH": sources}
    elif server == "bare":
        argv = [sys.executable, "-m", "bench.peers.bare_fastapi", *bind, "--workers", "2"]
        env = {**clean_env(), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    else:
        argv = [
            args.granian_python,
            "-m",
            "bench.granian_app",
            *bind,
            "--workers",
            "2",
        ]
        env = {**env, "PYTHONPATH": f"{Path.cwd()}:{os.environ.get('PYTHONPATH', '')}"}
    log = home / f"{server.replace('/', '_')}.log"
    proc = Proc(server, argv, env, home if server != "bare" else Path.cwd(), log)
    proc.start()
    return proc


def cpu_seconds(proc: Proc) -> float:
    """User + system CPU time of the server process and its children so far."""
    assert proc.process is not None
    root = psutil.Process(proc.process.pid)
    total = 0.0
    for each in [root, *root.children(recursive=True)]:
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def wrk(url: str, args: Any, *, cookie: str | None, script: Path | None) -> tuple[float, int]:
    """(requests per second, requests answered)."""
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    if cookie:
        argv += ["-H", f"Cookie: {cookie}"]
    if script:
        argv += ["-s", str(script)]
    done = subprocess.run([*argv, url], capture_output=True, text=True, check=True)  # noqa: S603
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    count = re.search(r"(\d+) requests in", done.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if found is None or count is None or non2xx is not None:
        raise RuntimeError(f"wrk: {done.stdout}\n{done.stderr}")
    return float(found.group(1)), int(count.group(1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers = args.servers.split(",")
    paths = args.paths.split(",")
    results: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="resetflow-edge-") as tmp:
        home = Path(tmp)
        data = home / "data"
        data.mkdir()
        env = server_env(data)
        store: SqliteStore | PgStore = SqliteStore(data)
        if args.database_url:
            preflight_postgres(args.database_url, args.redis_url)
            tag = f"{int.from_bytes(os.urandom(6), 'big'):012x}"
            store = PgStore(
                args.database_url, f"resetflow_edge_{tag}", args.redis_url, f"edge{tag}"
            )
            store.create()
            env.update(
                {
                    "RESETFLOW_DATABASE_URL": store.url,
                    "RESETFLOW_REDIS_URL": store.redis_url,
                    "RESETFLOW_REDIS_PREFIX": store.prefix,
                    "RESETFLOW_INPROCESS_WORKER": "false",
                }
            )
        try:
            run_migrate(env, home, home / "migrate.log")
            store.insert_users([USER_ID], [EMAIL], hash_password())
            asyncio.run(sign_in(env))
            measure(args, servers, paths, env, home, results, cpus)
        finally:
            if isinstance(store, PgStore):
                store.cleanup()
    report(args, results, cpus)
    return 0


def measure(
    args: Any,
    servers: list[str],
    paths: list[str],
    env: dict[str, str],
    home: Path,
    results: dict[str, list[float]],
    cpus: dict[str, list[float]],
) -> None:
    """Every round: each server in turn, each path under wrk, req/s and CPU per request."""
    script = home / "send.lua"
    script.write_text(SEND_TOKEN_LUA)
    for round_no in range(args.rounds):
        # A different server first every round: none always follows the same one.
        shift = round_no % len(servers)
        for server in servers[shift:] + servers[:shift]:
            port = free_port()
            proc = start(server, port, env, home, args)
            base = f"http://127.0.0.1:{port}"
            try:
                proc.wait_ready(f"{base}/healthz", seconds=120)
                wrk(f"{base}/healthz", _short(args), cookie=None, script=None)  # warm-up
                for path in paths:
                    if server == "bare" and path != "/healthz":
                        continue
                    cookie = f"resetflow_session={SESSION_ID}" if "session" in path else None
                    lua = script if path == "/send-token" else None
                    before = cpu_seconds(proc)
                    rps, count = wrk(f"{base}{path}", args, cookie=cookie, script=lua)
                    cpu_ms = 1e3 * (cpu_seconds(proc) - before) / count
                    results.setdefault(f"{server} {path}", []).append(rps)
                    cpus.setdefault(f"{server} {path}", []).append(cpu_ms)
                    print(
                        f"round {round_no + 1} {server} {path}: {rps:,.0f} req/s, "
                        f"{cpu_ms:.3f} ms CPU/request",
                        flush=True,
                    )
            finally:
                proc.stop()


def report(args: Any, results: dict[str, list[float]], cpus: dict[str, list[float]]) -> None:
    """Medians, each against the bare app's, and the runs to ``--json``."""
    print()
    bare = statistics.median(results["bare /healthz"]) if "bare /healthz" in results else None
    bare_cpu = statistics.median(cpus["bare /healthz"]) if "bare /healthz" in cpus else None
    for key, values in results.items():
        median = statistics.median(values)
        cpu = statistics.median(cpus[key])
        ratio = f" = {100 * median / bare:.0f} % of bare /healthz" if bare else ""
        if bare_cpu:
            ratio += f"; CPU {cpu:.3f} ms/request, bare's = {100 * bare_cpu / cpu:.0f} % of it"
        if bare and len(values) == len(results["bare /healthz"]):
            # Each round against the bare app of the same round: the machine's load moves
            # both alike within a round more than across rounds.
            paired = [v / b for v, b in zip(values, results["bare /healthz"], strict=True)]
            ratio += f"; same-round ratio median {100 * statistics.median(paired):.0f} %"
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{key}: median {median:,.0f} req/s ({runs}){ratio}")
    if args.json:
        args.json.write_text(json.dumps({"rps": results, "cpu_ms": cpus}, indent=2))


def _short(args: Any) -> Any:
    return argparse.Namespace(**{**vars(args), "duration": 1})


if __name__ == "__main__":
    raise SystemExit(main())
