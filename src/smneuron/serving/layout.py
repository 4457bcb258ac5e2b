"""Worker layout for ``serve``: how many workers, which NeuronCores each, how many threads.

Every number is decided here, once, in ``serve`` (the stacks and workers read the ``Layout``):

- Neuron: workers = visible NeuronCores ÷ cores per model; torch's CPU threads are left alone
  (the NeuronCores do the work).
- CPU (``cpu_plan``): from the CPUs the container really has (``smneuron.cpus``: cgroup quota
  and affinity), workers × torch intra-op threads never exceed them.
- HTTP threads per worker on both: enough waiting requests to fill the largest compiled batch
  while the previous one runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from smneuron.accelerator import detect_neuron, worker_core_ranges
from smneuron.artifact.manifest import Manifest
from smneuron.cpus import available_cpus
from smneuron.env import ENV
from smneuron.errors import AcceleratorError, ConfigurationError
from smneuron.serving.runtime import Layout
from smneuron.serving.settings import ServingSettings

log = logging.getLogger(__name__)

MIN_HTTP_THREADS = 8


@dataclass(frozen=True)
class CpuPlan:
    """CPU serving: worker processes, torch intra-op threads and HTTP threads per worker."""

    workers: int
    torch_threads: int
    http_threads: int


def http_threads(max_batch: int, requested: int | None = None) -> int:
    """Request threads per worker: ``requested``, else ``max(8, 2 × max_batch)``.

    They mostly wait on the batcher (the forward runs on its thread), so they cost no CPU
    while waiting; two full batches of them let one batch fill while the other runs.
    """
    if requested is not None:
        return requested
    return max(MIN_HTTP_THREADS, 2 * max_batch)


def cpu_plan(
    cpus: int,
    *,
    workers: int | None = None,
    torch_threads: int | None = None,
    threads_per_worker: int | None = None,
    max_batch: int = 1,
) -> CpuPlan:
    """Workers and threads on ``cpus`` CPUs so that workers × torch threads ≤ ``cpus``.

    Defaults: one worker per CPU with 1 torch thread each (``cpus`` ÷ the asked torch threads
    when only those are given), torch threads = ``cpus`` ÷ workers, HTTP threads from
    ``http_threads``. Measured on 2 CPUs (docs/serving.md, "Workers, threads and CPUs"):
    independent single-threaded forwards serve more requests per second at every load above
    one client than one worker's batched forward over both cores (a CPU forward gains little
    from batching, and two intra-op threads scale 1.5× at best); one worker with every thread
    answers a lone client faster and holds one copy of the model. Asked-for values are kept,
    but a layout that needs more CPUs than there are is refused with the numbers (threads
    above the quota are throttled, not run).

    Raises:
        ConfigurationError: a value below 1, or workers × torch threads above ``cpus``.
    """
    for name, value in (
        (ENV.MODEL_SERVER_WORKERS, workers),
        (ENV.TORCH_THREADS, torch_threads),
        (ENV.THREADS_PER_WORKER, threads_per_worker),
    ):
        if value is not None and value < 1:
            raise ConfigurationError(f"{name} must be ≥ 1, got {value}")
    count = workers or max(1, cpus // (torch_threads or 1))
    if count > cpus:
        raise ConfigurationError(
            f"{ENV.MODEL_SERVER_WORKERS}={count} workers need at least {count} CPUs, but this "
            f"container may use {cpus} (cgroup CPU quota and affinity); lower it to at most "
            f"{cpus}, or give the container more CPUs"
        )
    threads = torch_threads or max(1, cpus // count)
    if count * threads > cpus:
        raise ConfigurationError(
            f"{count} worker(s) × {ENV.TORCH_THREADS}={threads} need {count * threads} CPUs, "
            f"but this container may use {cpus}; lower {ENV.TORCH_THREADS} to at most "
            f"{max(1, cpus // count)}, or unset it"
        )
    return CpuPlan(count, threads, http_threads(max_batch, threads_per_worker))


def plan_layout(
    settings: ServingSettings,
    backend: str,
    manifest: Manifest | None,
    *,
    visible_cores: Sequence[int] | None = None,
    cpus: int | None = None,
) -> Layout:
    """Workers = visible NeuronCores ÷ cores per model on Neuron; ``cpu_plan`` on CPU.

    Raises:
        AcceleratorError: more workers asked for than the cores allow, or no core visible.
        ConfigurationError: a CPU layout that needs more CPUs than the container has.
    """
    batch = manifest.batch_size if manifest else 1
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
        threads = http_threads(batch, settings.threads_per_worker)
        return Layout(backend, len(ranges), tuple(ranges), threads, None)
    plan = cpu_plan(
        cpus or available_cpus(),
        workers=settings.workers,
        torch_threads=settings.torch_threads,
        threads_per_worker=settings.threads_per_worker,
        max_batch=batch,
    )
    return Layout(backend, plan.workers, (), plan.http_threads, plan.torch_threads)
