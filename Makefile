# Convenience wrappers; the README's two commands are scripts/serve and scripts/test.
.PHONY: serve test lint fmt bench-timing
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
