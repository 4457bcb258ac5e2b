"""Static-shape compilation: one traced graph per sequence-length bucket, per backend.

The ``Backend`` interface is what the Neuron module (``smneuron.neuron``) implements too; the
CPU backend traces with ``torch.jit.trace``, the Neuron one with ``torch_neuronx.trace``.
Both write the same artifact layout (see ``smneuron.artifact``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from smneuron.artifact import (
    Manifest,
    compiled_name,
    write_manifest,
)
from smneuron.errors import ConfigurationError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


class Backend(Protocol):
    """What compile and serve need from an accelerator backend."""

    name: str

    def versions(self) -> dict[str, str]:
        """Versions recorded in the manifest and checked at load."""

    def target(self) -> str:
        """Hardware family the graphs are compiled for (``cpu``, ``inf2``, ``trn1``...)."""

    def trace(
        self,
        module: torch.nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        compiler_args: Sequence[str] = (),
    ) -> Any:
        """Compile ``module`` for the exact shapes of ``example_inputs``."""

    def save(self, graph: Any, path: Path) -> None: ...

    def load(self, path: Path) -> Any:
        """Load a saved graph, ready to call with tensors of the traced shapes."""


class CpuBackend:
    """TorchScript on the CPU: the same static shapes as Neuron, runnable anywhere."""

    name = "cpu"

    def versions(self) -> dict[str, str]:
        found = {
            "smneuron": package_version("smneuron"),
            "torch": package_version("torch"),
            "transformers": package_version("transformers"),
        }
        return {key: value for key, value in found.items() if value}

    def target(self) -> str:
        return "cpu"

    def trace(self, module, example_inputs, compiler_args=()):  # noqa: D102
        import torch

        if compiler_args:
            log.info("cpu backend ignores compiler args %s", list(compiler_args))
        # Hugging Face models emit TracerWarnings for Python-side shape checks; with static
        # shapes per bucket they are expected, and the graphs are verified against eager.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(module, example_inputs, strict=False)
        return torch.jit.freeze(traced.eval())

    def save(self, graph, path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(graph, str(path))

    def load(self, path: Path):
        import torch

        return torch.jit.load(str(path), map_location="cpu").eval()


def get_backend(name: str) -> Backend:
    """The backend for ``name``; the Neuron one is imported only when asked for."""
    if name == "cpu":
        return CpuBackend()
    if name == "neuron":
        from smneuron.neuron import NeuronBackend

        return NeuronBackend()
    raise ConfigurationError(f"unknown backend {name!r}; known: cpu, neuron")


# --------------------------------------------------------------------------------------------
# Traceable wrappers: a plain tensor-in, tensor-out module per task.


def traceable(model: torch.nn.Module, task: str, pooling: str | None = None) -> torch.nn.Module:
    """Wrap a Hugging Face model so that ``forward(input_ids, attention_mask)`` returns a tensor.

    Classification tasks return logits; feature extraction returns pooled, L2-normalised
    embeddings (pooling inside the graph, so the server does no per-token work).
    """
    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=False
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


def example_inputs(batch_size: int, sequence_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    ids = torch.ones((batch_size, sequence_length), dtype=torch.long)
    mask = torch.ones((batch_size, sequence_length), dtype=torch.long)
    return ids, mask


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
    files = {}
    for length in lengths:
        started = time.monotonic()
        graph = backend.trace(wrapper, example_inputs(batch_size, length), compiler_args)
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
        cores_per_model=cores_per_model,
        versions=backend.versions(),
        files={"compiled": files},
        target=backend.target(),
        compiler_args=tuple(compiler_args),
        pooling=pooling if task == "feature-extraction" else None,
    )
    write_manifest(model_dir, manifest)
    return manifest
