# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-compare clean chromium wrk

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/zlh serve

test: $(BIN)/.installed chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The browser tests (tests/browser/) drive Debian's Chromium; Playwright never downloads a browser here.
chromium:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium)

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# The side-by-side table of issue 13 first (bench/compare.py; drives Debian's wrk), then the store and reconcile figures.
bench: $(BIN)/.installed wrk
	$(BIN)/python -m bench.compare
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.reconcile

# Only the side-by-side comparison; options through ARGS, e.g. make bench-compare ARGS='--duration 5 --rounds 1'
bench-compare: $(BIN)/.installed wrk
	$(BIN)/python -m bench.compare $(ARGS)

wrk:
	command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
