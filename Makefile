# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv from requirements.lock when it is missing (or the lock changed).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export DYNAMO_HOME ?= $(CURDIR)/var
PYTEST_ARGS ?=

.PHONY: demo test bench venv clean-venv airflow

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m dynamo_pipeline.demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench

clean-venv:
	rm -rf $(VENV)
