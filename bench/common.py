"""What every benchmark shares: its error, a hard timeout, percentiles, log tails, the
command line of the servers it starts, a signed-in session."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any


class BenchError(Exception):
    """The benchmark could not run (not a failed target): exit status 2."""


class BenchTimeout(BenchError):
    pass


@contextlib.contextmanager
def hard_timeout(seconds: float) -> Iterator[None]:
    """Raise :class:`BenchTimeout` in the main thread after ``seconds`` (SIGALRM)."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise BenchTimeout(f"hard timeout of {seconds:.0f} s reached")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def no_timeout_during_cleanup() -> Iterator[None]:
    """Pause the hard timeout while the block cleans up (processes, databases, keys)."""
    left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    started = time.monotonic()
    try:
        yield
    finally:
        if left:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, left - (time.monotonic() - started)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def failed(error: BaseException, step: str) -> int:
    """Say why the benchmark could not run (with a traceback for what is not a
    :class:`BenchError`, a defect of the benchmark); exit status 2."""
    if not isinstance(error, BenchError):
        traceback.print_exc()
    print(f"bench: ERROR while {step}: {error}", file=sys.stderr)
    return 2


def server_arguments(description: str) -> argparse.Namespace:
    """``--host``, ``--port`` (required) and ``--workers`` (2) of a server a benchmark starts
    (bench/peers/bare_fastapi.py, bench/granian_app.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args()


async def save_signed_in_session(
    services: Any, *, session_id: str, user_id: str, lifetime: timedelta
) -> None:
    """Save a session signed in as ``user_id`` under the cookie value ``session_id``, as a
    sign-in would have saved it (for the benchmarks of signed-in requests)."""
    from resetflow.crypto import sha256_hex
    from resetflow.storage.sessions import SessionRecord

    now = services.clock.now()
    record = SessionRecord(
        user_id=user_id,
        data={"csrf": "x" * 43, "authenticated_at": now.isoformat()},
        created_at=now,
        expires_at=now + lifetime,
    )
    await services.sessions.save(sha256_hex(session_id), record)
