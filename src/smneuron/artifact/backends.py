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

    def trace(self, module, example_inputs, compiler_args=()):
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
        from smneuron.neuron.backend import NeuronBackend

        return NeuronBackend()
    raise ConfigurationError(f"unknown backend {name!r}; known: cpu, neuron")


# --------------------------------------------------------------------------------------------
# Traceable wrappers: a plain tensor-in, tensor-out module per task.
