"""Training on Trainium: the environment of the torchrun workers, the precompile pass, XLA set-up.

Every torch-xla import happens inside a function. Nothing here has run on Neuron hardware yet;
the tests run it against fakes (tests/resources/fake_neuron).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from smneuron.accelerator import detect_instance_type, detect_neuron
from smneuron.env import ENV
from smneuron.errors import AcceleratorError
from smneuron.job import Paths
from smneuron.neuron.backend import parse_compiler_args

log = logging.getLogger(__name__)

# Compiler flags for training graphs: the transformer-tuned pipeline. With bf16 autocast in the
# trainer, the compiler must not cast a second time (--auto-cast=none).
TRAINING_COMPILER_ARGS: tuple[str, ...] = ("--model-type=transformer",)


AUTOCAST_COMPILER_ARGS: tuple[str, ...] = ("--auto-cast=none",)


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


def trainer_name() -> str:
    """The trainer used on Trainium: the transformers ``Trainer`` on the XLA device.

    Why not optimum-neuron's ``NeuronTrainer`` (0.4.1 in the pinned DLC): the 0.4 line was
    rewritten around decoder models with tensor/pipeline parallelism, and the source we read
    raises on an ``eval_dataset``; the transformers Trainer runs encoder fine-tuning with
    evaluation on XLA (the Neuron SDK's BERT fine-tuning tutorial uses it) and is the same
    code path as on CPU. See docs/neuron.md.
    """
    return "transformers"
