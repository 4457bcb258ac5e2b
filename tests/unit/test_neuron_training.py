"""Trainium launch: torchrun lines for 1 and 2 hosts, the process environment, precompile."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from smneuron.accelerator import detect_neuron
from smneuron.errors import ConfigurationError
from smneuron.neuron import (
    is_precompile_run,
    plan_training,
    precompile_command,
    torchrun_command,
    trainer_name,
    training_env,
)
from smneuron.settings import Paths, ResourceConfig

FAKE = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"
SCRIPT = ["-m", "smneuron.training.worker"]


@pytest.fixture
def trn1_cores(monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_NEURON_LS_JSON", str(FAKE / "neuron_ls" / "trn1.32xlarge.json"))
    inventory = detect_neuron(
        {"SM_CURRENT_INSTANCE_TYPE": "ml.trn1.32xlarge"},
        dev_glob=str(tmp_path / "neuron*"),
        neuron_ls=str(FAKE / "bin" / "neuron-ls"),
    )
    return inventory.core_count


def test_one_host_trn1_32xlarge(trn1_cores, tmp_path):
    paths = Paths(tmp_path / "opt-ml")
    plan = plan_training(
        SCRIPT,
        cores=trn1_cores,
        paths=paths,
        resource=ResourceConfig.from_dict({"current_host": "algo-1", "hosts": ["algo-1"]}),
        base_env={"PATH": "/usr/bin"},
    )
    assert plan.nproc_per_node == 32
    assert plan.command == [
        "torchrun",
        "--nproc_per_node=32",
        "--nnodes=1",
        "--node_rank=0",
        "--master_addr=algo-1",
        "--master_port=29500",
        "-m",
        "smneuron.training.worker",
    ]
    assert plan.precompile is None
    assert "FI_PROVIDER" not in plan.env


@pytest.mark.parametrize(("current", "rank"), [("algo-1", 0), ("algo-2", 1)])
def test_two_hosts_trn1_32xlarge(trn1_cores, tmp_path, current, rank):
    resource = ResourceConfig.from_dict({"current_host": current, "hosts": ["algo-2", "algo-1"]})
    plan = plan_training(
        SCRIPT,
        cores=trn1_cores,
        paths=Paths(tmp_path),
        resource=resource,
        base_env={},
        precompile=True,
    )
    assert plan.command[:6] == [
        "torchrun",
        "--nproc_per_node=32",
        "--nnodes=2",
        f"--node_rank={rank}",
        "--master_addr=algo-1",
        "--master_port=29500",
    ]
    assert plan.precompile == ["neuron_parallel_compile", *plan.command]
    assert plan.env["FI_PROVIDER"] == "efa"
    assert plan.env["FI_EFA_USE_DEVICE_RDMA"] == "1"


def test_training_env_puts_the_compile_cache_under_checkpoints(tmp_path):
    paths = Paths(tmp_path / "opt-ml")
    cache = str(tmp_path / "opt-ml" / "checkpoints" / "neuron-compile-cache")
    env = training_env({"HOME": "/root"}, paths)
    flags = shlex.split(env["NEURON_CC_FLAGS"])
    assert f"--cache_dir={cache}" in flags
    assert "--model-type=transformer" in flags
    assert "--auto-cast=none" in flags  # bf16 comes from the trainer's autocast
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
    assert flags == ["--cache_dir=/mnt/cache", "--model-type=cnn-training", "-O1"]
    assert env["NEURON_COMPILE_CACHE_URL"] == "s3://bucket/cache"
    assert base["NEURON_CC_FLAGS"].startswith("--cache_dir=/mnt/cache")  # parent untouched


def test_retired_bf16_variables_are_reported(tmp_path, caplog):
    training_env({"XLA_USE_BF16": "1"}, Paths(tmp_path))
    assert "XLA_USE_BF16 is set but has no effect" in caplog.text


def test_precompile_helpers():
    command = torchrun_command(
        ["train.py"], nproc_per_node=2, resource=ResourceConfig(), master_port=12355
    )
    assert precompile_command(command)[0] == "neuron_parallel_compile"
    assert "--master_port=12355" in command
    assert is_precompile_run({"NEURON_EXTRACT_GRAPHS_ONLY": "1"})
    assert not is_precompile_run({})
    assert not is_precompile_run({"NEURON_EXTRACT_GRAPHS_ONLY": "0"})


def test_no_cores_no_launch(tmp_path):
    with pytest.raises(ConfigurationError, match="no NeuronCore is visible"):
        plan_training(
            SCRIPT, cores=0, paths=Paths(tmp_path), resource=ResourceConfig(), base_env={}
        )


def test_trainer_choice_is_documented():
    assert trainer_name() == "transformers"
    doc = (Path(__file__).resolve().parents[2] / "docs" / "neuron.md").read_text()
    assert "NeuronTrainer" in doc and "transformers `Trainer`" in doc


def test_additions_feed_the_generic_launch_plan(trn1_cores, tmp_path):
    from smneuron.neuron import training_env_additions

    launch = pytest.importorskip("smneuron.training.launch")

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
