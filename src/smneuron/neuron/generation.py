"""Generation export for Inferentia2/Trainium with optimum-neuron (the only optimum-neuron user).

Decoders: ``optimum.neuron.NeuronModelForCausalLM.from_pretrained(checkpoint, export=True,
batch_size=, sequence_length=, num_cores=, auto_cast_type=)`` compiles the decoder for one
batch size and one total length (its KV cache holds ``sequence_length`` positions per
sequence) over ``num_cores`` NeuronCores (tensor parallelism). Those are the artifact's static
limits: ``batch_size``, ``max_total_length``, cores per model.

Encoder-decoders: ``optimum.neuron.NeuronModelForSeq2SeqLM.from_pretrained(checkpoint,
export=True, batch_size=, sequence_length=, num_beams=, auto_cast=, auto_cast_type=,
tensor_parallel_size=, dynamic_batch_size=False)`` traces an encoder and a decoder whose
shapes share one ``sequence_length``: the encoder's input length and the decoder's KV cache
(its start token included). So that length is the larger of the largest prompt bucket and
``max_total_length`` + 1; ``num_beams`` is 1 (the server decodes each sequence on its own).

``save_pretrained`` writes the compiled model into ``compiled/neuron`` in both cases.

Serving (causal-lm): ``NeuronModelForCausalLM.from_pretrained(compiled/neuron)`` loads the
compiled decoder, and ``generate(input_ids, attention_mask=, max_new_tokens=, do_sample=, ...,
stopping_criteria=)`` runs one static batch of exactly the compiled batch size. The stopping
criterion is called once per new token of the batch: that is where the server takes each
token (streaming it, applying stop strings, deadlines and cancellations per sequence).

Serving (seq2seq): ``NeuronModelForSeq2SeqLM.from_pretrained(compiled/neuron)`` loads the traced
encoder and decoder; ``generate(input_ids, attention_mask=, generation_config=,
stopping_criteria=, max_new_tokens=, do_sample=)`` takes inputs of at most the exported batch
size and ``sequence_length`` (it pads smaller ones on the right; the server passes exactly
those shapes). It forwards ``max_new_tokens``/``max_length``/``do_sample`` from its keyword
arguments and drops the rest, so the pad and end tokens travel in ``generation_config``. Its
traced decoder picks each next token inside the graph (it returns the next tokens, not only
logits), so only greedy decoding is served: no sampling, no logits processors.

Nothing here has run on Neuron hardware yet; the tests run it against a fake
``optimum.neuron`` that records its calls and follows the real names and arguments.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from smneuron.errors import ArtifactError

log = logging.getLogger(__name__)

NEURON_DIR = "compiled/neuron"  # the exported model, inside the artifact
ENGINE = "optimum-neuron"
AUTO_CAST_TYPES = ("bf16", "fp16", "f32")
NO_OPTIMUM_NEURON = (
    "this image has no optimum-neuron (optimum.neuron): exporting a {task} for Neuron needs "
    "it; install optimum-neuron into the neuron training image at the version that matches its "
    "Neuron SDK (docs/compatibility.md), or compile for --backend cpu"
)


MODEL_CLASSES = {"causal-lm": "NeuronModelForCausalLM", "seq2seq": "NeuronModelForSeq2SeqLM"}
SEQ2SEQ_NUM_BEAMS = 1


def import_model_class(task: str) -> Any:
    """optimum-neuron's model class for ``task`` or an ArtifactError naming what to install."""
    try:
        import optimum.neuron as optimum_neuron

        return getattr(optimum_neuron, MODEL_CLASSES[task])
    except (ImportError, AttributeError) as err:
        raise ArtifactError(NO_OPTIMUM_NEURON.format(task=task)) from err


def check_cast_type(auto_cast_type: str) -> None:
    if auto_cast_type not in AUTO_CAST_TYPES:
        raise ArtifactError(
            f"auto_cast_type {auto_cast_type!r}: one of {', '.join(AUTO_CAST_TYPES)}"
        )


def seq2seq_sequence_length(largest_prompt: int, max_new_tokens: int) -> int:
    """The one length an encoder-decoder is traced for: the encoder holds the largest prompt,
    the decoder's cache the start token and ``max_new_tokens``."""
    return max(largest_prompt, max_new_tokens + 1)


def seq2seq_cast(auto_cast_type: str) -> dict[str, str | None]:
    """optimum-neuron's traced-model cast arguments: matmuls cast to ``bf16``/``fp16``;
    ``f32``: no cast at all (``auto_cast=None``)."""
    check_cast_type(auto_cast_type)
    if auto_cast_type == "f32":
        return {"auto_cast": None, "auto_cast_type": None}
    return {"auto_cast": "matmul", "auto_cast_type": auto_cast_type}


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
    check_cast_type(auto_cast_type)
    return _export(
        "causal-lm",
        checkpoint,
        output,
        batch_size=batch_size,
        sequence_length=sequence_length,
        num_cores=num_cores,
        auto_cast_type=auto_cast_type,
    )


def export_seq2seq(
    checkpoint: Path,
    output: Path,
    *,
    batch_size: int,
    sequence_length: int,
    num_cores: int,
    auto_cast_type: str,
) -> dict[str, str]:
    """Trace the encoder and decoder of ``checkpoint`` into ``output/NEURON_DIR`` (its
    ``encoder/`` and ``decoder/``); the files it wrote, by role."""
    return _export(
        "seq2seq",
        checkpoint,
        output,
        batch_size=batch_size,
        sequence_length=sequence_length,
        num_beams=SEQ2SEQ_NUM_BEAMS,
        tensor_parallel_size=num_cores,
        dynamic_batch_size=False,
        **seq2seq_cast(auto_cast_type),
    )


def _export(task: str, checkpoint: Path, output: Path, **arguments: Any) -> dict[str, str]:
    """``from_pretrained(checkpoint, export=True, **arguments)`` of the task's optimum-neuron
    class, saved into ``output/NEURON_DIR``; the files it wrote, by role."""
    model_class = import_model_class(task)
    started = time.monotonic()
    model = model_class.from_pretrained(str(checkpoint), export=True, **arguments)
    target = output / NEURON_DIR
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    log.info(
        "exported %s with optimum-neuron %s in %.1fs",
        task,
        " ".join(f"{name}={value}" for name, value in arguments.items()),
        time.monotonic() - started,
    )
    return {"checkpoint": ".", "neuron": NEURON_DIR}


# --------------------------------------------------------------------------------------------
# Serving


def load_causal_lm(compiled: Path) -> Any:
    """The compiled decoder in ``compiled`` (an artifact's ``compiled/neuron``)."""
    model_class = import_model_class("causal-lm")
    started = time.monotonic()
    try:
        model = model_class.from_pretrained(str(compiled))
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot load the Neuron causal-lm from {compiled}: {err}") from err
    log.info("loaded the Neuron causal-lm from %s in %.1fs", compiled, time.monotonic() - started)
    return model


def generate_static(
    model: Any,
    ids: Any,
    mask: Any,
    *,
    max_new_tokens: int,
    sampling: Mapping[str, Any],
    pad_token_id: int,
    eos_token_ids: list[int],
    on_tokens: Callable[[list[int]], list[bool]],
) -> None:
    """One ``generate`` over the whole static batch (``ids``/``mask``: [batch, bucket]).

    ``on_tokens`` gets each step's new token of every row and answers which rows are done;
    generation ends when all are (or after ``max_new_tokens``). ``sampling``: ``do_sample``
    and, when sampling, ``temperature``/``top_k``/``top_p``.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class EachToken(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = on_tokens([int(token) for token in input_ids[:, -1]])
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_ids or None,
        stopping_criteria=StoppingCriteriaList([EachToken()]),
        **sampling,
    )


def load_seq2seq(compiled: Path) -> Any:
    """The traced encoder-decoder in ``compiled`` (its ``encoder/`` and ``decoder/``)."""
    model_class = import_model_class("seq2seq")
    started = time.monotonic()
    try:
        model = model_class.from_pretrained(str(compiled))
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot load the Neuron seq2seq from {compiled}: {err}") from err
    log.info("loaded the Neuron seq2seq from %s in %.1fs", compiled, time.monotonic() - started)
    return model


def generate_seq2seq(
    model: Any,
    ids: Any,
    mask: Any,
    *,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_ids: list[int],
    on_tokens: Callable[[list[int]], list[bool]],
) -> None:
    """One greedy ``generate`` over the static batch (``ids``/``mask``: [batch, the exported
    sequence_length], padded on the right); ``on_tokens`` as for ``generate_static``."""
    import copy

    import torch
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    class EachToken(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = on_tokens([int(token) for token in input_ids[:, -1]])
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    # generate drops pad/eos keyword arguments: they go in the generation config.
    config.pad_token_id = pad_token_id
    config.eos_token_id = eos_token_ids or None
    model.generate(
        ids,
        attention_mask=mask,
        generation_config=config,
        stopping_criteria=StoppingCriteriaList([EachToken()]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
    )
