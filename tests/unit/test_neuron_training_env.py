"""Neuron training helpers: cores per host, the worker environment, precompile, the trainer.

The torchrun lines that `train` runs on Trainium: tests/integration/test_train_on_trainium.py.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from smneuron.accelerator import detect_neuron
from smneuron.errors import AcceleratorError
from smneuron.job import Paths, ResourceConfig
from smneuron.neuron.backend import DEFAULT_COMPILER_ARGS, artifact_compiler_args
from smneuron.neuron.training import (
    TRAINING_ENV_UNSET,
    is_precompile_run,
    precompile_command,
    training_cores,
    training_env,
)
from smneuron.training import launch

FAKE = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"


@pytest.fixture
def trn1_cores(monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(FAKE / "neuron_ls" / "trn1.32xlarge.json"))
    inventory = detect_neuron(
        {"SM_CURRENT_INSTANCE_TYPE": "ml.trn1.32xlarge"},
        dev_root=str(tmp_path),
        neuron_ls=str(FAKE / "bin" / "neuron-ls"),
    )
    return inventory.core_count


@pytest.mark.parametrize(
    ("instance", "environ", "cores"),
    [
        ("trn1.32xlarge", {}, 32),
        ("trn1.2xlarge", {}, 2),
        ("trn2.48xlarge", {}, 64),
        ("trn1.32xlarge", {"NEURON_RT_NUM_CORES": "8"}, 8),
        ("trn1.32xlarge", {"NEURON_RT_VISIBLE_CORES": "0-15"}, 16),
    ],
)
def test_training_cores_one_per_visible_neuroncore(monkeypatch, tmp_path, instance, environ, cores):
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(FAKE / "neuron_ls" / f"{instance}.json"))
    environ = {"SMNEURON_INSTANCE_TYPE": instance, **environ}
    found = training_cores(
        environ, dev_root=str(tmp_path), neuron_ls=str(FAKE / "bin" / "neuron-ls")
    )
    assert found == cores


def test_no_cores_no_neuron_training(tmp_path):
    with pytest.raises(AcceleratorError, match="trn1.32xlarge: no NeuronCore is visible") as err:
        training_cores(
            {"SMNEURON_INSTANCE_TYPE": "trn1.32xlarge"},
            dev_root=str(tmp_path),
            neuron_ls="",
        )
    assert "SMNEURON_ACCELERATOR=cpu" in str(err.value)


def test_training_env_puts_the_compile_cache_under_checkpoints(tmp_path):
    paths = Paths(tmp_path / "opt-ml")
    cache = str(tmp_path / "opt-ml" / "checkpoints" / "neuron-compile-cache")
    env = training_env({"HOME": "/root"}, paths)
    flags = shlex.split(env["NEURON_CC_FLAGS"])
    assert f"--cache_dir={cache}" in flags
    assert "--model-type=transformer" in flags
    # AWS's HF Trainer recipe: no compiler auto-cast override, stochastic rounding with bf16.
    assert "--auto-cast=none" not in flags
    assert env["NEURON_RT_STOCHASTIC_ROUNDING_EN"] == "1"
    # A failed compile synced back from S3 in the cache is retried, not skipped forever.
    assert "--retry_failed_compilation" in flags
    assert env["NEURON_COMPILE_CACHE_URL"] == cache
    assert env["HOME"] == "/root"
    assert "NEURON_RT_NUM_CORES" not in env  # torchrun pins one core per rank


def test_user_compiler_flags_and_cache_win(tmp_path):
    base = {
        "NEURON_CC_FLAGS": "--cache_dir=/mnt/cache --model-type=cnn-training -O1",
        "NEURON_COMPILE_CACHE_URL": "s3://bucket/cache",
    }
    env = training_env(base, Paths(tmp_path), bf16=False)
    flags = shlex.split(env["NEURON_CC_FLAGS"])
    assert flags == [
        "--cache_dir=/mnt/cache",
        "--model-type=cnn-training",
        "-O1",
        "--retry_failed_compilation",
    ]
    assert "NEURON_RT_STOCHASTIC_ROUNDING_EN" not in env  # fp32: no bf16 rounding
    assert env["NEURON_COMPILE_CACHE_URL"] == "s3://bucket/cache"
    assert base["NEURON_CC_FLAGS"].startswith("--cache_dir=/mnt/cache")  # parent untouched


def test_retired_bf16_variables_are_removed_from_workers_with_a_log_line(tmp_path, caplog):
    base = {"XLA_USE_BF16": "1", "XLA_DOWNCAST_BF16": "1", "HOME": "/root"}
    env = training_env(base, Paths(tmp_path))
    assert "XLA_USE_BF16" not in env and "XLA_DOWNCAST_BF16" not in env
    assert "XLA_USE_BF16=1 removed from the training workers" in caplog.text
    assert "XLA_DOWNCAST_BF16=1 removed" in caplog.text
    # The launcher's plan drops them from the torchrun workers' copy too.
    plan = launch.plan(ResourceConfig(), env={}, unset=TRAINING_ENV_UNSET)
    worker = launch.worker_environ(base, plan)
    assert "XLA_USE_BF16" not in worker and worker["HOME"] == "/root"


def test_precompile_helpers():
    command = launch.torchrun_command(launch.plan(ResourceConfig(), nproc_per_node=2))
    assert precompile_command(command) == ["neuron_parallel_compile", *command]
    assert is_precompile_run({"NEURON_EXTRACT_GRAPHS_ONLY": "1"})
    assert not is_precompile_run({})
    assert not is_precompile_run({"NEURON_EXTRACT_GRAPHS_ONLY": "0"})


def test_artifact_compiler_args_default_to_bf16_matmult_autocast():
    assert artifact_compiler_args("") == DEFAULT_COMPILER_ARGS
    assert artifact_compiler_args("--auto-cast none --target 'inf2'") == (
        "--auto-cast",
        "none",
        "--target",
        "inf2",
    )


def test_trainer_choice_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "neuron.md").read_text()
    assert "NeuronTrainer" in doc and "transformers `Trainer`" in doc


def test_additions_feed_the_generic_launch_plan(trn1_cores, tmp_path):
    from smneuron.neuron.training import training_env_additions

    base = {"PATH": "/usr/bin", "NEURON_CC_FLAGS": "-O1"}
    resource = ResourceConfig.from_dict({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]})
    extra = training_env_additions(base, Paths(tmp_path), multi_host=True)
    assert "PATH" not in extra and extra["FI_PROVIDER"] == "efa"
    assert shlex.split(extra["NEURON_CC_FLAGS"])[0] == "-O1"
    plan = launch.plan(resource, nproc_per_node=trn1_cores, env=extra)
    command = launch.torchrun_command(plan)
    assert "--nproc_per_node=32" in command and "--node_rank=1" in command
    assert precompile_command(command)[:2] == ["neuron_parallel_compile", command[0]]
    env = launch.worker_environ(base, plan)
    assert env["NEURON_COMPILE_CACHE_URL"].endswith("checkpoints/neuron-compile-cache")
