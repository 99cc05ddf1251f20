# Convenience wrappers; the README's two commands are scripts/serve and scripts/test.
.PHONY: serve test lint fmt
serve:
	./scripts/serve
test:
	./scripts/test
lint:
	.venv/bin/ruff check src tests && .venv/bin/mypy
fmt:
	.venv/bin/ruff format src tests && .venv/bin/ruff check --fix src tests
