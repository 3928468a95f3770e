# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
# `make test-fast` is the inner loop: the domain, the use cases and the API contract, in memory, in well under a minute.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test test-fast lint lock bench bench-compare bench-queued clean chromium dovecot openssh wrk tools

# Dependencies come from requirements.lock, every file checked against its sha256 (`make lock` remakes it
# from pyproject.toml's ranges); the project itself is installed editable on top, without resolving again.
$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

run: $(BIN)/.installed
	$(BIN)/zlh serve

# Independent test files run on three processes (pytest-xdist); every test has its own databases and ports.
test: $(BIN)/.installed tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 3 --dist loadfile

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest --fast -n 2 -q tests/unit tests/property tests/integration

# Debian tools the tests drive: Chromium for the browser tests (Playwright never downloads a browser here),
# promtool and the blackbox exporter for the Prometheus files (tests/unit/test_ops_files.py), Dovecot for the
# IMAP mailbox the support desk polls (tests/integration/test_inbound_mail.py), OpenSSH's sftp client
# (tests/integration/test_sftp.py).
tools: chromium dovecot openssh
	command -v promtool >/dev/null 2>&1 && command -v prometheus-blackbox-exporter >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus prometheus-blackbox-exporter)

dovecot:
	test -x /usr/sbin/dovecot || (apt-get update -qq && apt-get install -y -qq --no-install-recommends dovecot-imapd)

openssh:
	command -v sftp >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-client)

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

# Issue 13's "no slowdown with 10,000 operations queued": the same table with 10,000 create operations queued first.
bench-queued: $(BIN)/.installed wrk
	$(BIN)/python -m bench.compare --queued 10000 --only healthz,instances,operation,create $(ARGS)

wrk:
	command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk)

# Re-resolve pyproject.toml's dependencies (with the `test` extra) into requirements.lock, with hashes.
lock: $(BIN)/.installed
	$(BIN)/pip install --quiet 'pip-tools>=7.4'
	$(BIN)/pip-compile --quiet --extra test --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
