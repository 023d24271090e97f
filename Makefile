# fleetzip — `make demo` and `make test` work from a clean clone: they create .venv when missing
# and install what they need (demo: the project; test and lint: plus the test and dev extras).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.fleetzip-runtime
TEST_STAMP    := $(VENV)/.fleetzip-test
MUTATION_STAMP := $(VENV)/.fleetzip-mutation

.PHONY: test test-heavy mutation demo lint clean

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

$(MUTATION_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,dev,mutation]'
	touch $@ $(TEST_STAMP) $(RUNTIME_STAMP)

# Mutation testing (mutmut) of the modules that carry the rules, one module at a time against
# the fast tests that cover it; not part of `make test` or CI. Minutes per module on 2 cores.
#   make mutation                               every module of tests/mutation/run.py
#   make mutation MODULES="agent/ranges.py"     only these (paths relative to the repository)
#   MUTATION_ARGS="--budget 600 --max-children 2"
#   MUTATION_ARGS="--resume --budget 600"      go on with a run stopped at its budget
# A failed run (mutmut's clean test run or stats collection failed) prints FAILED, exit 1.
# Figures: build/mutation/summary.txt; survivors with diffs: build/mutation/<module>/report.txt
mutation: $(MUTATION_STAMP)
	$(PY) -m tests.mutation.run $(MODULES) $(MUTATION_ARGS)

demo: $(RUNTIME_STAMP)
	$(VENV)/bin/fleetzip demo

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check agent coordinator common tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
