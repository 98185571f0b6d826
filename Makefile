# airjobs: `make run` starts the service on the embedded default, `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export AIRJOBS_VAR ?= $(CURDIR)/var
export AIRJOBS_PORT ?= 8080
export AIRFLOW_HOME := $(CURDIR)
export AIRFLOW_CONFIG := $(CURDIR)/airflow.cfg

.PHONY: install run stop test lint bench freeze clean

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@printf '%s\n%s\n' "$(CURDIR)/include" "$(CURDIR)/plugins" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/airjobs.pth"
	@touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m airjobs.service run

stop:
	@if [ -x $(PY) ]; then $(PY) -m airjobs.service stop; fi

# Add a user, or set the password of an existing one, on this checkout's service (running or not):
#   make user NAME=carol PASSWORD='s3cret' [ROLE="Agave User"]
# New users get the job-user role `Agave User` unless ROLE says otherwise (README.md, "Roles").
.PHONY: user
user: install
	@NAME='$(subst ','\'',$(value NAME))' PASSWORD='$(subst ','\'',$(value PASSWORD))' ROLE='$(subst ','\'',$(or $(value ROLE),Agave User))'; \
	  if [ -z "$$NAME" ] || [ -z "$$PASSWORD" ]; then echo 'usage: make user NAME=<name> PASSWORD=<password> [ROLE="Agave User"]' >&2; exit 2; fi; \
	  $(PY) -m airjobs_airflow.fab_setup --service --user "$$NAME:$$PASSWORD:$$ROLE"

# As root (CI), `make test` also brings up the real test hosts (.ci/infra-up.sh: OpenSSH on loopback and a
# single-node SLURM, from Debian packages) and stops them afterwards; elsewhere those tests are skipped.
INFRA := $(AIRJOBS_VAR)/infra
test: install lint
	@set -e; infra=""; \
	if [ "$$(id -u)" = 0 ] && [ -z "$$AIRJOBS_NO_INFRA" ]; then bash .ci/infra-up.sh "$(INFRA)"; infra="$(INFRA)/infra.env"; fi; \
	rc=0; AIRJOBS_INFRA_ENV="$$infra" $(PY) -m pytest -q tests || rc=$$?; \
	if [ -n "$$infra" ]; then bash .ci/infra-down.sh "$(INFRA)" || true; fi; \
	exit $$rc

# The checks pyproject.toml configures: ruff (lint and format), mypy (strict on include/airjobs) and the import
# contract (no Airflow import in the core, no import cycle among its modules).
LINTED := include plugins dags tests bench
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy
	PYTHONPATH=include:plugins $(VENV)/bin/lint-imports

bench: install
	$(PY) bench/lifecycle.py

freeze:
	$(PY) -m pip freeze --exclude-editable | grep -v -e '^-e' -e ' @ file:' > /tmp/airjobs-freeze.txt && \
	  { sed -n '/^#/p' requirements.txt; cat /tmp/airjobs-freeze.txt; } > /tmp/airjobs-requirements.txt && \
	  mv /tmp/airjobs-requirements.txt requirements.txt

clean: stop
	rm -rf $(AIRJOBS_VAR)
