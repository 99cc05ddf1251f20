"""Bulk import benchmark (``make bench-import``; figures in docs/performance.md).

Writes N users with password hashes (bcrypt, Django PBKDF2 and Argon2 strings; they are
stored as given, never verified at import) as NDJSON, then imports them into a fresh
database, timed, in one or both ways:

- ``cli``: ``python -m resetflow users import FILE`` as an operator runs it (process
  start-up and migrations included);
- ``http``: ``POST /admin/api/v1/users/import`` to ``resetflow serve`` on loopback,
  the body streamed from the file, the NDJSON answer read as it comes.

Then it imports the same file again (every line ``exists``, nothing written) and checks
the account count. The embedded default (SQLite in a temporary data directory) unless
``--database-url`` names a PostgreSQL database (which must be empty).

    .venv/bin/python scripts/bench_import.py --users 100000 --mode both
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HASHES = (
    "$2b$12$R9h/cIPz0gi.YJJFsRyuPOYfGJTCGijPylCPvmFbzXuKJ5Xo1GZ6u",
    "pbkdf2_sha256$600000$3Yk1bFJmU2s9$" + "q" * 43 + "=",
    "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
)


def write_users(path: Path, count: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            line = {
                "name": f"User {i}",
                "email": f"user{i}@example.com",
                "phone": f"+1415{2000000 + i:07d}" if i % 2 else None,
                "preference": "email",
                "password_hash": HASHES[i % len(HASHES)],
                "email_verified": True,
            }
            if line["phone"] is None:
                del line["phone"]
            out.write(json.dumps(line) + "\n")


def env_for(data_dir: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESETFLOW_")}
    env["RESETFLOW_DATA_DIR"] = str(data_dir)
    if database_url:
        env["RESETFLOW_DATABASE_URL"] = database_url
    return env


def run_cli(path: Path, env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "resetflow", "users", "import", str(path)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    return time.perf_counter() - started, done.stderr.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_http(path: Path, env: dict[str, str], cwd: Path) -> list[tuple[float, str]]:
    token = subprocess.run(
        [sys.executable, "-m", "resetflow", "admin-tokens", "create", "--name", "bench"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own command line
        [sys.executable, "-m", "resetflow", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "RESETFLOW_BASE_URL": f"http://127.0.0.1:{port}"},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs: list[tuple[float, str]] = []
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
        for _ in range(2):
            counts: dict[str, int] = {}
            started = time.perf_counter()
            with path.open("rb") as body, httpx.Client(timeout=600) as client:
                chunks = iter(lambda: body.read(64 * 1024), b"")
                with client.stream(
                    "POST", f"{url}/admin/api/v1/users/import", content=chunks, headers=headers
                ) as answer:
                    answer.raise_for_status()
                    for line in answer.iter_lines():
                        if line:
                            result = json.loads(line)
                            key = result.get("status") or result.get("error", "?")
                            counts[key] = counts.get(key, 0) + 1
            runs.append((time.perf_counter() - started, json.dumps(counts, sort_keys=True)))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--mode", choices=("cli", "http", "both"), default="both")
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resetflow-bench-import-") as tmp:
        root = Path(tmp)
        source = root / "users.ndjson"
        started = time.perf_counter()
        write_users(source, args.users)
        size = source.stat().st_size / 1e6
        print(f"wrote {args.users} users ({size:.1f} MB) in {time.perf_counter() - started:.1f} s")
        store = "PostgreSQL" if args.database_url else "SQLite (embedded default)"
        if args.mode in ("cli", "both"):
            data = root / "cli"
            data.mkdir()
            env = env_for(data, args.database_url)
            for label in ("first", "again"):
                seconds, summary = run_cli(source, env, root)
                rate = args.users / seconds
                print(f"cli  {store} {label}: {seconds:.1f} s ({rate:,.0f}/s) - {summary}")
        if args.mode in ("http", "both"):
            if args.database_url and args.mode == "both":
                print("http: skipped (the database already holds the cli run's users)")
                return
            data = root / "http"
            data.mkdir()
            env = env_for(data, args.database_url)
            for label, (seconds, counts) in zip(
                ("first", "again"), run_http(source, env, root), strict=True
            ):
                rate = args.users / seconds
                print(f"http {store} {label}: {seconds:.1f} s ({rate:,.0f}/s) - {counts}")


if __name__ == "__main__":
    main()
