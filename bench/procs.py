"""Processes a benchmark starts (each in its own process group, always stopped) and the
CPU they, PostgreSQL, Redis, wrk and the machine use while a block runs (psutil)."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import BenchError, tail
from tests.support.processes import clean_env

__all__ = ["clean_env"]

# Rate limits out of the way: the benchmarks measure the normal path, not 429s or
# silently skipped sends (docs/performance.md says so too).
LIMITS = {
    "RESETFLOW_LIMIT_IP": "100000000/minute",
    "RESETFLOW_LIMIT_GLOBAL": "100000000/minute",
    "RESETFLOW_LIMIT_DESTINATION": "1000000/minute",
}
# Anything else than our processes using more cores than this spoils a run's figures.
QUIET_CORES = 0.25
PG_SHARED = re.compile(
    r"^/\S*postgres |: (checkpointer|background writer|walwriter|logical replication"
    r"|autovacuum launcher|archiver|stats collector)"
)


def resetflow_command() -> list[str]:
    script = Path(sys.executable).with_name("resetflow")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "resetflow"]


def run_logged(
    argv: list[str], env: dict[str, str], cwd: Path, log: Path, *, timeout: float = 120
) -> int:
    """Run a command of ours to its end, its output appended to ``log``; its exit status."""
    with log.open("ab") as out:
        return subprocess.run(  # noqa: S603 (our own command, no shell)
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        ).returncode


def run_migrate(env: dict[str, str], cwd: Path, log: Path) -> None:
    status = run_logged([*resetflow_command(), "migrate"], env, cwd, log)
    if status != 0:
        raise BenchError(f"resetflow migrate failed (exit {status}):\n{tail(log)}")


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

    def check(self, what: str | None = None) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(
                f"{what or self.name} exited (status {self.process.returncode}):\n{tail(self.log)}"
            )

    def wait_ready(self, url: str, seconds: float = 60.0) -> None:
        """Until ``url`` answers 200 (the process must stay alive meanwhile)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not become ready in {seconds:.0f} s:\n{tail(self.log)}")

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
        # Children (uvicorn or gunicorn workers) of a parent that died must not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


# CPU accounting -------------------------------------------------------------------------

Times = dict[int, tuple[str, float, float]]  # pid -> (create key, user s, system s)


def _tree(proc: Proc) -> list[psutil.Process]:
    """The process and its children (``serve --workers``, gunicorn's workers)."""
    try:
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _groups(procs: list[Proc], pg_database: str | None) -> dict[str, list[psutil.Process]]:
    """The processes of each group: each of ``procs`` with its children, Redis,
    PostgreSQL (the run's own database's backends and the shared background processes,
    not other databases' backends) and this process (the SMTP sink and the probes)."""
    groups = {proc.name: _tree(proc) for proc in procs}
    redis, postgres = [], []
    for found in psutil.process_iter(["name", "cmdline"]):
        name = found.info["name"] or ""
        if name == "redis-server":
            redis.append(found)
        elif name == "postgres":
            title = " ".join(found.info["cmdline"] or [])
            if (pg_database is not None and f" {pg_database} " in title) or PG_SHARED.search(title):
                postgres.append(found)
    groups["redis"] = redis
    groups["postgres"] = postgres
    groups["bench (sink, probes)"] = [psutil.Process()]
    return groups


def _times(processes: list[psutil.Process]) -> Times:
    out: Times = {}
    for process in processes:
        with contextlib.suppress(psutil.Error):
            cpu = process.cpu_times()
            out[process.pid] = (f"{process.create_time()}", cpu.user, cpu.system)
    return out


def _used(before: Times, after: Times) -> tuple[float, float]:
    """CPU seconds between two looks, per process, so that processes of others that end
    in between do not count; one that started in between counts whole."""
    user = system = 0.0
    for pid, (key, u, s) in after.items():
        old = before.get(pid)
        if old is None or old[0] != key:
            user, system = user + u, system + s
        else:
            user, system = user + u - old[1], system + s - old[2]
    return user, system


def busy_cores(procs: list[Proc], seconds: float = 1.0) -> float:
    """Cores ``procs`` (with their children) use over ``seconds``: near 0 once they have
    nothing left to do (requests cut off by the end of a load still run to their end)."""
    members = [member for proc in procs for member in _tree(proc)]
    before = _times(members)
    time.sleep(seconds)
    user, system = _used(before, _times(members))
    return (user + system) / seconds


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    cpu = psutil.cpu_times()
    total = sum(cpu)
    return total - cpu.idle - getattr(cpu, "iowait", 0.0), total


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


@contextlib.contextmanager
def cpu_meter(procs: list[Proc], pg_database: str | None = None) -> Iterator[dict[str, Any]]:
    """Cores used (user + system) by each of ``procs`` (with children), by PostgreSQL,
    Redis, wrk and this process, and by the whole machine, while the block runs: the
    dict it yields gets ``cpu_cores`` and ``cpu_cores_system`` when the block ends."""
    groups = _groups(procs, pg_database)
    before = {name: _times(members) for name, members in groups.items()}
    busy0, total0 = machine_busy()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    into: dict[str, Any] = {}
    try:
        yield into
    finally:
        wall = time.monotonic() - started
        # Processes started during the block (a new PostgreSQL backend...) count too.
        groups = _groups(procs, pg_database)
        used = {name: _used(before.get(name, {}), _times(m)) for name, m in groups.items()}
        # wrk starts and ends inside the block: its CPU is that of our waited-for children.
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        used["wrk"] = (
            children1.ru_utime - children0.ru_utime,
            children1.ru_stime - children0.ru_stime,
        )
        busy1, total1 = machine_busy()
        cores: dict[str, float] = {}
        system: dict[str, float] = {}
        for name, (user, sys_) in used.items():
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
