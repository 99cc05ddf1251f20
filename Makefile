# Convenience wrappers; the README's two commands are scripts/serve and scripts/test.
.PHONY: serve test lint fmt bench-timing bench bench-cpu bench-import
serve:
	./scripts/serve
test:
	./scripts/test
lint:
	.venv/bin/ruff check src tests && .venv/bin/mypy
fmt:
	.venv/bin/ruff format src tests && .venv/bin/ruff check --fix src tests
# R20 timing benchmark (docs/timing.md); e.g. BENCH_ARGS="--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test --redis-url redis://127.0.0.1:6379/14"
bench-timing:
	@.venv/bin/python -c "import scipy" 2>/dev/null || .venv/bin/python -m pip install --quiet -e ".[bench]"
	.venv/bin/python scripts/bench_timing.py $(BENCH_ARGS)
# Load benchmark (docs/performance.md): /send-token throughput, latency and delivery under
# load, SQLite and PostgreSQL + Redis, 1k/100k/1M users, ~10-15 minutes. Not part of `make
# test`. Needs wrk (apt-get install -y wrk), PostgreSQL and Redis on 127.0.0.1 for the
# PostgreSQL runs; e.g. BENCH_LOAD_ARGS="--stores sqlite --users 100000 --duration 10"
bench:
	@command -v wrk >/dev/null 2>&1 || { echo "make bench: wrk is missing (it generates the load): apt-get install -y wrk" >&2; exit 2; }
	@.venv/bin/python -c "import aiosmtpd" 2>/dev/null || .venv/bin/python -m pip install --quiet -e ".[bench]"
	.venv/bin/python scripts/bench_load.py $(BENCH_LOAD_ARGS)
# CPU per request in process, no HTTP (scripts/bench_cpu.py; docs/performance.md); e.g.
# BENCH_CPU_ARGS="-n 5000 --smtp" or "--path /healthz" or "--cprofile /tmp/cpu.prof"
bench-cpu:
	@.venv/bin/python -c "import aiosmtpd" 2>/dev/null || .venv/bin/python -m pip install --quiet -e ".[bench]"
	.venv/bin/python scripts/bench_cpu.py $(BENCH_CPU_ARGS)
# Bulk import (scripts/bench_import.py; docs/performance.md): 100k users with their hashes,
# CLI and HTTP, on the embedded SQLite; e.g. BENCH_IMPORT_ARGS="--users 10000 --mode http"
bench-import:
	.venv/bin/python scripts/bench_import.py $(BENCH_IMPORT_ARGS)
