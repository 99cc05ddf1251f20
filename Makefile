# Convenience wrappers; the README's two commands are scripts/serve and scripts/test.
.PHONY: serve test lint fmt bench-timing bench bench-cpu bench-edge bench-import bench-peers
serve:
	./scripts/serve
test:
	./scripts/test
lint:
	.venv/bin/ruff check src tests bench scripts && .venv/bin/mypy
fmt:
	.venv/bin/ruff format src tests bench scripts && .venv/bin/ruff check --fix src tests bench scripts
# The benchmarks are the bench/ package (python -m bench.<name>), run from the repository root;
# their dependencies are the `bench` extra.
BENCH_DEPS = .venv/bin/python -c "import scipy, aiosmtpd, psutil" 2>/dev/null || .venv/bin/python -m pip install --quiet -e ".[bench]" -c requirements/constraints.txt
# R20 timing benchmark (docs/timing.md); e.g. BENCH_ARGS="--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test --redis-url redis://127.0.0.1:6379/14"
bench-timing:
	@$(BENCH_DEPS)
	.venv/bin/python -m bench.timing $(BENCH_ARGS)
# Load benchmark (docs/performance.md): /send-token throughput, latency and delivery under
# load, SQLite and PostgreSQL + Redis, 1k/100k/1M users, ~10-15 minutes. Not part of `make
# test`. Needs wrk (apt-get install -y wrk), PostgreSQL and Redis on 127.0.0.1 for the
# PostgreSQL runs; e.g. BENCH_LOAD_ARGS="--stores sqlite --users 100000 --duration 10"
bench:
	@command -v wrk >/dev/null 2>&1 || { echo "make bench: wrk is missing (it generates the load): apt-get install -y wrk" >&2; exit 2; }
	@$(BENCH_DEPS)
	.venv/bin/python -m bench.load $(BENCH_LOAD_ARGS)
# CPU per request in process, no HTTP (bench/cpu.py; docs/performance.md); e.g.
# BENCH_CPU_ARGS="-n 5000 --smtp" or "--path /healthz" or "--cprofile /tmp/cpu.prof", or the web
# side on PostgreSQL + Redis: "--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/test"
bench-cpu:
	@$(BENCH_DEPS)
	.venv/bin/python -m bench.cpu $(BENCH_CPU_ARGS)
# The thin edge (bench/edge.py; docs/performance.md, "The thin edge"): resetflow's /healthz and
# /sessions/whoami against a bare FastAPI app's /healthz over HTTP, interleaved; e.g.
# BENCH_EDGE_ARGS="--rounds 6 --duration 4" or "--servers resetflow,granian --paths /healthz,/send-token"
bench-edge:
	@command -v wrk >/dev/null 2>&1 || { echo "make bench-edge: wrk is missing (it generates the load): apt-get install -y wrk" >&2; exit 2; }
	@$(BENCH_DEPS)
	.venv/bin/python -m bench.edge $(BENCH_EDGE_ARGS)
# resetflow against Django and fastapi-users (issue 15; docs/performance.md, "Peers"): each
# peer installed from PyPI into its own virtual environment under .bench-peers/ at the first
# run; wrk, PostgreSQL and Redis as for `make bench`. Long (~1 h for the full table); e.g.
# BENCH_PEERS_ARGS="--users 1000 --duration 3 --repetitions 1" for a smoke run
bench-peers:
	@command -v wrk >/dev/null 2>&1 || { echo "make bench-peers: wrk is missing (it generates the load): apt-get install -y wrk" >&2; exit 2; }
	@$(BENCH_DEPS)
	.venv/bin/python -m bench.peers $(BENCH_PEERS_ARGS)
# Bulk import (scripts/bench_import.py; docs/performance.md): 100k users with their hashes,
# CLI and HTTP, on the embedded SQLite; e.g. BENCH_IMPORT_ARGS="--users 10000 --mode http"
bench-import:
	.venv/bin/python scripts/bench_import.py $(BENCH_IMPORT_ARGS)
