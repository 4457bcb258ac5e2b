# The single task runner: README, .ci/run and buildspec.yml call these targets.
PYTHON ?= python3
ACCELERATOR ?= cpu
PYTEST ?= $(PYTHON) -m pytest

.PHONY: setup lint format test test-unit test-docker engine demo demo-host images push bench clean

setup:  ## install the package with every extra, pinned (torch: the CPU build)
	$(PYTHON) -m pip install -c constraints/$(ACCELERATOR).txt -c constraints/dev.txt \
		"torch==$$(sed -n 's/^torch==//p' constraints/$(ACCELERATOR).txt)" -e ".[train,serve,aws,dev]"

lint:
	$(PYTHON) -m ruff check src tests handlers scripts examples benchmarks
	$(PYTHON) -m ruff format --check src tests handlers scripts examples benchmarks

format:
	$(PYTHON) -m ruff check --fix src tests handlers scripts examples benchmarks
	$(PYTHON) -m ruff format src tests handlers scripts examples benchmarks

test:  ## every tier; docker tiers skip without an engine unless CI=true
	$(PYTEST) tests

test-unit:
	$(PYTEST) tests/unit

test-docker:
	$(PYTEST) tests/container tests/localmode

images:  ## build the training and inference images (ACCELERATOR=cpu|neuron), print sizes
	$(PYTHON) -m smneuron.tools.cli build --accelerator $(ACCELERATOR)

push:  ## push both images to ECR (AWS_DEFAULT_REGION; SMNEURON_REGISTRY overrides the host)
	$(PYTHON) -m smneuron.tools.cli push --accelerator $(ACCELERATOR)

bench:  ## serving throughput/latency/startup figures on this host (prints a table)
	$(PYTHON) benchmarks/serving.py

engine:  ## install and start a Docker engine where none answers (idempotent; root)
	bash scripts/docker-engine.sh

demo: engine  ## the quickstart: build CPU images, train, deploy, invoke in SageMaker local mode
	$(PYTHON) examples/spam/localmode_demo.py

demo-host:  ## the same training on this host, no Docker: `train` against a temporary /opt/ml
	$(PYTHON) examples/spam/demo.py

clean:
	rm -rf build dist .pytest_cache .ruff_cache demo-output
