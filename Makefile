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

# The Airflow UI with the project's DAGs on http://127.0.0.1:$(AIRFLOW_PORT) (login: admin, password in
# $(DYNAMO_HOME)/airflow/simple_auth_manager_passwords.json.generated). Drop logs into $(DYNAMO_HOME)/inbox.
AIRFLOW_PORT ?= 8080
airflow: $(STAMP)
	@mkdir -p $(DYNAMO_HOME)/airflow $(DYNAMO_HOME)/inbox
	$(PY) -m dynamo_pipeline db upgrade
	AIRFLOW_HOME=$(DYNAMO_HOME)/airflow \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PARALLELISM=4 \
	AIRFLOW__API__HOST=127.0.0.1 \
	AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__API__BASE_URL=http://127.0.0.1:$(AIRFLOW_PORT) \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$(AIRFLOW_PORT)/execution/ \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
	$(VENV)/bin/airflow standalone

clean-venv:
	rm -rf $(VENV)
