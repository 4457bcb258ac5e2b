"""Checkpoint -> serving artifact: one traced graph per (batch size, bucket), then the manifest.

Used by ``train`` (after fine-tuning) and by ``smneuron compile`` (``artifact.job``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smneuron.artifact.backends import Backend
from smneuron.artifact.manifest import Manifest, compiled_name, graph_key, write_manifest
from smneuron.errors import ConfigurationError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The smaller batch sizes compiled besides the largest one, unless a job names its own.
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)


def plan_batch_sizes(
    batch_size: int, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES
) -> tuple[int, ...]:
    """The batch sizes to compile: ``batch_sizes`` up to ``batch_size``, and ``batch_size``.

    ``batch_size`` is the largest batch one forward takes; each smaller size is one more graph
    per bucket, so that a lone request runs at batch 1 instead of paying for the full batch.
    ``plan_batch_sizes(8) == (1, 2, 4, 8)``, ``plan_batch_sizes(4) == (1, 2, 4)``,
    ``plan_batch_sizes(8, (8,)) == (8,)``, ``plan_batch_sizes(6) == (1, 2, 4, 6)``.

    Raises:
        ConfigurationError: a size below 1.
    """
    sizes = [int(size) for size in batch_sizes] + [int(batch_size)]
    if min(sizes) < 1:
        raise ConfigurationError(f"batch sizes must be ≥ 1, got {sorted(sizes)}")
    return tuple(sorted({size for size in sizes if size <= batch_size}))


# Tasks whose graph also takes token_type_ids when the model has segment embeddings: a text
# pair ({"text", "text_pair"}) marks its second text with type 1, as the tokenizer does.
SEGMENT_TASKS = (
    "text-classification",
    "question-answering",
    "multiple-choice",
    "next-sentence-prediction",
)
BASE_INPUTS = ("input_ids", "attention_mask")
# fill-mask: where each input's mask tokens are, [batch, max_masks] (smneuron.serving.masks).
MASK_POSITIONS = "mask_positions"
DEFAULT_MAX_MASKS = 1


def graph_input_names(model: torch.nn.Module, task: str) -> tuple[str, ...]:
    """The graph's inputs in call order: ids and mask, plus token_type_ids where they count."""
    import inspect

    if task == "fill-mask":
        return (*BASE_INPUTS, MASK_POSITIONS)
    if task not in SEGMENT_TASKS:
        return BASE_INPUTS
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    segments = getattr(getattr(model, "config", None), "type_vocab_size", 0) or 0
    return (*BASE_INPUTS, "token_type_ids") if accepts and segments > 1 else BASE_INPUTS


def traceable(model: torch.nn.Module, task: str, pooling: str | None = None) -> torch.nn.Module:
    """Wrap a Hugging Face model so that ``forward(input_ids, attention_mask[, token_type_ids])``
    returns a tensor.

    Classification tasks return logits (per token for token classification; per choice for
    multiple choice, whose inputs are ``[batch, choices, sequence]``); question answering
    returns the start and end logits stacked, ``[batch, sequence, 2]``; feature extraction
    returns pooled, L2-normalised embeddings (pooling inside the graph, so the server does no
    per-token work); fill-mask returns the vocabulary probabilities at the mask positions
    only (``masked_scores``).
    """
    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=False, **extra
            )[0]

    class _Pooled(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, how: str) -> None:
            super().__init__()
            self.inner = inner
            self.how = how

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=False
            )[0]
            if self.how == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    class _Spans(_Logits):
        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            start, end = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=False, **extra
            )[:2]
            return torch.stack((start, end), dim=-1)

    model = model.eval()
    if task == "fill-mask":
        return masked_scores(model)
    if task == "question-answering":
        return _Spans(model).eval()
    if task == "feature-extraction":
        return _Pooled(model, pooling or "mean").eval()
    return _Logits(model).eval()


def masked_scores(model: torch.nn.Module) -> torch.nn.Module:
    """``forward(input_ids, attention_mask, mask_positions)`` -> ``[batch, max_masks, vocab]``
    probabilities (softmax over the vocabulary, as the fill-mask pipeline computes them).

    Only the mask positions leave the graph: ``bucket / max_masks`` times less output than
    the logits of every token. Where the head is one module on the encoder's hidden states
    (``cls`` in BERT, ``lm_head`` in RoBERTa), it runs on the gathered positions alone, so
    the vocabulary projection costs ``max_masks`` rows instead of ``bucket``.
    """
    import torch

    names = [
        name
        for name in ("cls", "lm_head")
        if isinstance(getattr(model, name, None), torch.nn.Module)
    ]
    split = bool(names) and getattr(model, "base_model", model) is not model
    head_name = names[0] if split else ""

    class _MaskScores(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            mask_positions: torch.Tensor,
        ) -> torch.Tensor:
            if split:
                encoder: Any = self.inner.base_model
                hidden = encoder(
                    input_ids=input_ids, attention_mask=attention_mask, return_dict=False
                )[0]
                index = mask_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
                head: Any = getattr(self.inner, head_name)
                logits = head(torch.gather(hidden, 1, index))
            else:
                every = self.inner(
                    input_ids=input_ids, attention_mask=attention_mask, return_dict=False
                )[0]
                index = mask_positions.unsqueeze(-1).expand(-1, -1, every.shape[-1])
                logits = torch.gather(every, 1, index)
            return logits.softmax(dim=-1)

    return _MaskScores(model).eval()


def task_parameters(
    task: str, sequence_lengths: Sequence[int], doc_stride: int | None = None
) -> dict[str, int]:
    """The manifest's shape parameters of ``task``: ``doc_stride`` for question answering."""
    if task != "question-answering":
        return {}
    largest = max(sequence_lengths)
    stride = min(128 if doc_stride is None else doc_stride, largest // 2)
    return {"doc_stride": stride}


def example_inputs(
    batch_size: int,
    sequence_length: int,
    names: Sequence[str] = BASE_INPUTS,
    *,
    choices: int | None = None,
    max_masks: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """One example tensor per graph input: ones for ids and mask, zeros for token types and
    mask positions. ``choices``: multiple choice, ``[batch, choices, sequence]`` inputs."""
    import torch

    shape: tuple[int, ...] = (batch_size, sequence_length)
    if choices:
        shape = (batch_size, choices, sequence_length)
    tensors = []
    for name in names:
        if name == MASK_POSITIONS:
            tensors.append(torch.zeros((batch_size, max_masks or 1), dtype=torch.long))
        elif name == "token_type_ids":
            tensors.append(torch.zeros(shape, dtype=torch.long))
        else:
            tensors.append(torch.ones(shape, dtype=torch.long))
    return tuple(tensors)


def compile_artifact(
    model_dir: Path,
    model: torch.nn.Module,
    *,
    task: str,
    labels: Sequence[str],
    sequence_lengths: Sequence[int],
    backend: Backend,
    batch_size: int | None = None,
    batch_sizes: Sequence[int] | None = None,
    cores_per_model: int = 1,
    compiler_args: Sequence[str] = (),
    pooling: str | None = None,
    max_masks: int | None = None,
    choices: int | None = None,
    doc_stride: int | None = None,
) -> Manifest:
    """Trace ``model`` once per (batch size, bucket) into ``model_dir/compiled``; write manifest.

    ``batch_sizes`` are the batch sizes to compile (see ``plan_batch_sizes``); without them,
    ``batch_size`` alone. The manifest is written last: an artifact with a manifest is complete.
    ``max_masks`` (fill-mask, default 1) and ``choices`` (multiple-choice, required) are the
    tasks' extra static dimensions.
    ``doc_stride`` (question answering): the tokens two windows of a long context share when
    served, default 128, at most half the largest bucket.
    """
    if batch_sizes is None:
        if batch_size is None:
            raise ConfigurationError("compile_artifact needs batch_size or batch_sizes")
        batch_sizes = (batch_size,)
    if task == "fill-mask":
        max_masks = int(max_masks or DEFAULT_MAX_MASKS)
        if max_masks < 1:
            raise ConfigurationError(f"max_masks must be ≥ 1, got {max_masks}")
    else:
        max_masks = None
    if task == "multiple-choice":
        if not choices or int(choices) < 2:
            raise ConfigurationError(
                f"multiple-choice needs the number of choices (≥ 2) to compile, got {choices!r}"
            )
        choices = int(choices)
    else:
        choices = None
    sizes = tuple(sorted({int(size) for size in batch_sizes}))
    lengths = tuple(sorted(set(int(n) for n in sequence_lengths)))
    names = graph_input_names(model, task)
    return trace_graphs(
        model_dir,
        traceable(model, task, pooling),
        lambda batch, length: example_inputs(
            batch, length, names, choices=choices, max_masks=max_masks
        ),
        task=task,
        sizes=sizes,
        lengths=lengths,
        names=names,
        labels=labels,
        backend=backend,
        cores_per_model=cores_per_model,
        compiler_args=compiler_args,
        pooling=pooling if task == "feature-extraction" else None,
        max_masks=max_masks,
        choices=choices,
        task_parameters=task_parameters(task, lengths, doc_stride),
    )


def trace_graphs(
    model_dir: Path,
    wrapper: Any,
    example: Callable[[int, int], tuple[Any, ...]],
    *,
    task: str,
    sizes: tuple[int, ...],
    lengths: tuple[int, ...],
    names: tuple[str, ...],
    labels: Sequence[str],
    backend: Backend,
    cores_per_model: int,
    compiler_args: Sequence[str],
    **extra: Any,
) -> Manifest:
    """Trace ``wrapper`` on ``example(batch, length)`` for every batch size × bucket, save
    each graph under ``model_dir`` and write the manifest (``extra``: the task's own fields).
    Text, image and audio artifacts all go through here."""
    files = {}
    total = time.monotonic()
    for batch in sizes:
        for length in lengths:
            started = time.monotonic()
            graph = backend.trace(wrapper, example(batch, length), compiler_args)
            relative = compiled_name(length, batch)
            backend.save(graph, model_dir / relative)
            files[graph_key(batch, length)] = relative
            log.info(
                "compiled graph batch=%d bucket=%d backend=%s in %.1fs",
                batch,
                length,
                backend.name,
                time.monotonic() - started,
            )
    log.info(
        "compiled %d %s graphs (batch sizes %s x buckets %s) in %.1fs",
        len(sizes) * len(lengths),
        task,
        list(sizes),
        list(lengths),
        time.monotonic() - total,
    )
    manifest = Manifest(
        task=task,
        backend=backend.name,
        batch_size=sizes[-1],
        batch_sizes=sizes,
        sequence_lengths=lengths,
        labels=tuple(labels),
        input_names=names,
        cores_per_model=cores_per_model,
        versions=backend.versions(),
        files={"compiled": files, **_shared_files(backend, model_dir, files.values())},
        target=backend.target(),
        compiler_args=tuple(compiler_args),
        **extra,
    )
    write_manifest(model_dir, manifest)
    return manifest


def _shared_files(backend: Backend, model_dir: Path, graphs: Any) -> dict[str, list[str]]:
    """``{"shared": [...]}``: files the graphs need besides their own (the CPU weights)."""
    listing = getattr(backend, "shared_files", None)
    if listing is None:
        return {}
    folders = sorted({(model_dir / relative).parent for relative in graphs})
    shared = [str(path.relative_to(model_dir)) for folder in folders for path in listing(folder)]
    return {"shared": shared} if shared else {}
