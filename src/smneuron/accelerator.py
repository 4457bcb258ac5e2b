"""Accelerator detection (neuron | cpu) and process layout: pure functions, no Neuron imports.

Neuron needs one process per NeuronCore group: a serving worker owns ``cores_per_model``
cores (``NEURON_RT_VISIBLE_CORES=a-b``) and a training job runs one process per core.
Everything here reads files and environment values it is given, so the tests run it against
fake ``/dev`` trees, fake ``neuron-ls --json-output`` files and fake DMI product names.
"""

from __future__ import annotations

import json
import logging
import os
import re
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


# Instances this toolkit knows (every current inf2 / trn1 / trn2 size), from the AWS instance
# specifications and the Neuron architecture pages (docs/neuron.md, "Instances"). trn2 cores are
# logical NeuronCores at the default LNC=2 (neuron-ls: nc_count 4, logical_neuroncore_config 2).
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
        InstanceLayout("trn2.3xlarge", "trn2", 1, 4, 96),
        InstanceLayout("trn2.48xlarge", "trn2", 16, 4, 96),
        InstanceLayout("trn2n.48xlarge", "trn2", 16, 4, 96),
        InstanceLayout("trn2u.48xlarge", "trn2", 16, 4, 96),
    )
}

# NeuronCores per Neuron device, by instance family (inf2/trn1: 2 per device; trn2: 8 physical
# cores, exposed as 4 logical cores with the default LNC=2).
CORES_PER_DEVICE = {"inf2": 2, "trn1": 2, "trn1n": 2, "trn2": 4}
FAMILIES = ("inf2", "trn1", "trn2")
# Instance name prefixes that compile for another family's name (neuronx-cc --target values).
_FAMILY_ALIASES = {"trn1n": "trn1", "trn2n": "trn2", "trn2u": "trn2"}
DEV_ROOT = "/dev"
_DEVICE = re.compile(r"^neuron(\d+)$")


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
    prefix = _FAMILY_ALIASES.get(prefix, prefix)
    return prefix if prefix in FAMILIES else None


def detect_instance_type(
    environ: Mapping[str, str] | None = None,
    *,
    explicit: str | None = None,
    product_name_path: str | Path = DMI_PRODUCT_NAME,
    resource_config: str | Path | None = None,
) -> str | None:
    """The instance type this process runs on, or None when nothing says.

    Order: ``explicit`` (a flag), ``SMNEURON_INSTANCE_TYPE``, ``current_instance_type`` in
    ``resourceconfig.json`` (what SageMaker training writes for the container; default path
    under ``SAGEMAKER_BASE_DIR``), ``SM_CURRENT_INSTANCE_TYPE`` (set only by the SageMaker
    training toolkit, which this image bypasses), then the DMI product name EC2 exposes.
    """
    environ = os.environ if environ is None else environ
    for value in (
        explicit,
        environ.get(ENV.INSTANCE_TYPE),
        _resource_config_instance(environ, resource_config),
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


def _resource_config_instance(environ: Mapping[str, str], path: str | Path | None) -> str | None:
    """``current_instance_type`` from resourceconfig.json, or None (missing, unreadable)."""
    if path is None:
        from smneuron.job import Paths

        path = Paths.from_env(environ).resource_config
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = data.get("current_instance_type") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


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


def check_contiguous(cores: Sequence[int], what: str) -> None:
    """The Neuron runtime takes only contiguous core (and device) ranges: refuse others.

    Neuron Runtime developer guide (``NEURON_RT_VISIBLE_CORES``: the resulting range must be
    contiguous) and the container troubleshooting page ("Neuron cores are not contiguous").
    """
    ordered = sorted(cores)
    if ordered and ordered != list(range(ordered[0], ordered[-1] + 1)):
        gaps = sorted(set(range(ordered[0], ordered[-1] + 1)) - set(ordered))
        raise AcceleratorError(
            f"{what}: {format_core_range(ordered)} is not contiguous (missing "
            f"{format_core_range(gaps)}); the Neuron runtime only accepts a contiguous range "
            f"such as {ordered[0]}-{ordered[0] + len(ordered) - 1}."
        )


def list_neuron_devices(dev_root: str | Path = DEV_ROOT) -> list[Path]:
    """Neuron device nodes under ``dev_root``, in device order (neuron2 before neuron10).

    The one ``/dev/neuron*`` listing: detection here and ``smneuron local --neuron-devices``
    both use it.
    """
    root = Path(dev_root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _DEVICE.match(p.name)), key=device_index)


def device_index(path: str | Path) -> int:
    """``/dev/neuron3`` -> 3 (-1 for a name that is not a Neuron device)."""
    match = _DEVICE.match(Path(path).name)
    return int(match.group(1)) if match else -1


@dataclass(frozen=True)
class NeuronLsView:
    """What ``neuron-ls --json-output`` says: device ids and the core ids of each."""

    devices: tuple[int, ...]
    cores: tuple[int, ...]


def parse_neuron_ls(payload: str | list | dict) -> NeuronLsView:
    """Device and NeuronCore ids from ``neuron-ls --json-output``.

    The output is a JSON list with one object per device (Neuron LS user guide):
    ``neuron_device``, ``bdf``, ``connected_to``, ``nc_count``, ``logical_neuroncore_config``
    (trn2), ``memory_size``, ``neuroncore_ids`` (the ids ``NEURON_RT_VISIBLE_CORES`` takes),
    ``neuron_processes``. Where ``neuroncore_ids`` is absent (older tools), the ids follow
    the device number: device ``d`` with ``n`` cores has ``d*n .. d*n+n-1``. A container given
    ``/dev/neuron1`` of an inf2 host sees device 1 and cores 2-3.
    """
    data = json.loads(payload) if isinstance(payload, str) else payload
    if isinstance(data, dict):  # a wrapped list, as some releases print
        data = data.get("neuron_devices") or data.get("devices") or []
    if not isinstance(data, list):
        raise ValueError("neuron-ls --json-output: expected a list of devices")
    devices: list[int] = []
    cores: list[int] = []
    for position, entry in enumerate(data):
        device = int(entry.get("neuron_device", position))
        devices.append(device)
        ids = entry.get("neuroncore_ids")
        if isinstance(ids, list) and ids:
            cores.extend(int(core) for core in ids)
        else:
            count = int(entry.get("nc_count", 0))
            cores.extend(range(device * count, device * count + count))
    return NeuronLsView(tuple(devices), tuple(sorted(set(cores))))


def cores_from_neuron_ls(payload: str | list | dict) -> tuple[int, int]:
    """(devices, cores) counted from ``neuron-ls --json-output`` (see ``parse_neuron_ls``)."""
    view = parse_neuron_ls(payload)
    return len(view.devices), len(view.cores)


def find_neuron_ls() -> str | None:
    """``neuron-ls`` on PATH, else where the Neuron packages install it, else None."""
    found = shutil.which("neuron-ls")
    if found:
        return found
    return next((path for path in NEURON_LS_PATHS if os.access(path, os.X_OK)), None)


def _run_neuron_ls(tool: str) -> NeuronLsView | None:
    try:
        out = subprocess.run(
            [tool, "--json-output"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        return parse_neuron_ls(out)
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, AttributeError) as err:
        log.warning("neuron-ls --json-output failed (%s); counting /dev/neuron* instead", err)
        return None


@dataclass(frozen=True)
class _Probe:
    """Cores the host offers this process before any narrowing, and where that came from."""

    devices: int
    cores: tuple[int, ...]
    source: str


def _probe_neuron_ls(tool: str | None) -> _Probe | None:
    """Step 1: ``neuron-ls --json-output`` (the core ids the runtime will accept)."""
    view = _run_neuron_ls(tool) if tool else None
    if view is None or not view.cores:
        return None
    return _Probe(len(view.devices), view.cores, "neuron-ls --json-output")


def _probe_dev(dev_root: str | Path, family: str | None) -> _Probe | None:
    """Step 2: ``/dev/neuronN`` nodes x cores per device of the family (ids from N)."""
    devices = list_neuron_devices(dev_root)
    if not devices:
        return None
    per_device = CORES_PER_DEVICE.get(family or "", 2)
    cores = tuple(
        core
        for path in devices
        for core in range(device_index(path) * per_device, (device_index(path) + 1) * per_device)
    )
    source = (
        f"{len(devices)} x {Path(dev_root) / 'neuron*'} x {per_device} cores "
        f"({family or 'assumed inf2'})"
    )
    return _Probe(len(devices), cores, source)


def _narrow(probe: _Probe, environ: Mapping[str, str], where: str) -> tuple[tuple[int, ...], str]:
    """Step 3: ``NEURON_RT_VISIBLE_CORES`` / ``NEURON_RT_NUM_CORES`` set by the platform.

    Visible cores must be cores the host offers and contiguous; a count takes the first
    ``n`` offered cores.
    """
    offered = probe.cores
    shown = format_core_range(offered)
    visible = environ.get(ENV.NEURON_VISIBLE_CORES, "").strip()
    wanted = environ.get(ENV.NEURON_NUM_CORES, "").strip()
    if visible:
        asked = parse_core_range(visible)
        missing = [core for core in asked if core not in offered]
        if missing:
            raise AcceleratorError(
                f"{ENV.NEURON_VISIBLE_CORES}={visible} names NeuronCore(s) "
                f"{format_core_range(missing)} but {where} has {len(offered)} "
                f"({shown}; from {probe.source}). Unset it or pick cores within {shown}."
            )
        check_contiguous(asked, f"{ENV.NEURON_VISIBLE_CORES}={visible}")
        return asked, f"{probe.source}, narrowed by {ENV.NEURON_VISIBLE_CORES}={visible}"
    if wanted:
        count = parse_int(wanted, ENV.NEURON_NUM_CORES)
        if count < 1 or count > len(offered):
            raise AcceleratorError(
                f"{ENV.NEURON_NUM_CORES}={count} but {where} has {len(offered)} "
                f"NeuronCore(s) ({shown}; from {probe.source}); use 1 to {len(offered)}."
            )
        return offered[:count], f"{probe.source}, narrowed by {ENV.NEURON_NUM_CORES}={count}"
    return offered, probe.source


def detect_neuron(
    environ: Mapping[str, str] | None = None,
    *,
    dev_root: str | Path = DEV_ROOT,
    neuron_ls: str | None = None,
    instance_family: str | None = None,
    instance_type: str | None = None,
    product_name_path: str | Path = DMI_PRODUCT_NAME,
) -> NeuronInventory | None:
    """NeuronCores visible to this process, or None where there is no Neuron device.

    Steps: the instance type (``detect_instance_type``); the cores the host offers, from
    ``neuron-ls --json-output`` (``neuron_ls`` names the tool, ``""`` skips it) else from the
    ``/dev/neuron*`` nodes; then the platform's narrowing (``_narrow``). Core ids are the
    ones the runtime uses, so a container given ``/dev/neuron1`` has cores 2-3, not 0-1.
    """
    environ = os.environ if environ is None else environ
    instance = detect_instance_type(
        environ, explicit=instance_type, product_name_path=product_name_path
    )
    family = instance_family or family_of(instance)
    tool = neuron_ls if neuron_ls is not None else find_neuron_ls()
    probe = _probe_neuron_ls(tool) or _probe_dev(dev_root, family)
    if probe is None:
        return None
    devices = max(probe.devices, len(list_neuron_devices(dev_root)))
    cores, source = _narrow(probe, environ, instance or "this host")
    return NeuronInventory(
        devices=devices,
        cores=cores,
        source=source,
        instance_type=instance,
        total_cores=len(probe.cores),
    )


def check_cores_per_model(value: int, name: str = "cores_per_model") -> None:
    """Only 1 is meaningful: a ``torch_neuronx.trace`` graph runs on one NeuronCore.

    A traced model is one NEFF loaded onto one core (torch-neuronx inference API: a traced
    module, or ``torch_neuronx.DataParallel`` copies, each on one core); spanning several
    cores needs tensor parallelism (NxD Inference), which these encoder artifacts do not use.
    More throughput comes from more workers, one per core, which ``serve`` starts by itself.
    """
    if value != 1:
        raise ConfigurationError(
            f"{name}={value}: a traced model runs on one NeuronCore, so only 1 is supported; "
            "serve runs one worker per visible core for throughput (set "
            f"{ENV.MODEL_SERVER_WORKERS} to use fewer)."
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
