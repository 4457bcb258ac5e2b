"""Process layout for training: the torchrun command lines for multi-host / multi-process jobs.

Every host runs ``train``. With more than one process in the job, ``train`` relaunches itself
under torchrun: one ``python -m smneuron.training`` worker per process, marked by
``SMNEURON_TRAINING_WORKER=1`` so it trains instead of relaunching again. ``hosts[0]`` (sorted,
as SageMaker does) is the rendezvous master.

On Neuron (``accelerator.detect_backend() == "neuron"``) a host always relaunches: one worker
per visible NeuronCore, with the Neuron environment from ``smneuron.neuron.backend`` (compile cache
under /opt/ml/checkpoints, compiler flags, EFA), optionally after a ``neuron_parallel_compile``
pass. On CPU nothing Neuron is imported.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from smneuron.env import ENV
from smneuron.job import Paths, ResourceConfig
from smneuron.typed import parse_int

log = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 29500
WORKER_MODULE = "smneuron.training"


@dataclass(frozen=True)
class LaunchPlan:
    """Where this host sits in the job and how many processes it starts."""

    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int = DEFAULT_MASTER_PORT
    env: Mapping[str, str] = field(default_factory=dict)
    backend: str = "cpu"
    precompile: bool = False  # Neuron: a neuron_parallel_compile pass before the real run
    unset: tuple[str, ...] = ()  # variables of the parent that the workers must not inherit

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def plan(
    resource: ResourceConfig,
    nproc_per_node: int = 1,
    master_port: int = DEFAULT_MASTER_PORT,
    env: Mapping[str, str] | None = None,
    *,
    backend: str = "cpu",
    precompile: bool = False,
    unset: Sequence[str] = (),
) -> LaunchPlan:
    """The layout for this host from resourceconfig.json.

    Args:
        resource: the job's hosts and this host's name.
        nproc_per_node: processes per host (1 on CPU; one per NeuronCore on Trainium).
        master_port: rendezvous port on ``hosts[0]``.
        env: extra variables every worker gets (e.g. Neuron runtime settings).
        backend: ``cpu`` or ``neuron``; a Neuron host always launches workers.
        precompile: run ``neuron_parallel_compile`` over the torchrun line first (Neuron).
        unset: variables removed from the workers' copy of the environment.
    """
    extra = dict(env or {})
    if resource.num_hosts > 1:
        # Collectives must use the interface SageMaker names, not whatever comes first.
        extra.setdefault("GLOO_SOCKET_IFNAME", resource.network_interface_name)
        extra.setdefault("NCCL_SOCKET_IFNAME", resource.network_interface_name)
    return LaunchPlan(
        nnodes=resource.num_hosts,
        node_rank=resource.host_rank,
        nproc_per_node=nproc_per_node,
        master_addr=resource.master,
        master_port=master_port,
        env=extra,
        backend=backend,
        precompile=precompile,
        unset=tuple(unset),
    )


def plan_host(
    resource: ResourceConfig,
    paths: Paths,
    environ: Mapping[str, str],
    *,
    backend: str,
    bf16: bool = False,
    precompile: bool = False,
) -> LaunchPlan:
    """The plan for this host on ``backend`` (decided once by ``train``: ``detect_backend``).

    CPU: one process per host (the plan of ``plan``). Neuron: one process per visible
    NeuronCore, the Neuron worker environment, and the optional precompile pass; workers are
    told the backend so that they do not probe the host again.
    """
    port = master_port(environ)
    if backend != "neuron":
        if precompile:
            log.info("precompile=true is a Neuron step: the %s backend skips it", backend)
        return plan(resource, master_port=port)
    from smneuron.neuron import training as neuron

    cores = neuron.training_cores(environ)
    env = neuron.training_env_additions(
        environ, paths, bf16=bf16, multi_host=resource.num_hosts > 1
    )
    env.setdefault(ENV.ACCELERATOR, "neuron")
    return plan(
        resource,
        nproc_per_node=cores,
        master_port=port,
        env=env,
        backend="neuron",
        precompile=precompile,
        unset=neuron.TRAINING_ENV_UNSET,
    )


def master_port(environ: Mapping[str, str]) -> int:
    """The rendezvous port: ``SMNEURON_MASTER_PORT`` or 29500."""
    raw = environ.get(ENV.MASTER_PORT, "").strip()
    return parse_int(raw, ENV.MASTER_PORT) if raw else DEFAULT_MASTER_PORT


def torchrun_command(
    launch: LaunchPlan,
    python: str = sys.executable,
    module: str = WORKER_MODULE,
    args: Sequence[str] = (),
    *,
    program: Sequence[str] = (),
) -> list[str]:
    """``python -m torch.distributed.run --nnodes ... -m smneuron.training``.

    ``program`` replaces ``-m module`` (script mode: ``train.py``, or ``--no-python`` and a
    command).
    """
    return [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={launch.nnodes}",
        f"--node_rank={launch.node_rank}",
        f"--nproc_per_node={launch.nproc_per_node}",
        f"--master_addr={launch.master_addr}",
        f"--master_port={launch.master_port}",
        *(program or ("-m", module)),
        *args,
    ]


def commands(launch: LaunchPlan, python: str = sys.executable) -> list[list[str]]:
    """The command lines this host runs, in order: the precompile pass (if any), then training."""
    command = torchrun_command(launch, python=python)
    if not (launch.precompile and launch.backend == "neuron"):
        return [command]
    from smneuron.neuron.training import precompile_command

    return [precompile_command(command), command]


def worker_environ(base: Mapping[str, str], launch: LaunchPlan) -> dict[str, str]:
    """A copy of ``base`` minus ``unset``, plus the plan's variables and the worker marker."""
    env = {key: value for key, value in base.items() if key not in launch.unset}
    env.update(launch.env)
    env[ENV.TRAINING_WORKER] = "1"
    return env


def is_worker(environ: Mapping[str, str]) -> bool:
    return environ.get(ENV.TRAINING_WORKER, "") == "1"


def is_rank_zero(environ: Mapping[str, str]) -> bool:
    """Global rank 0 (or no distributed job at all): the process that writes the artifact."""
    return environ.get(ENV.RANK, "0") in ("", "0")


def needs_launch(launch: LaunchPlan, environ: Mapping[str, str]) -> bool:
    """Whether this process starts workers: several processes, or any Neuron job.

    On Neuron even one process is launched, so that it gets the Neuron environment (compile
    cache, compiler flags) in its own copy instead of this process editing ``os.environ``.
    """
    return (launch.distributed or launch.backend == "neuron") and not is_worker(environ)


def run(launch: LaunchPlan, environ: Mapping[str, str]) -> int:
    """Run this host's commands in order; the first non-zero exit code stops and is returned."""
    for command in commands(launch):
        code = relaunch(launch, environ, command)
        if code != 0:
            log.error("%s exited with code %d", command[0], code)
            return code
    return 0


def start_process(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
    """Start one launcher command (the seam tests replace to record instead of running)."""
    return subprocess.Popen(list(command), env=dict(env))


def relaunch(
    launch: LaunchPlan, environ: Mapping[str, str], command: Sequence[str] | None = None
) -> int:
    """Run ``command`` (default: torchrun) for this host and wait; SIGTERM/SIGINT forwarded."""
    command = list(command) if command is not None else torchrun_command(launch)
    log.info(
        "launching %d process(es) on host %d of %d: %s",
        launch.nproc_per_node,
        launch.node_rank,
        launch.nnodes,
        " ".join(command),
    )
    child = start_process(command, worker_environ(environ, launch))

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
