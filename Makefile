PY ?= .venv/bin/python

.PHONY: lint typecheck test bench

lint:
	$(PY) -m ruff check src tests

typecheck:
	$(PY) -m mypy

test:
	$(PY) -m pytest -q

bench:
	$(PY) -m bench
