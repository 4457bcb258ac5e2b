"""Accelerator detection (neuron | cpu) and process layout: pure functions, no Neuron imports.

Neuron needs one process per NeuronCore group: a serving worker owns ``cores_per_model``
cores (``NEURON_RT_VISIBLE_CORES=a-b``) and a training job runs one process per core.
Everything here reads files and environment values it is given, so the tests run it against
fake ``/dev`` trees, fake ``neuron-ls --json-output`` files and fake DMI product names.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smneuron.env import ENV, accelerator_override
from smneuron.errors import AcceleratorError, ConfigurationError
from smneuron.typed import parse_int

log = logging.getLogger(__name__)

# Where EC2 (Nitro) tells the instance type to any process, containers included.
DMI_PRODUCT_NAME = "/sys/devices/virtual/dmi/id/product_name"
# Where the Neuron DLCs put neuron-ls (not always on PATH under a container entry point).
NEURON_LS_PATHS = ("/opt/aws/neuron/bin/neuron-ls",)


@dataclass(frozen=True)
class InstanceLayout:
    """The Neuron hardware of one instance type.

    Attributes:
        instance_type: EC2 name without the ``ml.`` prefix, e.g. ``inf2.xlarge``.
        family: ``inf2``, ``trn1`` or ``trn2`` (what the compiler targets).
        devices: Neuron devices (``/dev/neuron0`` ...).
        cores_per_device: NeuronCores per device as the runtime exposes them (logical cores;
            trn2 groups its 8 physical cores into 4 logical ones with the default LNC=2).
        memory_gib: accelerator memory per device.
    """

    instance_type: str
    family: str
    devices: int
    cores_per_device: int
    memory_gib: int

    @property
    def neuron_cores(self) -> int:
        return self.devices * self.cores_per_device


# Instances this toolkit knows, from the AWS instance specifications.
INSTANCE_LAYOUTS: dict[str, InstanceLayout] = {
    layout.instance_type: layout
    for layout in (
        InstanceLayout("inf2.xlarge", "inf2", 1, 2, 32),
        InstanceLayout("inf2.8xlarge", "inf2", 1, 2, 32),
        InstanceLayout("inf2.24xlarge", "inf2", 6, 2, 32),
        InstanceLayout("inf2.48xlarge", "inf2", 12, 2, 32),
        InstanceLayout("trn1.2xlarge", "trn1", 1, 2, 32),
        InstanceLayout("trn1.32xlarge", "trn1", 16, 2, 32),
        InstanceLayout("trn1n.32xlarge", "trn1", 16, 2, 32),
        InstanceLayout("trn2.48xlarge", "trn2", 16, 4, 96),
    )
}

# NeuronCores per Neuron device, by instance family (inf2/trn1: 2 per device; trn2: 8 physical
# cores, exposed as 4 logical cores with the default LNC=2).
CORES_PER_DEVICE = {"inf1": 4, "inf2": 2, "trn1": 2, "trn1n": 2, "trn2": 4}
FAMILIES = ("inf2", "trn1", "trn2")


def normalize_instance_type(name: str) -> str:
    """``ml.inf2.xlarge`` / ``INF2.XLARGE`` / ``inf2.xlarge`` -> ``inf2.xlarge``."""
    text = name.strip().lower()
    return text[3:] if text.startswith("ml.") else text


def family_of(instance_type: str | None) -> str | None:
    """The compiler family of an instance type (``trn1n.32xlarge`` -> ``trn1``), or None."""
    if not instance_type:
        return None
    name = normalize_instance_type(instance_type)
    layout = INSTANCE_LAYOUTS.get(name)
    if layout:
        return layout.family
    prefix = name.split(".", 1)[0]
    if prefix == "trn1n":
        return "trn1"
    return prefix if prefix in FAMILIES else None


def detect_instance_type(
    environ: Mapping[str, str] | None = None,
    *,
    explicit: str | None = None,
    product_name_path: str | Path = DMI_PRODUCT_NAME,
) -> str | None:
    """The instance type this process runs on, or None when nothing says.

    Order: ``explicit`` (a flag), ``SMNEURON_INSTANCE_TYPE``, ``SM_CURRENT_INSTANCE_TYPE``
    (set by SageMaker training), then the DMI product name that EC2 exposes in ``/sys``.
    """
    environ = os.environ if environ is None else environ
    for value in (
        explicit,
        environ.get(ENV.INSTANCE_TYPE),
        environ.get(ENV.SM_CURRENT_INSTANCE_TYPE),
    ):
        if value and value.strip():
            return normalize_instance_type(value)
    try:
        product = Path(product_name_path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    product = normalize_instance_type(product)
    return product if family_of(product) else None


@dataclass(frozen=True)
class NeuronInventory:
    """What the host has: devices found and NeuronCores visible to this process."""

    devices: int
    cores: tuple[int, ...]
    source: str  # where the numbers came from, for error messages
    instance_type: str | None = None
    total_cores: int | None = None  # every core on the host, before narrowing

    @property
    def core_count(self) -> int:
        return len(self.cores)

    @property
    def family(self) -> str | None:
        return family_of(self.instance_type)

    def describe(self) -> str:
        """``inf2.xlarge: 2 NeuronCore(s) visible (0-1)`` for messages and logs."""
        where = self.instance_type or "this host"
        shown = format_core_range(self.cores) if self.cores else "none"
        return f"{where}: {self.core_count} NeuronCore(s) visible ({shown}; from {self.source})"


def parse_core_range(text: str) -> tuple[int, ...]:
    """Parse ``NEURON_RT_VISIBLE_CORES`` syntax: ``"3"``, ``"0-3"``, ``"0,2,4-5"``."""
    cores: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                if last < first:
                    raise ValueError(part)
                cores.extend(range(first, last + 1))
            else:
                cores.append(int(part))
        except ValueError as err:
            raise ConfigurationError(
                f"{ENV.NEURON_VISIBLE_CORES}: cannot parse {text!r}; use e.g. 0-3 or 0,1"
            ) from err
    return tuple(sorted(set(cores)))


def format_core_range(cores: Sequence[int]) -> str:
    """The inverse of ``parse_core_range`` for a contiguous range: ``(2, 3)`` -> ``"2-3"``."""
    if not cores:
        raise ValueError("empty core range")
    if len(cores) == 1:
        return str(cores[0])
    if list(cores) == list(range(cores[0], cores[-1] + 1)):
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(core) for core in cores)


def cores_from_neuron_ls(payload: str | list | dict) -> tuple[int, int]:
    """(devices, cores) from ``neuron-ls --json-output``.

    The output is a JSON list with one object per device: ``neuron_device``, ``bdf``,
    ``connected_to``, ``nc_count``, ``memory_size``, ``neuron_processes`` and, on newer
    releases, ``neuroncore_ids`` (the logical core ids, which win when present).
    """
    data = json.loads(payload) if isinstance(payload, str) else payload
    if isinstance(data, dict):  # a wrapped list, as some releases print
        data = data.get("neuron_devices") or data.get("devices") or []
    if not isinstance(data, list):
        raise ValueError("neuron-ls --json-output: expected a list of devices")
    devices = 0
    cores = 0
    for entry in data:
        devices += 1
        ids = entry.get("neuroncore_ids")
        cores += len(ids) if isinstance(ids, list) and ids else int(entry.get("nc_count", 0))
    return devices, cores


def find_neuron_ls() -> str | None:
    """``neuron-ls`` on PATH, else where the Neuron packages install it, else None."""
    found = shutil.which("neuron-ls")
    if found:
        return found
    return next((path for path in NEURON_LS_PATHS if os.access(path, os.X_OK)), None)


def _run_neuron_ls(tool: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [tool, "--json-output"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        return cores_from_neuron_ls(out)
    except (OSError, subprocess.SubprocessError, ValueError, TypeError) as err:
        log.warning("neuron-ls --json-output failed (%s); counting /dev/neuron* instead", err)
        return None


def detect_neuron(
    environ: Mapping[str, str] | None = None,
    *,
    dev_glob: str = "/dev/neuron*",
    neuron_ls: str | None = None,
    instance_family: str | None = None,
    instance_type: str | None = None,
    product_name_path: str | Path = DMI_PRODUCT_NAME,
) -> NeuronInventory | None:
    """NeuronCores visible to this process, or None where there is no Neuron device.

    Order: ``neuron-ls --json-output`` (``neuron_ls`` names the tool; ``""`` skips it);
    else ``/dev/neuron*`` x cores per device for the instance family. The instance type
    comes from ``instance_type`` or ``detect_instance_type``. ``NEURON_RT_VISIBLE_CORES`` /
    ``NEURON_RT_NUM_CORES`` set by the platform narrow the result; naming cores the host
    does not have is an error.
    """
    environ = os.environ if environ is None else environ
    instance = detect_instance_type(
        environ, explicit=instance_type, product_name_path=product_name_path
    )
    family = instance_family or family_of(instance)
    devices = sorted(path for path in glob.glob(dev_glob) if Path(path).name[6:].isdigit())
    device_count = len(devices)
    total = 0
    source = ""
    tool = neuron_ls if neuron_ls is not None else find_neuron_ls()
    if tool:
        counted = _run_neuron_ls(tool)
        if counted and counted[1]:
            device_count = max(device_count, counted[0])
            total = counted[1]
            source = "neuron-ls --json-output"
    if not total and devices:
        per_device = CORES_PER_DEVICE.get(family or "", 2)
        total = len(devices) * per_device
        source = f"{len(devices)} x {dev_glob} x {per_device} cores ({family or 'assumed inf2'})"
    if not total:
        return None
    cores = tuple(range(total))
    visible = environ.get(ENV.NEURON_VISIBLE_CORES, "").strip()
    wanted = environ.get(ENV.NEURON_NUM_CORES, "").strip()
    if visible:
        asked = parse_core_range(visible)
        missing = [core for core in asked if core >= total]
        if missing:
            raise AcceleratorError(
                f"{ENV.NEURON_VISIBLE_CORES}={visible} names NeuronCore(s) "
                f"{format_core_range(missing)} but {instance or 'this host'} has {total} "
                f"(0-{total - 1}; from {source}). Unset it or pick cores below {total}."
            )
        cores = asked
        source += f", narrowed by {ENV.NEURON_VISIBLE_CORES}={visible}"
    elif wanted:
        count = parse_int(wanted, ENV.NEURON_NUM_CORES)
        if count < 1 or count > total:
            raise AcceleratorError(
                f"{ENV.NEURON_NUM_CORES}={count} but {instance or 'this host'} has {total} "
                f"NeuronCore(s) (from {source}); use 1 to {total}."
            )
        cores = cores[:count]
        source += f", narrowed by {ENV.NEURON_NUM_CORES}={count}"
    return NeuronInventory(
        devices=device_count,
        cores=cores,
        source=source,
        instance_type=instance,
        total_cores=total,
    )


def detect_backend(environ: Mapping[str, str] | None = None, **probe) -> str:
    """``neuron`` or ``cpu``: ``SMNEURON_ACCELERATOR`` when set, else what the host has."""
    forced = accelerator_override(environ)
    if forced:
        return forced
    return "neuron" if detect_neuron(environ, **probe) else "cpu"


def worker_core_ranges(
    visible_cores: Sequence[int],
    cores_per_model: int,
    workers: int | None = None,
    *,
    instance: str | None = None,
) -> list[tuple[int, ...]]:
    """Split visible NeuronCores into one contiguous group per worker.

    Args:
        visible_cores: cores this process may use, e.g. ``range(0, 12)``.
        cores_per_model: cores one loaded model copy needs.
        workers: workers asked for; None means as many as fit.
        instance: the instance type, named in the error message when known.

    Raises:
        AcceleratorError: when the asked workers need more cores than are visible.
    """
    if cores_per_model < 1:
        raise AcceleratorError(f"cores_per_model must be ≥ 1, got {cores_per_model}")
    cores = list(visible_cores)
    fit = len(cores) // cores_per_model
    if workers is None:
        workers = fit
    if workers < 1 or workers > fit:
        where = instance or "this host"
        shown = format_core_range(cores) if cores else "none"
        hint = (
            f"Lower {ENV.MODEL_SERVER_WORKERS} to at most {fit}"
            if fit
            else "Use a model compiled for fewer cores per model"
        )
        raise AcceleratorError(
            f"{where}: {max(workers, 1)} worker(s) x {cores_per_model} NeuronCore(s) per model "
            f"need {max(workers, 1) * cores_per_model} cores, but {len(cores)} are visible "
            f"({shown}). {hint}, or use a larger instance."
        )
    return [tuple(cores[i * cores_per_model : (i + 1) * cores_per_model]) for i in range(workers)]


def cpu_workers(cpu_count: int, requested: int | None = None) -> int:
    """CPU serving workers: what was asked for, else one (the dynamic batcher fills the cores)."""
    if requested is not None:
        if requested < 1:
            raise ConfigurationError(f"{ENV.MODEL_SERVER_WORKERS} must be ≥ 1, got {requested}")
        return requested
    return 1


def available_cpus() -> int:
    """CPUs this process may run on (honours cgroup/affinity limits, not the host's count)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(count, quota) if quota else count)


def _cgroup_cpu_quota() -> int | None:
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as handle:
            quota, period = handle.read().split()
        if quota == "max":
            return None
        return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def worker_env(
    base: Mapping[str, str], cores: Sequence[int] | None, threads: int | None = None
) -> dict[str, str]:
    """A child's environment: a copy of ``base`` plus its own core pinning and thread count.

    Only ``NEURON_RT_VISIBLE_CORES`` is set: the range already fixes the count, and a
    ``NEURON_RT_NUM_CORES`` inherited from the parent (meant for the whole host) could
    disagree with it, so it is dropped from the child.
    """
    env = dict(base)
    if cores is not None:
        env[ENV.NEURON_VISIBLE_CORES] = format_core_range(cores)
        env.pop(ENV.NEURON_NUM_CORES, None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env
