"""Accelerator detection (neuron | cpu) and process layout: pure functions, no Neuron imports.

Neuron needs one process per NeuronCore group: a serving worker owns ``cores_per_model``
cores (``NEURON_RT_VISIBLE_CORES=a-b``) and a training job runs one process per core.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from smneuron.errors import AcceleratorError, ConfigurationError
from smneuron.settings import ENV, accelerator_override

# NeuronCores per Neuron device, by instance family (inf2/trn1: 2 per device; trn2: 8 physical
# cores, exposed as 4 logical cores with the default LNC=2).
CORES_PER_DEVICE = {"inf1": 4, "inf2": 2, "trn1": 2, "trn1n": 2, "trn2": 4}


@dataclass(frozen=True)
class NeuronInventory:
    """What the host has: devices found and NeuronCores visible to this process."""

    devices: int
    cores: tuple[int, ...]
    source: str  # where the numbers came from, for error messages

    @property
    def core_count(self) -> int:
        return len(self.cores)


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
    """(devices, cores) from ``neuron-ls --json-output``: a list with one entry per device,
    each carrying ``nc_count``."""
    data = json.loads(payload) if isinstance(payload, str) else payload
    if isinstance(data, dict):  # some releases wrap the list
        data = data.get("neuron_devices") or data.get("devices") or []
    devices = 0
    cores = 0
    for entry in data:
        devices += 1
        cores += int(entry.get("nc_count", 0))
    return devices, cores


def detect_neuron(
    environ: Mapping[str, str] | None = None,
    *,
    dev_glob: str = "/dev/neuron*",
    neuron_ls: str | None = None,
    instance_family: str | None = None,
) -> NeuronInventory | None:
    """NeuronCores visible to this process, or None where there is no Neuron device.

    Order: ``neuron-ls --json-output`` when on PATH; else ``/dev/neuron*`` × cores per device
    for the instance family. ``NEURON_RT_VISIBLE_CORES`` / ``NEURON_RT_NUM_CORES`` set by the
    platform narrow the result.
    """
    environ = os.environ if environ is None else environ
    devices = sorted(glob.glob(dev_glob))
    total = 0
    source = ""
    tool = neuron_ls if neuron_ls is not None else shutil.which("neuron-ls")
    if tool:
        try:
            out = subprocess.run(
                [tool, "--json-output"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
            count_devices, total = cores_from_neuron_ls(out)
            devices = devices or [f"neuron{i}" for i in range(count_devices)]
            source = "neuron-ls --json-output"
        except (OSError, subprocess.SubprocessError, ValueError, json.JSONDecodeError):
            total = 0
    if not total and devices:
        family = instance_family or "inf2"
        total = len(devices) * CORES_PER_DEVICE.get(family, 2)
        source = f"{len(devices)} x {dev_glob} x {CORES_PER_DEVICE.get(family, 2)} cores ({family})"
    if not total:
        return None
    cores = tuple(range(total))
    visible = environ.get(ENV.NEURON_VISIBLE_CORES)
    if visible:
        cores = tuple(core for core in parse_core_range(visible) if core < total) or cores
        source += f", narrowed by {ENV.NEURON_VISIBLE_CORES}={visible}"
    elif environ.get(ENV.NEURON_NUM_CORES):
        wanted = int(environ[ENV.NEURON_NUM_CORES])
        cores = cores[:wanted]
        source += f", narrowed by {ENV.NEURON_NUM_CORES}={wanted}"
    return NeuronInventory(devices=len(devices), cores=cores, source=source)


def detect_backend(environ: Mapping[str, str] | None = None, **probe) -> str:
    """``neuron`` or ``cpu``: ``SMNEURON_ACCELERATOR`` when set, else what the host has."""
    forced = accelerator_override(environ)
    if forced:
        return forced
    return "neuron" if detect_neuron(environ, **probe) else "cpu"


def worker_core_ranges(
    visible_cores: Sequence[int], cores_per_model: int, workers: int | None = None
) -> list[tuple[int, ...]]:
    """Split visible NeuronCores into one contiguous group per worker.

    Args:
        visible_cores: cores this process may use, e.g. ``range(0, 12)``.
        cores_per_model: cores one loaded model copy needs.
        workers: workers asked for; None means as many as fit.

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
        raise AcceleratorError(
            f"{workers} worker(s) x {cores_per_model} NeuronCore(s) per model need "
            f"{max(workers, 1) * cores_per_model} cores, but {len(cores)} are visible "
            f"({format_core_range(cores) if cores else 'none'}). Lower "
            f"{ENV.MODEL_SERVER_WORKERS} to at most {fit} or use a larger instance."
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
    """A child's environment: a copy of ``base`` plus its own core pinning and thread count."""
    env = dict(base)
    if cores is not None:
        env[ENV.NEURON_VISIBLE_CORES] = format_core_range(cores)
        env[ENV.NEURON_NUM_CORES] = str(len(cores))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env
