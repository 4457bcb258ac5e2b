"""The serving artifact compiled in a clean child process, with exactly the recorded flags.

A training worker's environment carries training settings that neuronx-cc and torch-neuronx
also read (``NEURON_CC_FLAGS`` with ``--model-type=transformer`` and the cache, the XLA and
runtime variables, torchrun's ranks). Tracing the serving graphs there could compile them with
flags the manifest does not record. So rank 0 saves the checkpoint and runs
``python -m smneuron.neuron.compile`` (``smneuron compile``'s work) in a child whose
environment is ``compile_env``: a copy of the parent's without those variables. The child
traces on the CPU backend for the target (every NeuronCore is held by the training ranks).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from smneuron.env import ENV
from smneuron.errors import ArtifactError
from smneuron.neuron import training

log = logging.getLogger(__name__)

# Variables a Neuron compile must not inherit from a training process: NEURON_CC_FLAGS is read
# by torch-neuronx on top of the explicit compiler_args; the rest belong to the training run.
TORCHRUN_VARS = (
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)
TRAINING_ONLY = (
    training.NEURON_CC_FLAGS,
    training.NEURON_EXTRACT_GRAPHS_ONLY,
    training.NEURON_COMPILE_CACHE_URL,
    training.STOCHASTIC_ROUNDING,
    *training.RETIRED_BF16_VARS,
    ENV.NEURON_VISIBLE_CORES,
    ENV.NEURON_NUM_CORES,
    ENV.RANK,
    ENV.WORLD_SIZE,
    ENV.TRAINING_WORKER,
    *TORCHRUN_VARS,
)
TRAINING_ONLY_PREFIXES = ("TORCHELASTIC_", "XLA_", "PJRT_")


def compile_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without the training-only variables, on the neuron backend."""
    env = {
        key: value
        for key, value in environ.items()
        if key not in TRAINING_ONLY and not key.startswith(TRAINING_ONLY_PREFIXES)
    }
    env[ENV.ACCELERATOR] = "neuron"
    return env


def compile_command(
    checkpoint: Path,
    output: Path,
    *,
    task: str,
    batch_size: int,
    sequence_lengths: Sequence[int],
    compiler_args: Sequence[str],
    cores_per_model: int = 1,
    batch_sizes: Sequence[int] | None = None,
    python: str = sys.executable,
    max_masks: int | None = None,
    choices: int | None = None,
    doc_stride: int | None = None,
    audio_durations: Sequence[float] | None = None,
) -> list[str]:
    """The child's command line (``smneuron compile`` options plus ``--cpu-backend``)."""
    shape = [] if max_masks is None else ["--max-masks", str(max_masks)]
    shape += [] if choices is None else ["--choices", str(choices)]
    durations = (
        ["--audio-durations", ",".join(f"{d:g}" for d in audio_durations)]
        if audio_durations
        else []
    )
    return [
        python,
        "-m",
        "smneuron.neuron.compile",
        "--checkpoint",
        str(checkpoint),
        "--output",
        str(output),
        "--backend",
        "neuron",
        "--task",
        task,
        "--batch-size",
        str(batch_size),
        "--batch-sizes",
        ",".join(str(n) for n in (batch_sizes or (batch_size,))),
        "--sequence-lengths",
        ",".join(str(n) for n in sequence_lengths),
        "--compiler-args",
        shlex.join(compiler_args),
        "--cores-per-model",
        str(cores_per_model),
        *shape,
        *(["--doc-stride", str(doc_stride)] if doc_stride is not None else []),
        *durations,
        "--cpu-backend",
    ]


def compile_in_child(
    checkpoint: Path,
    output: Path,
    environ: Mapping[str, str],
    *,
    task: str,
    batch_size: int,
    sequence_lengths: Sequence[int],
    compiler_args: Sequence[str],
    cores_per_model: int = 1,
    batch_sizes: Sequence[int] | None = None,
    timeout_s: float | None = None,
    max_masks: int | None = None,
    choices: int | None = None,
    doc_stride: int | None = None,
    audio_durations: Sequence[float] | None = None,
) -> None:
    """Run ``compile_command`` in a ``compile_env`` child; its failure is an ArtifactError."""
    command = compile_command(
        checkpoint,
        output,
        task=task,
        batch_size=batch_size,
        batch_sizes=batch_sizes,
        sequence_lengths=sequence_lengths,
        compiler_args=compiler_args,
        cores_per_model=cores_per_model,
        max_masks=max_masks,
        choices=choices,
        doc_stride=doc_stride,
        audio_durations=audio_durations,
    )
    log.info("compiling the serving artifact in a clean child: %s", " ".join(command))
    done = subprocess.run(command, env=compile_env(environ), timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise ArtifactError(
            f"compiling the serving artifact failed (exit code {done.returncode}; the compile "
            "log is above). Retry with `smneuron compile --backend neuron --checkpoint ...`."
        )


def main(argv: list[str] | None = None) -> int:
    """``smneuron compile`` arguments plus ``--cpu-backend`` (trace for the target on CPU)."""
    from smneuron.artifact import job
    from smneuron.neuron.backend import NeuronBackend

    logging.basicConfig(
        stream=sys.stdout, level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(prog="python -m smneuron.neuron.compile")
    job.add_arguments(parser)
    parser.add_argument("--cpu-backend", action="store_true")
    args = parser.parse_args(argv)
    if args.checkpoint is None or args.output is None:
        parser.error("--checkpoint and --output are required")
    from dataclasses import fields

    from smneuron.typed import parse_hyperparameters

    raw = {
        spec.name: getattr(args, spec.name)
        for spec in fields(job.CompileHyperparameters)
        if getattr(args, spec.name, None) is not None
    }
    settings = parse_hyperparameters(job.CompileHyperparameters, raw)
    backend = NeuronBackend(cpu_backend=True if args.cpu_backend else None)
    try:
        job.compile_checkpoint(args.checkpoint, args.output, settings, backend=backend)
    except Exception:
        log.exception("compile failed")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - run as the child
    sys.exit(main())
