"""Checkpoint -> serving artifact: one traced graph per bucket, then the manifest (written last).

Used by ``train`` (after fine-tuning) and by ``smneuron compile`` (``artifact.job``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from smneuron.artifact.backends import Backend
from smneuron.artifact.manifest import Manifest, compiled_name, write_manifest

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


# Tasks whose graph also takes token_type_ids when the model has segment embeddings: a text
# pair ({"text", "text_pair"}) marks its second text with type 1, as the tokenizer does.
SEGMENT_TASKS = ("text-classification",)
BASE_INPUTS = ("input_ids", "attention_mask")


def graph_input_names(model: torch.nn.Module, task: str) -> tuple[str, ...]:
    """The graph's inputs in call order: ids and mask, plus token_type_ids where they count."""
    import inspect

    if task not in SEGMENT_TASKS:
        return BASE_INPUTS
    accepts = "token_type_ids" in inspect.signature(model.forward).parameters
    segments = getattr(getattr(model, "config", None), "type_vocab_size", 0) or 0
    return (*BASE_INPUTS, "token_type_ids") if accepts and segments > 1 else BASE_INPUTS


def traceable(model: torch.nn.Module, task: str, pooling: str | None = None) -> torch.nn.Module:
    """Wrap a Hugging Face model so that ``forward(input_ids, attention_mask[, token_type_ids])``
    returns a tensor.

    Classification tasks return logits (per token for token classification); feature
    extraction returns pooled, L2-normalised embeddings (pooling inside the graph, so the
    server does no per-token work).
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

    model = model.eval()
    if task == "feature-extraction":
        return _Pooled(model, pooling or "mean").eval()
    return _Logits(model).eval()


def example_inputs(
    batch_size: int, sequence_length: int, names: Sequence[str] = BASE_INPUTS
) -> tuple[torch.Tensor, ...]:
    """One example tensor per graph input: ones for ids and mask, zeros for token types."""
    import torch

    shape = (batch_size, sequence_length)
    return tuple(
        torch.zeros(shape, dtype=torch.long)
        if name == "token_type_ids"
        else torch.ones(shape, dtype=torch.long)
        for name in names
    )


def compile_artifact(
    model_dir: Path,
    model: torch.nn.Module,
    *,
    task: str,
    labels: Sequence[str],
    batch_size: int,
    sequence_lengths: Sequence[int],
    backend: Backend,
    cores_per_model: int = 1,
    compiler_args: Sequence[str] = (),
    pooling: str | None = None,
) -> Manifest:
    """Trace ``model`` once per bucket into ``model_dir/compiled`` and write manifest.json.

    The manifest is written last: an artifact with a manifest is complete.
    """
    lengths = tuple(sorted(set(int(n) for n in sequence_lengths)))
    wrapper = traceable(model, task, pooling)
    names = graph_input_names(model, task)
    files = {}
    for length in lengths:
        started = time.monotonic()
        graph = backend.trace(wrapper, example_inputs(batch_size, length, names), compiler_args)
        relative = compiled_name(length)
        backend.save(graph, model_dir / relative)
        files[str(length)] = relative
        log.info(
            "compiled bucket seq=%d batch=%d backend=%s in %.1fs",
            length,
            batch_size,
            backend.name,
            time.monotonic() - started,
        )
    manifest = Manifest(
        task=task,
        backend=backend.name,
        batch_size=batch_size,
        sequence_lengths=lengths,
        labels=tuple(labels),
        input_names=names,
        cores_per_model=cores_per_model,
        versions=backend.versions(),
        files={"compiled": files},
        target=backend.target(),
        compiler_args=tuple(compiler_args),
        pooling=pooling if task == "feature-extraction" else None,
    )
    write_manifest(model_dir, manifest)
    return manifest
