"""Real ``python -m resetflow`` processes for tests: output to files, always stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any resetflow setting, plus ``values``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RESETFLOW_", "COURIER_"))}
    return {**base, **values}


def run_resetflow(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m resetflow ARGS`` to its end in ``cwd`` (no .env of the repository),
    with ``env`` as its only resetflow settings; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "resetflow", *args],
        env=clean_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ProcessSet:
    """Starts resetflow commands with one environment; each writes stdout and stderr to
    ``<logs>/<name>.log``. :meth:`stop_all` ends whatever is still running."""

    def __init__(self, *, env: dict[str, str], logs: Path) -> None:
        # Nothing of the developer's shell: only what the test gives.
        self.env = clean_env(PYTHONUNBUFFERED="1", **env)
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self._running: dict[str, subprocess.Popen[bytes]] = {}

    def _log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        assert name not in self._running, f"a process named {name} was started already"
        with self._log_path(name).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "resetflow", *args],
                env=self.env,
                cwd=self.logs,  # no .env file of the repository is read
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._running[name] = process
        return process

    def run(self, name: str, *args: str, timeout: float = 120) -> None:
        """Run a command to completion; fails the test (with its output) if it fails."""
        process = self.start(name, *args)
        try:
            returncode = process.wait(timeout=timeout)
        finally:
            self.stop(name)
        assert returncode == 0, f"resetflow {' '.join(args)} failed:\n{self.log(name)}"

    def wait_ready(self, name: str, url: str, *, timeout: float = 30) -> None:
        """Wait until ``url`` answers 200 (the process must stay alive meanwhile)."""
        process = self._running[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.log(name)}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{name} not ready at {url} after {timeout} s:\n{self.log(name)}")

    def pid(self, name: str) -> int:
        return self._running[name].pid

    def alive(self, name: str) -> bool:
        return self._running[name].poll() is None

    def kill(self, name: str) -> None:
        """SIGKILL: no clean-up of any kind in the process."""
        process = self._running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, name: str, *, timeout: float = 10) -> int | None:
        """SIGTERM, wait, then SIGKILL if it did not stop; returns the exit status."""
        process = self._running.pop(name, None)
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def stop_all(self) -> None:
        for name in list(self._running):
            self.stop(name)

    def log(self, name: str, *, tail: int = 150) -> str:
        path = self._log_path(name)
        if not path.exists():
            return "(no output)"
        lines = path.read_text(errors="replace").splitlines()
        skipped = (
            f"[... {len(lines) - tail} earlier lines in {path}]\n" if len(lines) > tail else ""
        )
        return skipped + "\n".join(lines[-tail:])

    def events(self, name: str, event: str) -> list[dict[str, object]]:
        """The JSON log entries of one process with this ``event`` name."""
        found: list[dict[str, object]] = []
        path = self._log_path(name)
        if not path.exists():
            return found
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == event:
                    found.append(entry)
        return found

    @contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """Print every process's output (to the test's captured output) if the block fails."""
        try:
            yield
        except BaseException:
            for path in sorted(self.logs.glob("*.log")):
                print(f"\n===== {path.stem} =====\n{self.log(path.stem)}")
            raise
