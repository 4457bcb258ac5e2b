"""Worker layout for ``serve``: how many workers, which NeuronCores each, how many threads."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from smneuron.accelerator import (
    available_cpus,
    cpu_workers,
    detect_neuron,
    worker_core_ranges,
)
from smneuron.artifact.manifest import Manifest
from smneuron.errors import AcceleratorError
from smneuron.serving.runtime import Layout
from smneuron.serving.settings import ServingSettings

log = logging.getLogger(__name__)


def plan_layout(
    settings: ServingSettings,
    backend: str,
    manifest: Manifest | None,
    *,
    visible_cores: Sequence[int] | None = None,
    cpus: int | None = None,
) -> Layout:
    """Workers = visible NeuronCores ÷ cores per model on Neuron; from settings on CPU.

    Raises:
        AcceleratorError: more workers asked for than the cores allow, or no core visible.
    """
    batch = manifest.batch_size if manifest else 1
    threads = settings.threads_per_worker or max(16, 4 * batch)
    if backend == "neuron":
        instance = None
        if visible_cores is None:
            inventory = detect_neuron()
            if inventory is None:
                raise AcceleratorError(
                    "backend neuron was asked for but no Neuron device is visible; run on an "
                    "inf2/trn1 instance with the devices passed in, or set SMNEURON_ACCELERATOR=cpu"
                )
            visible_cores = inventory.cores
            instance = inventory.instance_type
        per_model = manifest.cores_per_model if manifest else 1
        ranges = worker_core_ranges(visible_cores, per_model, settings.workers, instance=instance)
        return Layout(backend, len(ranges), tuple(ranges), threads, None)
    cpus = cpus or available_cpus()
    workers = cpu_workers(cpus, settings.workers)
    return Layout(backend, workers, (), threads, max(1, cpus // workers))
