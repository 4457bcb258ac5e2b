"""Generation artifacts (``causal-lm``, ``seq2seq``): the static limits a decoder is compiled for.

A decoder on Inferentia2 is compiled for one batch size and one total length (the KV cache
holds ``max_total_length`` positions per sequence), and its prompts are encoded in a few
fixed prompt lengths (buckets). The CPU backend records the same three numbers and its server
keeps to them, so that CPU serving refuses exactly the requests a Neuron artifact would:

    manifest.batch_size                        sequences one generation loop runs at once
    manifest.sequence_lengths                  prompt buckets (the longest prompt is the largest)
    manifest.task_parameters.max_total_length  prompt tokens + new tokens of one sequence
                                               (seq2seq: new tokens; the prompt is the encoder's)

On CPU the artifact is the fine-tuned checkpoint plus the manifest (the loop runs the eager
Hugging Face model); on Neuron ``smneuron.neuron.generation`` adds optimum-neuron's export.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smneuron.artifact.manifest import Manifest, write_manifest
from smneuron.errors import ConfigurationError
from smneuron.versions import package_version

log = logging.getLogger(__name__)

GENERATION_TASKS = ("causal-lm", "seq2seq")
CPU_ENGINE = "transformers"  # the eager model's forward with a KV cache, our own loop
DEFAULT_BATCH_SIZE = 4


def is_generation(task: str) -> bool:
    return task in GENERATION_TASKS


def max_positions(config: Mapping[str, Any]) -> int | None:
    """The longest sequence the model's position embeddings allow (None: unbounded)."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def plan_limits(
    prompt_lengths: Sequence[int],
    max_total_length: int | None,
    config: Mapping[str, Any],
    task: str = "causal-lm",
) -> tuple[tuple[int, ...], int]:
    """(prompt buckets ascending, max total length), checked against each other and the model.

    Without ``max_total_length``: twice the largest bucket, capped by the model's positions
    (seq2seq: the largest bucket; there the total counts the decoder's tokens only).

    Raises:
        ConfigurationError: a bucket < 1, a total length that leaves no room to generate past
            the largest bucket, or one above the model's position embeddings.
    """
    buckets = tuple(sorted({int(length) for length in prompt_lengths}))
    if not buckets or buckets[0] < 1:
        raise ConfigurationError(f"prompt buckets must be ≥ 1, got {list(prompt_lengths)}")
    limit = max_positions(config)
    causal = task == "causal-lm"
    if not causal and limit is not None and buckets[-1] > limit:
        raise ConfigurationError(
            f"prompt bucket {buckets[-1]} is above the model's {limit} positions"
        )
    total = max_total_length if max_total_length else buckets[-1] * (2 if causal else 1)
    if not max_total_length and limit is not None:
        total = min(total, limit)
    if causal and total <= buckets[-1]:
        raise ConfigurationError(
            f"max_total_length {total} leaves no room to generate after the largest prompt "
            f"bucket {buckets[-1]}; raise max_total_length or lower the buckets"
        )
    if limit is not None and total > limit:
        raise ConfigurationError(
            f"max_total_length {total} is above the model's {limit} positions "
            "(config n_positions / max_position_embeddings)"
        )
    return buckets, total


def cpu_versions() -> dict[str, str]:
    found = {
        "smneuron": package_version("smneuron"),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
    }
    return {key: value for key, value in found.items() if value}


def write_generation_manifest(
    model_dir: Path,
    *,
    task: str,
    config: Mapping[str, Any],
    batch_size: int = DEFAULT_BATCH_SIZE,
    prompt_lengths: Sequence[int],
    max_total_length: int | None = None,
    backend: str = "cpu",
    engine: str = CPU_ENGINE,
    versions: Mapping[str, str] | None = None,
    files: Mapping[str, Any] | None = None,
    target: str = "cpu",
    cores_per_model: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """Write the manifest of a generation artifact whose checkpoint is already in
    ``model_dir`` (config.json, weights, tokenizer). Written last: with it, the artifact is
    complete."""
    if not is_generation(task):
        raise ConfigurationError(f"{task!r} is not a generation task ({GENERATION_TASKS})")
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be ≥ 1, got {batch_size}")
    buckets, total = plan_limits(prompt_lengths, max_total_length, config, task)
    manifest = Manifest(
        task=task,
        backend=backend,
        batch_size=batch_size,
        batch_sizes=(batch_size,),  # static batching: one compiled batch size
        sequence_lengths=buckets,
        input_names=("input_ids", "attention_mask"),
        cores_per_model=cores_per_model,
        versions=dict(versions if versions is not None else cpu_versions()),
        files=dict(files or {"checkpoint": "."}),
        target=target,
        task_parameters={"max_total_length": total, "engine": engine, **(extra or {})},
    )
    write_manifest(model_dir, manifest)
    log.info(
        "generation artifact task=%s backend=%s batch=%d prompt buckets=%s max total length=%d",
        task,
        backend,
        batch_size,
        list(buckets),
        total,
    )
    return manifest


def compile_generation(
    checkpoint: Path,
    output: Path,
    *,
    task: str,
    config: Mapping[str, Any],
    backend: Any,
    batch_size: int,
    prompt_lengths: Sequence[int],
    max_total_length: int | None,
    num_cores: int = 1,
    auto_cast_type: str = "bf16",
) -> Manifest:
    """``smneuron compile`` for a decoder whose checkpoint is already copied into ``output``.

    CPU: the manifest alone (the eager model runs within its limits). Neuron: optimum-neuron's
    export (``smneuron.neuron.generation``) for ``batch_size`` x ``max_total_length`` over
    ``num_cores`` cores (seq2seq: one traced length for encoder and decoder, recorded as
    ``task_parameters.sequence_length``), its version recorded next to the Neuron stack's.
    """
    buckets, total = plan_limits(prompt_lengths, max_total_length, config, task)
    if backend.name == "cpu":
        return write_generation_manifest(
            output,
            task=task,
            config=config,
            batch_size=batch_size,
            prompt_lengths=buckets,
            max_total_length=total,
        )
    from smneuron.neuron import generation as neuron

    extra: dict[str, Any] = {"num_cores": num_cores, "auto_cast_type": auto_cast_type}
    if task == "causal-lm":
        files = neuron.export_causal_lm(
            checkpoint,
            output,
            batch_size=batch_size,
            sequence_length=total,
            num_cores=num_cores,
            auto_cast_type=auto_cast_type,
        )
    else:
        length = neuron.seq2seq_sequence_length(buckets[-1], total)
        limit = max_positions(config)
        if limit is not None and length > limit:
            raise ConfigurationError(
                f"seq2seq on Neuron traces one length for the encoder and the decoder: "
                f"{length} (the largest bucket, or max_total_length + 1 for the decoder's "
                f"start token) is above the model's {limit} positions; lower them"
            )
        files = neuron.export_seq2seq(
            checkpoint,
            output,
            batch_size=batch_size,
            sequence_length=length,
            num_cores=num_cores,
            auto_cast_type=auto_cast_type,
        )
        extra.update(sequence_length=length, num_beams=neuron.SEQ2SEQ_NUM_BEAMS)
    versions = dict(backend.versions())
    found = neuron.optimum_neuron_version()
    if found:
        versions["optimum_neuron"] = found
    return write_generation_manifest(
        output,
        task=task,
        config=config,
        batch_size=batch_size,
        prompt_lengths=buckets,
        max_total_length=total,
        backend="neuron",
        engine=neuron.ENGINE,
        versions=versions,
        files=files,
        target=backend.target(),
        cores_per_model=num_cores,
        extra=extra,
    )
