"""Shared unit-test fixtures: a clean environment, a tmp /opt/ml tree, tiny random models."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from smneuron.env import ENV
from smneuron.job import Paths
from tinymodels import save_tiny_model

AWS_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
# Variables that would make a test depend on the machine it runs on.
HOST_SPECIFIC = (
    ENV.BASE_DIR,
    ENV.ACCELERATOR,
    ENV.TRAINING_WORKER,
    ENV.RANK,
    "LOCAL_RANK",  # set by torchrun, read by transformers
    ENV.WORLD_SIZE,
    ENV.NEURON_VISIBLE_CORES,
    ENV.NEURON_NUM_CORES,
)


# Set for every test (and every subprocess a test starts through OptMl.environ).
OFFLINE = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def clean_env(base: Mapping[str, str], aws_dir: Path) -> dict[str, str]:
    """``base`` without AWS credentials or host layout, with the offline switches set."""
    env = {k: v for k, v in base.items() if k not in AWS_CREDENTIALS and k not in HOST_SPECIFIC}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(aws_dir / "credentials")
    env["AWS_CONFIG_FILE"] = str(aws_dir / "config")
    env.update(OFFLINE)
    return env


@pytest.fixture(scope="session")
def aws_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty directory for the AWS credentials and config files (so none are found)."""
    return tmp_path_factory.mktemp("aws-empty")


@pytest.fixture(autouse=True)
def clean_environ(aws_dir: Path) -> Iterator[None]:
    """Restore os.environ after every test; no AWS credentials, no model hub, no host layout."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(clean_env(saved, aws_dir))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class OptMl:
    """A SageMaker /opt/ml tree under a tmp dir, with helpers to fill it."""

    def __init__(self, base: Path, aws_dir: Path) -> None:
        self.base = base
        self.aws_dir = aws_dir
        self.paths = Paths(base)
        for path in (
            self.paths.input_config,
            self.paths.data,
            self.paths.model,
            self.paths.output,
            self.paths.checkpoints,
        ):
            path.mkdir(parents=True, exist_ok=True)

    @property
    def environ(self) -> dict[str, str]:
        """A clean copy of os.environ with SAGEMAKER_BASE_DIR pointing here (for subprocesses)."""
        return {**clean_env(os.environ, self.aws_dir), ENV.BASE_DIR: str(self.base)}

    def hyperparameters(self, values: Mapping[str, Any], *, encode: bool = True) -> Path:
        """Write hyperparameters.json; ``encode`` JSON-encodes each value as SageMaker does."""
        data = {k: json.dumps(v) if encode else v for k, v in values.items()}
        self.paths.hyperparameters.write_text(json.dumps(data))
        return self.paths.hyperparameters

    def resource(self, current_host: str = "algo-1", hosts: tuple[str, ...] = ("algo-1",)):
        data = {
            "current_host": current_host,
            "hosts": list(hosts),
            "network_interface_name": "eth0",
        }
        self.paths.resource_config.write_text(json.dumps(data))
        return self.paths.resource_config

    def channel(self, name: str, files: Mapping[str, str | bytes] | None = None) -> Path:
        """Create channel ``name`` with ``files`` (file name -> content)."""
        directory = self.paths.channel(name)
        directory.mkdir(parents=True, exist_ok=True)
        for file_name, content in (files or {}).items():
            target = directory / file_name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        return directory

    def model_channel(self, source: Path) -> Path:
        directory = self.paths.channel("model")
        shutil.copytree(source, directory)
        return directory

    def model_files(self) -> list[str]:
        return sorted(p.name for p in self.paths.model.iterdir())


@pytest.fixture(scope="session")
def opt_ml_factory(
    tmp_path_factory: pytest.TempPathFactory, aws_dir: Path
) -> Callable[[str], OptMl]:
    """``factory(name)`` -> a new /opt/ml tree, for module-scoped fixtures (env not changed)."""

    def factory(name: str = "opt_ml") -> OptMl:
        return OptMl(tmp_path_factory.mktemp(name), aws_dir)

    return factory


@pytest.fixture
def opt_ml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_dir: Path) -> OptMl:
    """An empty /opt/ml tree in tmp_path; SAGEMAKER_BASE_DIR points at it."""
    tree = OptMl(tmp_path / "opt_ml", aws_dir)
    monkeypatch.setenv(ENV.BASE_DIR, str(tree.base))
    return tree


# --------------------------------------------------------------------------------------------
# Tiny random-weight models with the real MiniLM tokenizer


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``factory(task)`` -> a directory with a tiny model for that task (made once per session)."""
    made: dict[str, Path] = {}

    def factory(task: str = "text-classification") -> Path:
        if task not in made:
            made[task] = save_tiny_model(tmp_path_factory.mktemp(f"tiny-{task}"), task)
        return made[task]

    return factory


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_factory: Callable[[str], Path]) -> Path:
    """A tiny random-weight BertForSequenceClassification (labels ham, spam) + MiniLM tokenizer.

    Session-scoped and shared: copy it before changing anything inside.
    """
    return tiny_model_factory("text-classification")
