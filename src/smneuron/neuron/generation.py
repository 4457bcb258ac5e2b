"""Decoder export for Inferentia2/Trainium with optimum-neuron (the only optimum-neuron user).

``optimum.neuron.NeuronModelForCausalLM.from_pretrained(checkpoint, export=True, batch_size=,
sequence_length=, num_cores=, auto_cast_type=)`` compiles the decoder for one batch size and
one total length (its KV cache holds ``sequence_length`` positions per sequence) over
``num_cores`` NeuronCores (tensor parallelism); ``save_pretrained`` writes the compiled model.
Those are the artifact's static limits: ``batch_size``, ``max_total_length``, cores per model.

Nothing here has run on Neuron hardware yet; the tests run it against a fake
``optimum.neuron`` that records its calls and follows the real names and arguments.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from smneuron.errors import ArtifactError

log = logging.getLogger(__name__)

NEURON_DIR = "compiled/neuron"  # the exported model, inside the artifact
ENGINE = "optimum-neuron"
AUTO_CAST_TYPES = ("bf16", "fp16", "f32")
NO_OPTIMUM_NEURON = (
    "this image has no optimum-neuron (optimum.neuron): exporting a causal-lm for Neuron needs "
    "it; install optimum-neuron into the neuron training image at the version that matches its "
    "Neuron SDK (docs/compatibility.md), or compile for --backend cpu"
)


def import_causal_lm_class() -> Any:
    """``optimum.neuron.NeuronModelForCausalLM`` or an ArtifactError naming what to install."""
    try:
        from optimum.neuron import NeuronModelForCausalLM
    except ImportError as err:
        raise ArtifactError(NO_OPTIMUM_NEURON) from err
    return NeuronModelForCausalLM


def optimum_neuron_version() -> str | None:
    try:
        from optimum.neuron.version import __version__
    except ImportError:
        return None
    return str(__version__)


def export_causal_lm(
    checkpoint: Path,
    output: Path,
    *,
    batch_size: int,
    sequence_length: int,
    num_cores: int,
    auto_cast_type: str,
) -> dict[str, str]:
    """Compile ``checkpoint`` into ``output/NEURON_DIR``; the files it wrote, by role."""
    if auto_cast_type not in AUTO_CAST_TYPES:
        raise ArtifactError(
            f"auto_cast_type {auto_cast_type!r}: one of {', '.join(AUTO_CAST_TYPES)}"
        )
    model_class = import_causal_lm_class()
    started = time.monotonic()
    model = model_class.from_pretrained(
        str(checkpoint),
        export=True,
        batch_size=batch_size,
        sequence_length=sequence_length,
        num_cores=num_cores,
        auto_cast_type=auto_cast_type,
    )
    target = output / NEURON_DIR
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    log.info(
        "exported causal-lm with optimum-neuron batch=%d sequence_length=%d num_cores=%d "
        "auto_cast_type=%s in %.1fs",
        batch_size,
        sequence_length,
        num_cores,
        auto_cast_type,
        time.monotonic() - started,
    )
    return {"checkpoint": ".", "neuron": NEURON_DIR}
