"""Static-shape compilation: one traced graph per sequence-length bucket, per backend.

The ``Backend`` interface is what the Neuron backend (``smneuron.neuron.backend``) implements;
the CPU backend traces with ``torch.jit.trace``, the Neuron one with ``torch_neuronx.trace``.
Both write the same artifact layout (see ``smneuron.artifact.manifest``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from smneuron.errors import ConfigurationError
from smneuron.versions import package_version

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


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


# The CPU graphs' parameters, stored once beside them: every (batch, bucket) graph is a trace
# of the same module, so twelve graphs would otherwise hold twelve copies of the weights (on
# disk, in the model tarball and in each worker's memory).
SHARED_WEIGHTS = "weights.safetensors"


def _owner(graph: Any, name: str) -> tuple[Any, str]:
    """The submodule holding parameter ``name`` (dotted) and the attribute's own name."""
    *path, leaf = name.split(".")
    module = graph
    for part in path:
        module = getattr(module, part)
    return module, leaf


class CpuBackend:
    """TorchScript on the CPU: the same static shapes as Neuron, runnable anywhere.

    Graphs are saved without their parameters, which go once into ``SHARED_WEIGHTS`` in the
    graphs' folder; ``load`` puts the same tensors back into every graph, so all of an
    artifact's graphs share one copy of the weights. Graphs saved whole (artifacts from before
    the shared file) load as they are.
    """

    name = "cpu"

    def __init__(self) -> None:
        self._saved: dict[Path, dict[str, Any]] = {}  # folder -> the weights written there
        self._loaded: dict[Path, dict[str, Any]] = {}  # folder -> the weights read from there

    def versions(self) -> dict[str, str]:
        found = {
            "smneuron": package_version("smneuron"),
            "torch": package_version("torch"),
            "transformers": package_version("transformers"),
        }
        return {key: value for key, value in found.items() if value}

    def target(self) -> str:
        return "cpu"

    def trace(self, module, example_inputs, compiler_args=()):
        import torch

        if compiler_args:
            log.info("cpu backend ignores compiler args %s", list(compiler_args))
        # Hugging Face models emit TracerWarnings for Python-side shape checks; with static
        # shapes per bucket they are expected, and the graphs are verified against eager.
        # Not frozen yet: a frozen graph holds its weights as constants, which cannot be
        # stored apart from it; ``load`` freezes it once the shared weights are back in.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(module, example_inputs, strict=False)
        return traced.eval()

    def shared_files(self, folder: Path) -> list[Path]:
        """The files in ``folder`` that its graphs need besides their own."""
        return [folder / SHARED_WEIGHTS] if folder in self._saved else []

    def save(self, graph, path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        params = {name: value.detach() for name, value in graph.named_parameters()}
        self._save_weights(path.parent, params)
        empty = torch.empty(0)
        try:
            for name in params:
                module, leaf = _owner(graph, name)
                setattr(module, leaf, empty)
            torch.jit.save(graph, str(path))
        finally:  # the caller's graph keeps its weights
            for name, value in params.items():
                module, leaf = _owner(graph, name)
                setattr(module, leaf, value)

    def _save_weights(self, folder: Path, params: dict[str, Any]) -> None:
        import torch
        from safetensors.torch import save_file

        written = self._saved.get(folder)
        if written is None:
            save_file(
                {name: value.contiguous() for name, value in params.items()},
                str(folder / SHARED_WEIGHTS),
            )
            self._saved[folder] = params
            return
        same = written.keys() == params.keys() and all(
            written[name] is value or torch.equal(written[name], value)
            for name, value in params.items()
        )
        if not same:
            raise ConfigurationError(
                f"graphs saved into {folder} must be traces of one model: their parameters "
                f"differ from those already in {SHARED_WEIGHTS}"
            )

    def load(self, path: Path):
        import torch

        graph = torch.jit.load(str(path), map_location="cpu").eval()
        weights_path = path.parent / SHARED_WEIGHTS
        if not weights_path.is_file():
            return graph  # saved whole (and frozen) by an older smneuron
        for name, value in self._weights(weights_path).items():
            module, leaf = _owner(graph, name)
            setattr(module, leaf, value)
        # Frozen here rather than at compile time: the weights become the graph's constants
        # (the same tensors in every graph, not copies), and the graph runs as a frozen one.
        return torch.jit.freeze(graph)

    def _weights(self, weights_path: Path) -> dict[str, Any]:
        from safetensors.torch import load_file

        folder = weights_path.parent
        if folder not in self._loaded:
            self._loaded[folder] = load_file(str(weights_path), device="cpu")
        return self._loaded[folder]


def get_backend(name: str) -> Backend:
    """The backend for ``name``; the Neuron one is imported only when asked for."""
    if name == "cpu":
        return CpuBackend()
    if name == "neuron":
        from smneuron.neuron.backend import NeuronBackend

        return NeuronBackend()
    raise ConfigurationError(f"unknown backend {name!r}; known: cpu, neuron")


# --------------------------------------------------------------------------------------------
# Traceable wrappers: a plain tensor-in, tensor-out module per task.
