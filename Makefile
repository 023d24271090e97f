# fleetzip — `make test` and `make demo` work from a clean clone: they create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fleetzip-installed

.PHONY: test test-heavy demo lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Slow archive edge cases (a > 4 GiB sparse entry, > 65,535 entries): minutes, not seconds.
test-heavy: $(STAMP)
	FLEETZIP_HEAVY=1 $(PY) -m pytest tests/heavy $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/fleetzip demo

lint: $(STAMP)
	$(VENV)/bin/ruff check agent coordinator common tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
