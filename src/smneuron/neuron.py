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
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smneuron.accelerator import FAMILIES, detect_instance_type, detect_neuron, family_of
from smneuron.compile import package_version
from smneuron.errors import AcceleratorError, ArtifactError, ConfigurationError
from smneuron.settings import ENV, Paths

log = logging.getLogger(__name__)

NO_TORCH_NEURONX = (
    "this image has no torch-neuronx: use the neuron image (built FROM the AWS Neuron Deep "
    "Learning Container, see docs/neuron.md), or compile and serve with --backend cpu"
)

# Compiler flags for inference graphs (neuronx-cc): cast FP32 matrix multiplications to BF16,
# the compiler's own default made explicit so the manifest records it.
DEFAULT_COMPILER_ARGS: tuple[str, ...] = ("--auto-cast", "matmult", "--auto-cast-type", "bf16")
# Compiler flags for training graphs: the transformer-tuned pipeline. With bf16 autocast in the
# trainer, the compiler must not cast a second time (--auto-cast=none).
TRAINING_COMPILER_ARGS: tuple[str, ...] = ("--model-type=transformer",)
AUTOCAST_COMPILER_ARGS: tuple[str, ...] = ("--auto-cast=none",)

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

# Environment of Neuron training processes (names the Neuron SDK reads).
NEURON_CC_FLAGS = "NEURON_CC_FLAGS"
NEURON_COMPILE_CACHE_URL = "NEURON_COMPILE_CACHE_URL"
NEURON_EXTRACT_GRAPHS_ONLY = "NEURON_EXTRACT_GRAPHS_ONLY"  # set by neuron_parallel_compile
EFA_ENV = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_FORK_SAFE": "1"}
# Removed from torch-xla 2.8 (the pinned stack): bf16 comes from the trainer's autocast.
RETIRED_BF16_VARS = ("XLA_USE_BF16", "XLA_DOWNCAST_BF16")
PARALLEL_COMPILE = "neuron_parallel_compile"
# The Neuron runtime's own core count must not reach torchrun workers: torch-xla pins each
# rank to one core (NEURON_RT_VISIBLE_CORES = its local rank) and a host-wide count would
# contradict it.
TRAINING_ENV_UNSET: tuple[str, ...] = (ENV.NEURON_NUM_CORES,)


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
    ) -> None:
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

    def target(self) -> str:
        """``--target`` from the compiler flags, else the host's family, else ``inf2``."""
        named = compiler_target(self._compiler_args)
        if named:
            return named
        family = family_of(detect_instance_type(self._environ, explicit=self._instance_type))
        if family in FAMILIES:
            return family
        log.info("no Neuron instance detected: recording target inf2 (NeuronCore-v2)")
        return "inf2"

    def trace(
        self,
        module: Any,
        example_inputs: tuple[Any, ...],
        compiler_args: Sequence[str] = (),
    ) -> Any:
        torch_neuronx = import_torch_neuronx()
        self._compiler_args = tuple(compiler_args)
        kwargs: dict[str, Any] = {"compiler_args": list(compiler_args)}
        if self._workdir is not None:
            shape = "x".join(str(dim) for dim in example_inputs[0].shape)
            workdir = self._workdir / f"trace-{self._traces}-{shape}"
            workdir.mkdir(parents=True, exist_ok=True)
            kwargs["compiler_workdir"] = str(workdir)
        self._traces += 1
        log.info(
            "torch_neuronx.trace shapes=%s compiler_args=%s",
            [tuple(tensor.shape) for tensor in example_inputs],
            list(compiler_args),
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


def training_env(
    base: Mapping[str, str],
    paths: Paths,
    *,
    bf16: bool = True,
    compiler_args: Sequence[str] = TRAINING_COMPILER_ARGS,
    multi_host: bool = False,
) -> dict[str, str]:
    """The environment of Neuron training processes: a copy of ``base`` plus Neuron values.

    - ``NEURON_CC_FLAGS`` gets ``--cache_dir=<checkpoints>/neuron-compile-cache`` (unless the
      user's flags name one), the training compiler flags, and ``--auto-cast=none`` with
      bf16 (the trainer's autocast decides the precision; the compiler must not cast again).
    - ``NEURON_COMPILE_CACHE_URL`` points at the same folder: SageMaker syncs
      ``/opt/ml/checkpoints`` to ``checkpoint_s3_uri``, so the next job starts warm.
    - multi-host: the EFA provider settings for collectives between hosts.
    User values already in ``base`` win over these defaults.
    """
    env = dict(base)
    cache = str(paths.neuron_cache)
    flags = list(parse_compiler_args(base.get(NEURON_CC_FLAGS, "")))
    if not any(flag.startswith("--cache_dir") for flag in flags):
        flags.append(f"--cache_dir={cache}")
    wanted = list(compiler_args) + (list(AUTOCAST_COMPILER_ARGS) if bf16 else [])
    for flag in wanted:
        name = flag.split("=", 1)[0]
        if not any(existing.split("=", 1)[0] == name for existing in flags):
            flags.append(flag)
    env[NEURON_CC_FLAGS] = shlex.join(flags)
    env.setdefault(NEURON_COMPILE_CACHE_URL, cache)
    if multi_host:
        for key, value in EFA_ENV.items():
            env.setdefault(key, value)
    for name in RETIRED_BF16_VARS:
        if name in env:
            log.warning(
                "%s is set but has no effect with torch-xla 2.8: precision comes from the "
                "trainer (bf16 hyperparameter)",
                name,
            )
    return env


def training_env_additions(base: Mapping[str, str], paths: Paths, **options: Any) -> dict[str, str]:
    """Only what ``training_env`` adds or changes, for ``training.launch.plan(env=...)``."""
    full = training_env(base, paths, **options)
    return {key: value for key, value in full.items() if base.get(key) != value}


def precompile_command(command: Sequence[str]) -> list[str]:
    """The ahead-of-time pass: ``neuron_parallel_compile <torchrun ...>``.

    The tool runs the command once with ``NEURON_EXTRACT_GRAPHS_ONLY`` set (the script sees
    ``is_precompile_run()`` and should stop after a few steps), compiles every graph it saw
    in parallel into the persistent cache, and the real run then finds them there.
    """
    return [PARALLEL_COMPILE, *command]


def is_precompile_run(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs under ``neuron_parallel_compile`` (graph extraction only)."""
    environ = os.environ if environ is None else environ
    return environ.get(NEURON_EXTRACT_GRAPHS_ONLY, "").strip() not in ("", "0", "false")


def training_cores(environ: Mapping[str, str] | None = None, **probe: Any) -> int:
    """Training processes for this host: one per visible NeuronCore (``detect_neuron``).

    ``NEURON_RT_VISIBLE_CORES`` / ``NEURON_RT_NUM_CORES`` set by the platform narrow the
    count. No core at all (``SMNEURON_ACCELERATOR=neuron`` on a host without a Neuron device)
    is an AcceleratorError that says so.
    """
    inventory = detect_neuron(environ, **probe)
    if inventory is None or inventory.core_count < 1:
        where = detect_instance_type(environ) or "this host"
        raise AcceleratorError(
            f"{where}: no NeuronCore is visible (no neuron-ls output, no /dev/neuron*), so "
            f"Neuron training cannot start. Run on a trn1/trn2 instance with the neuron image, "
            f"or set {ENV.ACCELERATOR}=cpu."
        )
    log.info("Neuron training: %s", inventory.describe())
    return inventory.core_count


def init_training_process(environ: Mapping[str, str] | None = None) -> Any:
    """Prepare a torchrun worker for XLA: the ``xla`` process group, and its XLA device.

    The transformers Trainer finds torch-xla by itself (``is_torch_xla_available()``) and puts
    the model on ``xm.xla_device()``; it creates the ``xla`` process group only when
    optimum-neuron is absent, and the Neuron DLC ships optimum-neuron, so it is done here,
    as the Neuron SDK's torchrun examples do. Call before building ``TrainingArguments``.
    """
    environ = os.environ if environ is None else environ
    try:
        import torch.distributed as dist
        import torch_xla.core.xla_model as xm
        import torch_xla.distributed.xla_backend  # noqa: F401  (registers the "xla" backend)
    except ImportError as err:
        raise AcceleratorError(
            "this image has no torch-xla: Neuron training needs the neuron training image "
            f"(see docs/neuron.md), or set {ENV.ACCELERATOR}=cpu"
        ) from err
    if int(environ.get(ENV.WORLD_SIZE, "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("xla")
    return xm.xla_device()


def artifact_compiler_args(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Compiler flags for the serving graphs: the user's (shell-quoted), else the defaults."""
    return parse_compiler_args(text) or DEFAULT_COMPILER_ARGS


def trainer_name() -> str:
    """The trainer used on Trainium: the transformers ``Trainer`` on the XLA device.

    Why not optimum-neuron's ``NeuronTrainer`` (0.4.1 in the pinned DLC): the 0.4 line was
    rewritten around decoder models with tensor/pipeline parallelism, and the source we read
    raises on an ``eval_dataset``; the transformers Trainer runs encoder fine-tuning with
    evaluation on XLA (the Neuron SDK's BERT fine-tuning tutorial uses it) and is the same
    code path as on CPU. See docs/neuron.md.
    """
    return "transformers"


# --------------------------------------------------------------------------------------------
# The pinned stack (constraints/neuron.txt)


@dataclass(frozen=True)
class NeuronPins:
    """constraints/neuron.txt: package pins plus the ``#@ key = value`` facts (DLC tags...)."""

    packages: dict[str, str]
    facts: dict[str, str]

    def dlc_uri(self, which: str, region: str) -> str:
        """The ECR URI of the ``training`` or ``inference`` base image in ``region``."""
        account = self.facts["dlc-account"]
        return f"{account}.dkr.ecr.{region}.amazonaws.com/{self.facts[f'dlc-{which}']}"


def read_pins(path: str | Path) -> NeuronPins:
    """Parse a constraints file with ``name==version`` lines and ``#@ key = value`` facts."""
    packages: dict[str, str] = {}
    facts: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith("#@"):
            key, sep, value = line[2:].partition("=")
            if not sep:
                raise ConfigurationError(f"{path}:{number}: expected '#@ key = value'")
            facts[key.strip()] = value.strip()
        elif line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            if not sep:
                raise ConfigurationError(f"{path}:{number}: expected name==version, got {line!r}")
            packages[name.strip().lower()] = version.strip()
    return NeuronPins(packages, facts)
