"""The one module that touches torch-neuronx, torch-xla, neuronx-cc and the Neuron runtime.

Every Neuron import happens inside a function, so importing this module (or anything else in
the package) on a CPU image never loads them. What is here:

- ``NeuronBackend``: the ``compile.Backend`` for Inferentia2/Trainium, tracing each
  sequence-length bucket with ``torch_neuronx.trace`` and loading graphs with
  ``torch.jit.load`` after ``import torch_neuronx`` (which registers the Neuron ops).
- Training on Trainium: NeuronCores per host, the environment of the torchrun processes
  (persistent compile cache under ``/opt/ml/checkpoints``, compiler flags, EFA for
  multi-host), the ``neuron_parallel_compile`` wrapper for the optional pre-compilation
  pass, and the XLA set-up of each worker. The torchrun line itself is
  ``smneuron.training.launch``'s, the same as on CPU.

Nothing in this module has run on Neuron hardware yet; the tests run it against a fake
``torch_neuronx`` package that records its calls (tests/resources/fake_neuron).
"""

from __future__ import annotations

import importlib.util
import logging
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from smneuron.accelerator import FAMILIES, detect_instance_type, family_of, list_neuron_devices
from smneuron.errors import ArtifactError, ConfigurationError
from smneuron.versions import package_version

log = logging.getLogger(__name__)

NO_TORCH_NEURONX = (
    "this image has no torch-neuronx: use the neuron image (built FROM the AWS Neuron Deep "
    "Learning Container, see docs/neuron.md), or compile and serve with --backend cpu"
)

# Compiler flags for inference graphs (neuronx-cc): cast FP32 matrix multiplications to BF16,
# the compiler's own default made explicit so the manifest records it.
DEFAULT_COMPILER_ARGS: tuple[str, ...] = ("--auto-cast", "matmult", "--auto-cast-type", "bf16")

# Distribution names (importlib.metadata) of the Neuron stack, keyed as the manifest records.
NEURON_DISTRIBUTIONS = {
    "torch_neuronx": "torch-neuronx",
    "neuronx_cc": "neuronx-cc",
    "libneuronxla": "libneuronxla",
    "torch_xla": "torch-xla",
}
# Debian package of the Neuron runtime library (libnrt), as the DLCs install it.
RUNTIME_DEB = "aws-neuronx-runtime-lib"
DPKG_STATUS = "/var/lib/dpkg/status"


# --------------------------------------------------------------------------------------------
# Imports and versions


def import_torch_neuronx() -> Any:
    """``torch_neuronx``, or an ArtifactError that says which image to use."""
    try:
        import torch_neuronx
    except ImportError as err:
        raise ArtifactError(NO_TORCH_NEURONX) from err
    return torch_neuronx


def has_torch_neuronx() -> bool:
    """Whether torch-neuronx is installed, without importing it."""
    return importlib.util.find_spec("torch_neuronx") is not None


def debian_package_version(name: str, status_path: str | Path = DPKG_STATUS) -> str | None:
    """Version of an installed Debian package from dpkg's status file, or None."""
    try:
        text = Path(status_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(" "):
                fields[key.strip()] = value.strip()
        if fields.get("Package") == name and "installed" in fields.get("Status", "installed"):
            return fields.get("Version")
    return None


def neuron_versions(
    version_of: Callable[[str], str | None] = package_version,
    dpkg_status: str | Path = DPKG_STATUS,
) -> dict[str, str]:
    """Versions recorded in a Neuron manifest: the Python stack plus the runtime library."""
    found = {
        "smneuron": version_of("smneuron"),
        "torch": version_of("torch"),
        "transformers": version_of("transformers"),
    }
    for key, dist in NEURON_DISTRIBUTIONS.items():
        found[key] = version_of(dist)
    if not found["torch_neuronx"] and has_torch_neuronx():  # importable without metadata
        found["torch_neuronx"] = getattr(import_torch_neuronx(), "__version__", None)
    found["neuron_runtime"] = debian_package_version(RUNTIME_DEB, dpkg_status)
    return {key: value for key, value in found.items() if value}


# --------------------------------------------------------------------------------------------
# Compiler arguments


def parse_compiler_args(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Compiler flags from a shell-quoted string (``"--auto-cast all -O2"``) or a list."""
    if text is None:
        return ()
    if isinstance(text, str):
        try:
            return tuple(shlex.split(text))
        except ValueError as err:
            raise ConfigurationError(f"compiler args: cannot parse {text!r}: {err}") from err
    return tuple(str(item) for item in text)


def compiler_target(compiler_args: Sequence[str]) -> str | None:
    """The ``--target`` family named in neuronx-cc flags (``--target inf2``/``--target=trn1``)."""
    args = list(compiler_args)
    for index, arg in enumerate(args):
        value = None
        if arg.startswith("--target="):
            value = arg.split("=", 1)[1]
        elif arg == "--target" and index + 1 < len(args):
            value = args[index + 1]
        if value is not None:
            return family_of(value) or value
    return None


def with_target(compiler_args: Sequence[str], target: str) -> tuple[str, ...]:
    """``compiler_args`` with ``--target <family>`` appended unless they already name one."""
    if compiler_target(compiler_args):
        return tuple(compiler_args)
    if target not in FAMILIES:
        raise ConfigurationError(f"--target {target!r}: use one of {', '.join(FAMILIES)}")
    return (*compiler_args, "--target", target)


# Which artifact target runs on which host family. inf2 and trn1 are both NeuronCore-v2
# instances (torch_neuronx.trace API reference), whose NEFFs load on either; trn2
# (NeuronCore-v3) runs only trn2 NEFFs ("A NEFF is built for a specific target": neuronx-cc,
# "How to generate a NEFF").
RUNS_ON: dict[str, tuple[str, ...]] = {
    "inf2": ("inf2", "trn1"),
    "trn1": ("trn1", "inf2"),
    "trn2": ("trn2",),
}


def check_target(artifact_target: str, host_family: str | None, where: str = "this host") -> None:
    """Refuse an artifact compiled for a family this host cannot run, saying what to do.

    An unknown host family (no instance type found) is not refused: the runtime decides.
    """
    if host_family is None:
        log.info("host instance family unknown: artifact target %s not checked", artifact_target)
        return
    if host_family in RUNS_ON.get(artifact_target, (artifact_target,)):
        return
    raise ArtifactError(
        f"artifact was compiled for {artifact_target} (manifest target) but {where} is "
        f"{host_family}: its NEFFs cannot load here. Recompile the checkpoint for this host "
        f"with `smneuron compile --backend neuron --target {host_family}`, or serve it on "
        f"{' or '.join(RUNS_ON.get(artifact_target, (artifact_target,)))}."
    )


def has_neuron_device() -> bool:
    """Whether this host has a ``/dev/neuron*`` device (else trace on the CPU backend)."""
    return bool(list_neuron_devices())


# --------------------------------------------------------------------------------------------
# The backend


class NeuronBackend:
    """``torch_neuronx.trace`` per bucket; graphs are TorchScript with embedded NEFFs.

    Args:
        instance_type: the host, for the manifest's target family (default: detected).
        environ: environment to read the instance type from (default: ``os.environ``).
        compiler_workdir: keep neuronx-cc's work files here, one folder per trace.
        async_load: mark traced graphs for asynchronous loading (``torch_neuronx.async_load``)
            so that a server loading several buckets does not wait for each in turn.
        version_of: package version lookup (default: installed distributions).
        dpkg_status: dpkg status file for the runtime library's version.
        cpu_backend: trace on the CPU for the ``--target`` in the flags (torch_neuronx.trace's
            ``cpu_backend=True``, API reference); None: when this host has no Neuron device.
    """

    name = "neuron"

    def __init__(
        self,
        *,
        instance_type: str | None = None,
        environ: Mapping[str, str] | None = None,
        compiler_workdir: str | Path | None = None,
        async_load: bool = False,
        version_of: Callable[[str], str | None] | None = None,
        dpkg_status: str | Path = DPKG_STATUS,
        cpu_backend: bool | None = None,
    ) -> None:
        self._cpu_backend = cpu_backend
        self._instance_type = instance_type
        self._environ = environ
        self._workdir = Path(compiler_workdir) if compiler_workdir else None
        self._async_load = async_load
        self._version_of = version_of or package_version
        self._dpkg_status = dpkg_status
        self._compiler_args: tuple[str, ...] = ()
        self._traces = 0

    def versions(self) -> dict[str, str]:
        found = neuron_versions(self._version_of, self._dpkg_status)
        if "torch_neuronx" not in found:
            raise ArtifactError(NO_TORCH_NEURONX)
        return found

    def host_family(self) -> str | None:
        """The family of the instance this process runs on, or None when nothing says."""
        return family_of(detect_instance_type(self._environ, explicit=self._instance_type))

    def target(self) -> str:
        """``--target`` from the compiler flags, else the host's family, else ``inf2``."""
        named = compiler_target(self._compiler_args)
        if named:
            return named
        family = self.host_family()
        if family in FAMILIES:
            return family
        log.info("no Neuron instance detected: recording target inf2 (NeuronCore-v2)")
        return "inf2"

    def check_artifact(self, manifest: Any) -> None:
        """At load: the artifact's target family must run on this host (``check_target``)."""
        check_target(manifest.target, self.host_family())

    def trace(
        self,
        module: Any,
        example_inputs: tuple[Any, ...],
        compiler_args: Sequence[str] = (),
    ) -> Any:
        torch_neuronx = import_torch_neuronx()
        self._compiler_args = tuple(compiler_args)
        kwargs: dict[str, Any] = {"compiler_args": list(compiler_args)}
        cpu_backend = (
            self._cpu_backend if self._cpu_backend is not None else not has_neuron_device()
        )
        if cpu_backend:
            if not compiler_target(compiler_args):
                raise ConfigurationError(
                    "compiling without a Neuron device needs a target: give --target "
                    f"{'|'.join(FAMILIES)} (smneuron compile --target, or --target in the "
                    "compiler args)"
                )
            kwargs["cpu_backend"] = True
        if self._workdir is not None:
            shape = "x".join(str(dim) for dim in example_inputs[0].shape)
            workdir = self._workdir / f"trace-{self._traces}-{shape}"
            workdir.mkdir(parents=True, exist_ok=True)
            kwargs["compiler_workdir"] = str(workdir)
        self._traces += 1
        log.info(
            "torch_neuronx.trace shapes=%s compiler_args=%s cpu_backend=%s",
            [tuple(tensor.shape) for tensor in example_inputs],
            list(compiler_args),
            cpu_backend,
        )
        graph = torch_neuronx.trace(module, example_inputs, **kwargs)
        if self._async_load:
            torch_neuronx.async_load(graph)
        return graph

    def save(self, graph: Any, path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(graph, str(path))

    def load(self, path: Path) -> Any:
        """Load a graph onto the NeuronCores in this process's ``NEURON_RT_VISIBLE_CORES``.

        ``import torch_neuronx`` must come first: it registers the Neuron operators that the
        saved TorchScript calls. A serving worker sets its core range in its environment
        before this runs (``accelerator.worker_env``).
        """
        import_torch_neuronx()
        import torch

        return torch.jit.load(str(path))


# --------------------------------------------------------------------------------------------
# Training on Trainium


def artifact_compiler_args(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Compiler flags for the serving graphs: the user's (shell-quoted), else the defaults."""
    return parse_compiler_args(text) or DEFAULT_COMPILER_ARGS
