# The single task runner: README, .ci/run and buildspec.yml call these targets.
#
# Every target that runs project code first creates and syncs the project virtual environment
# (.venv, pinned by constraints/), so `make demo` and `make test` work on a fresh clone with no
# earlier command. The sync is redone only when pyproject.toml or a constraints file changes.
BOOTSTRAP_PYTHON ?= python3
ACCELERATOR ?= cpu
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST := $(PYTHON) -m pytest
# The host environment is always the CPU one; ACCELERATOR picks which images to build.
SYNCED := $(VENV)/.synced
LINTED := src tests handlers scripts examples benchmarks

.PHONY: setup venv lint format docs test test-unit test-integration test-docker engine demo \
	demo-host images push bench profile fuzz soak clean

$(SYNCED): pyproject.toml constraints/cpu.txt constraints/dev.txt
	@test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade "pip>=24"
	$(PYTHON) -m pip install --quiet -c constraints/cpu.txt -c constraints/dev.txt \
		"torch==$$(sed -n 's/^torch==//p' constraints/cpu.txt)" -e ".[train,serve,aws,dev]"
	@touch $@

venv: $(SYNCED)  ## create or sync .venv (idempotent, pinned; torch: the CPU build)

setup: venv  ## the same as `make venv` (kept for habit)

lint: venv  ## ruff (check + format) and the type checker
	$(PYTHON) -m ruff check $(LINTED)
	$(PYTHON) -m ruff format --check $(LINTED)
	$(PYTHON) -m mypy

format: venv
	$(PYTHON) -m ruff check --fix $(LINTED)
	$(PYTHON) -m ruff format $(LINTED)

docs: venv  ## regenerate docs/configuration.md from the settings registry
	$(PYTHON) -m smneuron.tools.cli env --markdown > docs/configuration.md

test: venv  ## every tier; docker tiers skip without an engine unless CI=true
	$(PYTEST) tests

test-unit: venv  ## fast: no docker, no servers, no subprocess training (under a minute)
	$(PYTEST) tests/unit

test-integration: venv  ## host runs: servers, subprocess train, multi-host over loopback
	$(PYTEST) tests/integration

test-docker: venv
	$(PYTEST) tests/container tests/localmode

images: venv  ## build the training and inference images (ACCELERATOR=cpu|neuron), print sizes
	$(PYTHON) -m smneuron.tools.cli build --accelerator $(ACCELERATOR)

push: venv  ## push both images to ECR (AWS_DEFAULT_REGION; SMNEURON_REGISTRY overrides the host)
	$(PYTHON) -m smneuron.tools.cli push --accelerator $(ACCELERATOR)

bench: venv engine  ## ours vs the HF toolkit side by side -> docs/benchmarks/ (BENCH_QUICK=1: short)
	$(PYTHON) benchmarks/bench.py $(BENCH_ARGS)

profile: venv  ## py-spy over an in-process serving worker at c=16 -> docs/benchmarks/profile.md
	$(PYTHON) benchmarks/hotpath.py $(PROFILE_ARGS)

DURATION ?= 600
CONCURRENCY ?= 32
STACK ?= gunicorn
fuzz: venv  ## 10,000 generated requests against a local `serve` (STACK=gunicorn|mms): statuses, 5xx, deaths
	$(PYTHON) tests/fuzz/fuzzing.py --cases 10000 --seconds 900 --stack $(STACK)

soak: venv  ## serve under load on loopback (STACK, CONCURRENCY=32, DURATION=600 s): errors, p50/p99, RSS growth
	$(PYTHON) benchmarks/soak.py --stack $(STACK) --concurrency $(CONCURRENCY) --duration $(DURATION)

engine:  ## install and start a Docker engine where none answers (idempotent; root)
	bash scripts/docker-engine.sh

demo: venv engine  ## the quickstart: build CPU images, train, deploy, invoke in SageMaker local mode
	$(PYTHON) examples/spam/localmode_demo.py

demo-host: venv  ## the same training on this host, no Docker: `train` against a temporary /opt/ml
	$(PYTHON) examples/spam/demo.py

clean:
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache demo-output
