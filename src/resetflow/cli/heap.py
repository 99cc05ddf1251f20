"""The garbage collector for the long-running commands (``serve``, ``worker``).

What start-up builds (modules, routes, tables, compiled statements, templates) lives as
long as the process, yet CPython's collector walks it again at every full collection:
~140,000 objects, about 80 ms of a paused event loop each time, and 0.07 ms of collection
per ``/send-token`` in ``make bench-cpu`` (docs/performance.md has the load figures).
Once start-up is done, :func:`settle` moves it out of the collector's way
(``gc.freeze``) and collects the young generation less often; objects are still freed by
reference counting at once, and cycles still collected.
"""

from __future__ import annotations

import gc

# Container objects allocated (net) before a young collection; CPython's default is 700.
# Most of a request's objects die by reference count long before, so this mostly saves
# collections that find nothing.
YOUNG_GENERATION_THRESHOLD = 10_000


def settle() -> None:
    """Call once, when start-up is done: everything alive now is frozen (never scanned
    again, never collected as a cycle), and young collections come less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
