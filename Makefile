# fleetzip — `make demo` and `make test` work from a clean clone: they create .venv when missing
# and install what they need (demo: the project; test and lint: plus the test and dev extras).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.fleetzip-runtime
TEST_STAMP    := $(VENV)/.fleetzip-test

.PHONY: test test-heavy demo lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $@ $(RUNTIME_STAMP)

test: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Slow archive edge cases (a > 4 GiB sparse entry, > 65,535 entries): minutes, not seconds.
test-heavy: $(TEST_STAMP)
	FLEETZIP_HEAVY=1 $(PY) -m pytest tests/heavy $(PYTEST_ARGS)

demo: $(RUNTIME_STAMP)
	$(VENV)/bin/fleetzip demo

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check agent coordinator common tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
