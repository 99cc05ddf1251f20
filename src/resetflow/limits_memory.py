"""An in-process moving-window store for ``limits`` that forgets lazily, in O(1) per hit.

Why not ``limits.aio.storage.MemoryStorage``: after every hit it starts an expiry pass
over *every* key, with one ``asyncio.to_thread`` round trip per key, and it keeps each
window as a list it prepends to (O(entries) per hit). Every destination address is a key,
kept for the longest rule (a day by default), so on the embedded default that pass cost
7 to 10 ms of CPU per ``/send-token`` under load (docs/performance.md). This store keeps
``limits``' rule parsing and its moving-window strategy and changes only the bookkeeping:

- a window is a deque of hit times, oldest first, trimmed from the left when touched;
- keys with the same window length sit in one insertion-ordered dict, re-appended on each
  hit, so the least recently hit key is always first: each hit drops at most a few keys
  whose newest entry has left the window. Memory stays proportional to the keys hit
  within their window; no timer, no thread, no pass over all keys.

resetflow takes its rules through :meth:`LocalMovingWindowStorage.take_all` (the
``resetflow.ratelimit.Windows`` port: every rule of a request, all or nothing); the
``limits`` storage interface (``acquire_entry``, ``get_moving_window``, counters) stays,
with the same windows, for ``limits``' own strategies.

Everything runs on the event loop without awaiting, so each operation is atomic with
respect to other tasks of the process. Counts are per process, as with ``limits``'
memory storage: processes share limits only through Redis.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from limits.aio.storage import MovingWindowSupport, Storage

# Keys looked at for expiry per hit: enough to keep up with any arrival rate (each hit
# adds at most one key), small enough to keep a hit O(1).
_SWEEP_PER_HIT = 2


class LocalMovingWindowStorage(Storage, MovingWindowSupport):
    """Moving windows (and plain counters) in this process's memory."""

    STORAGE_SCHEME = ["resetflow-memory"]  # noqa: RUF012 (the shape limits declares)

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        now: Callable[[], float] = time.time,
        **options: float | str | bool,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._now = now
        self._windows: dict[str, deque[float]] = {}
        # window length → keys with that length, least recently hit first
        self._by_length: dict[int, dict[str, None]] = {}
        self._counters: dict[str, tuple[int, float]] = {}  # key → (count, expires at)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    async def aclose(self) -> None:
        """Nothing to let go of: the windows are this process's memory."""
        return None

    # -- moving window ---------------------------------------------------------------

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Add ``amount`` hits at now if the window then holds at most ``limit``."""
        if amount > limit:
            return False
        now = self._now()
        window = self._windows.get(key)
        if window is not None:
            _trim(window, now - expiry)
            if len(window) + amount > limit:
                self._touch(key, expiry)
                return False
        self._record(key, expiry, now, amount)
        return True

    async def take_all(self, hits: Sequence[tuple[str, int, int]]) -> tuple[int, float] | None:
        """One hit in every window, or in none (``resetflow.ratelimit.Windows``).

        ``hits`` are ``(key, limit, expiry)``: a window allows a hit when fewer than
        ``limit`` of its hits are at most ``expiry`` seconds old. If all allow, one hit at
        now is recorded in each and the answer is ``None``; otherwise nothing is recorded
        and the answer is ``(index in hits of the first refusing window, seconds until
        every refusing window allows again)``. Nothing is awaited between the check and
        the record, so the step is atomic with respect to the other tasks of the loop.
        """
        now = self._now()
        first, wait = -1, 0.0
        for index, (key, limit, expiry) in enumerate(hits):
            if limit < 1:
                until_free = float(expiry)
            else:
                window = self._windows.get(key)
                if window is None:
                    continue
                _trim(window, now - expiry)
                if len(window) < limit:
                    continue
                # The hit that has to leave for one slot to open.
                until_free = window[len(window) - limit] + expiry - now
            if first < 0:
                first = index
            wait = max(wait, until_free)
        if first >= 0:
            return first, wait
        for key, _, expiry in hits:
            self._record(key, expiry, now)
        return None

    async def take_in_turn(
        self, groups: Sequence[Sequence[tuple[str, int, int]]]
    ) -> tuple[int, int, float] | None:
        """:meth:`take_all` for each group in turn, stopping at the first group refused
        (``resetflow.ratelimit.Windows``): ``None``, or (its index, the first refusing
        window's index in it, the wait)."""
        for number, group in enumerate(groups):
            refused = await self.take_all(group)
            if refused is not None:
                return number, *refused
        return None

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(time of the oldest hit still in the window, hits in the window)."""
        now = self._now()
        window = self._windows.get(key)
        if not window:
            return now, 0
        _trim(window, now - expiry)
        if not window:
            return now, 0
        return window[0], len(window)

    def _record(self, key: str, expiry: int, now: float, amount: int = 1) -> None:
        """Add ``amount`` hits at ``now`` to ``key``'s window."""
        # Expire others first: a sweep after fetching could drop this very key (an idle
        # window trimmed empty) and leave the hit in a deque no longer in the store.
        self._forget_expired(expiry, now)
        self._windows.setdefault(key, deque()).extend([now] * amount)
        self._touch(key, expiry)

    def _touch(self, key: str, expiry: int) -> None:
        keys = self._by_length.setdefault(expiry, {})
        keys.pop(key, None)
        keys[key] = None

    def _forget_expired(self, expiry: int, now: float) -> None:
        keys = self._by_length.get(expiry)
        if not keys:
            return
        for _ in range(_SWEEP_PER_HIT):
            oldest = next(iter(keys), None)
            if oldest is None:
                return
            window = self._windows.get(oldest)
            if window and window[-1] >= now - expiry:
                return  # the least recently hit key is still live, so are all others
            del keys[oldest]
            self._windows.pop(oldest, None)

    # -- fixed-window counters (the Storage interface; resetflow uses moving windows) --

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = self._now()
        count, expires_at = self._counters.get(key, (0, 0.0))
        if expires_at <= now:
            count, expires_at = 0, now + expiry
        count += amount
        self._counters[key] = (count, expires_at)
        return count

    async def get(self, key: str) -> int:
        count, expires_at = self._counters.get(key, (0, 0.0))
        return count if expires_at > self._now() else 0

    async def get_expiry(self, key: str) -> float:
        _, expires_at = self._counters.get(key, (0, 0.0))
        return expires_at if expires_at > self._now() else self._now()

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        cleared = len(self._windows) + len(self._counters)
        self._windows.clear()
        self._by_length.clear()
        self._counters.clear()
        return cleared

    async def clear(self, key: str) -> None:
        self._windows.pop(key, None)
        self._counters.pop(key, None)
        for keys in self._by_length.values():
            keys.pop(key, None)

    def __len__(self) -> int:
        """Keys held (moving windows and counters): what the memory grows with."""
        return len(self._windows) + len(self._counters)


def _trim(window: deque[float], cutoff: float) -> None:
    """Drop hits older than ``cutoff`` (the deque is oldest first)."""
    while window and window[0] < cutoff:
        window.popleft()
