"""Job output: the serving artifact moved into /opt/ml/model only when complete, and metrics.

The artifact is built in a staging directory next to /opt/ml/model, so a failed or stopped
job leaves /opt/ml/model empty; manifest.json moves last and marks the artifact complete.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smneuron.artifact.manifest import MANIFEST, MEDIA_TASKS
from smneuron.job import Paths
from smneuron.training.checkpoints import TerminationFlag
from smneuron.training.hyperparameters import TrainingHyperparameters

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def publish(staging: Path, model_dir: Path) -> None:
    """Move the finished artifact into /opt/ml/model, manifest last (it marks completeness).

    /opt/ml/model may be a mount point, so its entries move one by one instead of the
    directory being renamed.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    entries = sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST)
    for entry in entries:
        target = model_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(str(entry), str(target))


def write_artifact(
    model: Any,
    tokenizer: Any,
    hps: TrainingHyperparameters,
    labels: tuple[str, ...],
    paths: Paths,
    flag: TerminationFlag,
    backend_name: str,
) -> Path:
    """Checkpoint + graphs compiled for ``backend_name`` + manifest, built in a staging dir
    next to /opt/ml/model."""
    from smneuron.artifact.backends import get_backend
    from smneuron.artifact.build import compile_artifact, plan_batch_sizes

    paths.base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-staging-", dir=paths.base))
    try:
        model = model.to("cpu").eval()
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        name = backend_name if hps.compile else None
        if name == "cpu" and hps.task in MEDIA_TASKS:
            from smneuron.artifact.media import compile_media_artifact

            started = time.monotonic()
            compile_media_artifact(
                staging,
                model,
                tokenizer,  # the image processor or feature extractor
                task=hps.task,
                labels=labels,
                batch_sizes=plan_batch_sizes(hps.batch_size, hps.batch_sizes),
                backend=get_backend(name),
                durations_s=hps.audio_durations,
                cores_per_model=hps.cores_per_model,
            )
            log.info("compiled artifact (cpu) in %.1fs", time.monotonic() - started)
        elif name == "neuron":  # in a clean child process, with exactly the recorded flags
            _compile_neuron_in_child(staging, hps, labels, shape_arguments(model, hps))
        elif name is not None:
            backend = get_backend(name)
            compiler_args = hps.compiler_arg_list
            shape = shape_arguments(model, hps)
            started = time.monotonic()
            compile_artifact(
                staging,
                model,
                task=hps.task,
                labels=labels,
                batch_sizes=plan_batch_sizes(hps.batch_size, hps.batch_sizes),
                sequence_lengths=hps.sequence_lengths,
                backend=backend,
                cores_per_model=hps.cores_per_model,
                compiler_args=compiler_args,
                max_masks=shape.get("max_masks"),
                choices=shape.get("choices"),
                doc_stride=hps.doc_stride if hps.task == "question-answering" else None,
            )
            log.info("compiled artifact (%s) in %.1fs", backend.name, time.monotonic() - started)
        with flag.deferring():  # never leave /opt/ml/model half-moved
            publish(staging, paths.model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths.model


def shape_arguments(model: Any, hps: TrainingHyperparameters) -> dict[str, int]:
    """The task's extra static dimensions: fill-mask ``max_masks``, multiple-choice
    ``choices`` (the training data's, in the model's config as ``num_choices``)."""
    if hps.task == "fill-mask":
        return {"max_masks": hps.max_masks}
    if hps.task == "multiple-choice":
        return {"choices": int(model.config.num_choices)}
    return {}


def _compile_neuron_in_child(
    staging: Path,
    hps: TrainingHyperparameters,
    labels: tuple,
    shape: Mapping[str, int] | None = None,
) -> None:
    """Neuron: compile the saved checkpoint in a clean child (``smneuron.neuron.compile``)."""
    import os

    from smneuron.artifact.build import plan_batch_sizes
    from smneuron.neuron.backend import NeuronBackend, artifact_compiler_args, with_target
    from smneuron.neuron.compile import compile_in_child

    started = time.monotonic()
    args = with_target(artifact_compiler_args(hps.compiler_args), NeuronBackend().target())
    compile_in_child(
        staging,
        staging,
        os.environ,
        task=hps.task,
        batch_size=hps.batch_size,
        batch_sizes=plan_batch_sizes(hps.batch_size, hps.batch_sizes),
        sequence_lengths=hps.sequence_lengths,
        compiler_args=args,
        cores_per_model=hps.cores_per_model,
        **(shape or {}),
        doc_stride=hps.doc_stride if hps.task == "question-answering" else None,
        audio_durations=hps.audio_durations if hps.task in MEDIA_TASKS else None,
    )
    log.info(
        "compiled artifact (neuron, %s labels) in %.1fs", len(labels), time.monotonic() - started
    )


def write_metrics(paths: Paths, metrics: Mapping[str, float], step: int) -> None:
    paths.output_data.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
    payload = {"global_step": step, **clean}
    (paths.output_data / METRICS_FILE).write_text(json.dumps(payload, indent=2) + "\n")
