# planes-bot: `make run` starts the offline runtime, `make test` runs every check.
# Both create .venv with `python3 -m venv` and install the project into it when missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := contracts planes plugins research cli

.PHONY: run test lint typecheck pytest bench bench-backtest docs clean

# The modules mypyc compiles (planes/native.py): the install compiles them, so an edit to one
# reinstalls; run with PLANES_NATIVE=0 to use the sources without a rebuild.
NATIVE_SOURCES := $(shell $(PYTHON) -c "import pathlib, runpy; n = runpy.run_path('planes/native.py'); \
	print(' '.join(str(n['module_source'](pathlib.Path(), m)) for m in n['MODULES']))")

$(STAMP): pyproject.toml setup.py planes/native.py $(NATIVE_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/planes run $(ARGS)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# The backtest benchmark against backtrader, backtesting.py and NautilusTrader: the `bench` extra
# in a venv of its own inside .venv (NautilusTrader pins pandas < 3; dev and CI stay as they are).
# Options through ARGS, e.g. make bench-backtest ARGS="--sizes 5000,50000 --json".
BENCH_VENV := $(VENV)/bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml setup.py planes/native.py $(NATIVE_SOURCES)
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench-backtest: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/bench_backtest.py $(ARGS)

docs: $(STAMP)
	$(BIN)/planes topics --markdown --set plugins.entry_points=false > docs/topics.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build planes/_native.json
	find $(PACKAGES) -name '*.so' -delete
