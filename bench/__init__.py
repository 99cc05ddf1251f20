"""resetflow's benchmarks (``make bench``, ``make bench-timing``, ``make bench-cpu``,
``make bench-peers``; docs/performance.md, docs/timing.md).

Entry points: ``python -m bench.load``, ``python -m bench.timing``, ``python -m bench.cpu``,
``python -m bench.peers``, run from the repository root (they reuse ``tests/support``).
Modules of one job each: :mod:`bench.common` (errors, hard timeout, percentiles),
:mod:`bench.procs` (our processes, CPU accounting with psutil), :mod:`bench.sink` (the
SMTP sink), :mod:`bench.stores` (SQLite / PostgreSQL set-up and users), :mod:`bench.wrk`
(the load generator), :mod:`bench.profile` (py-spy summary), :mod:`bench.report` (the
load benchmark's tables).
"""
