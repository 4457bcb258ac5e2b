"""The serving artifact's compile in a clean child: its environment and command line."""

from __future__ import annotations

import shlex
import sys

from smneuron.neuron.compile import compile_command, compile_env

WORKER = {
    "PATH": "/usr/bin",
    "HOME": "/root",
    "PYTHONPATH": "/app",
    "NEURON_CC_FLAGS": "--model-type=transformer --cache_dir=/opt/ml/checkpoints/c",
    "NEURON_COMPILE_CACHE_URL": "/opt/ml/checkpoints/c",
    "NEURON_RT_VISIBLE_CORES": "0",
    "NEURON_RT_STOCHASTIC_ROUNDING_EN": "1",
    "NEURON_EXTRACT_GRAPHS_ONLY": "1",
    "XLA_USE_BF16": "1",
    "PJRT_DEVICE": "NEURON",
    "RANK": "0",
    "LOCAL_RANK": "0",
    "WORLD_SIZE": "32",
    "MASTER_ADDR": "algo-1",
    "TORCHELASTIC_RUN_ID": "x",
    "SMNEURON_TRAINING_WORKER": "1",
    "SMNEURON_ACCELERATOR": "neuron",
}


def test_child_env_keeps_the_basics_and_drops_every_training_setting():
    env = compile_env(WORKER)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "PYTHONPATH": "/app",
        "SMNEURON_ACCELERATOR": "neuron",
    }
    assert WORKER["NEURON_CC_FLAGS"].startswith("--model-type")  # the parent is untouched


def test_child_command_carries_exactly_the_flags_to_record(tmp_path):
    args = ("--auto-cast", "matmult", "--auto-cast-type", "bf16", "--target", "inf2")
    command = compile_command(
        tmp_path / "ckpt",
        tmp_path / "ckpt",
        task="text-classification",
        batch_size=2,
        batch_sizes=(1, 2),
        sequence_lengths=(16, 32),
        compiler_args=args,
    )
    assert command[:3] == [sys.executable, "-m", "smneuron.neuron.compile"]
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert shlex.split(flags["--compiler-args"]) == list(args)
    assert flags["--sequence-lengths"] == "16,32" and flags["--backend"] == "neuron"
    assert (flags["--batch-size"], flags["--batch-sizes"]) == ("2", "1,2")
    assert command[-1] == "--cpu-backend"


def test_child_command_carries_the_question_answering_stride(tmp_path):
    command = compile_command(
        tmp_path / "ckpt",
        tmp_path / "ckpt",
        task="question-answering",
        batch_size=1,
        sequence_lengths=(64,),
        compiler_args=(),
        doc_stride=24,
    )
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert (flags["--task"], flags["--doc-stride"]) == ("question-answering", "24")
    assert command[-1] == "--cpu-backend"
