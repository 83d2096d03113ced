# The two commands of the quick start:
#   make run    install, migrate, load the demo data, train the first model and serve http://127.0.0.1:8000
#   make test   the whole test suite against PostgreSQL and Redis (started when they are down)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test venv lint bench clean-var

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	scripts/run-portal.sh

test: venv
	scripts/run-tests.sh

bench: venv
	$(PY) bench/bench_inference.py --quick
	$(PY) bench/bench_pipeline.py --quick

# ruff check: the rules in ruff.toml; ruff format --check: the code as `ruff format` writes it.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-var:
	rm -rf var/
