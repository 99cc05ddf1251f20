"""py-spy profiles of our processes during a load run, and where their busy samples go."""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from bench.common import BenchError


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
