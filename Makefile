# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test lint bench clean chromium

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

bench: $(BIN)/.installed
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.reconcile

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
