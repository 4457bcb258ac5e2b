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

# Compiler flags for training graphs, as in AWS's tested recipe for HF Trainer fine-tuning on
# this SDK line (Neuron docs, "Hugging Face BERT MRPC task finetuning using Hugging Face Trainer
# API": NEURON_CC_FLAGS="--model-type=transformer", the Trainer's --bf16,
# NEURON_RT_STOCHASTIC_ROUNDING_EN=1, eval_do_concat_batches=False). That recipe does not
# add --auto-cast=none, so neither do we.
TRAINING_COMPILER_ARGS: tuple[str, ...] = ("--model-type=transformer",)

# A graph whose compilation failed is marked failed in the persistent cache and skipped by every
# later run that finds it there ("Got a cached failed neff ... Will skip compilation"); the cache
# lives under /opt/ml/checkpoints, which SageMaker syncs to S3 across jobs, so one failed job
# would poison every later one. This documented flag makes a later run retry such entries
# (Neuron docs, "PyTorch NeuronX neuron_parallel_compile CLI", debugging the persistent cache).
RETRY_FAILED_COMPILATION = "--retry_failed_compilation"


# Environment of Neuron training processes (names the Neuron SDK reads).
NEURON_CC_FLAGS = ENV.NEURON_CC_FLAGS


NEURON_COMPILE_CACHE_URL = ENV.NEURON_COMPILE_CACHE_URL


NEURON_EXTRACT_GRAPHS_ONLY = ENV.NEURON_EXTRACT_GRAPHS_ONLY  # set by neuron_parallel_compile


STOCHASTIC_ROUNDING = "NEURON_RT_STOCHASTIC_ROUNDING_EN"


EFA_ENV = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_FORK_SAFE": "1"}


# Deprecated in torch-xla 2.5+ but still acting in 2.8/2.9: they cast everything to bf16 and
# override autocast's per-op precision (Neuron app note "Migration From XLA_USE_BF16 /
# XLA_DOWNCAST_BF16": do not set them with autocast). Removed from every worker environment.
RETIRED_BF16_VARS = ("XLA_USE_BF16", "XLA_DOWNCAST_BF16")


PARALLEL_COMPILE = "neuron_parallel_compile"


# Removed from the torchrun workers' copy of the environment: the Neuron runtime's own core
# count (torch-xla pins each rank to one core, NEURON_RT_VISIBLE_CORES = its local rank, and a
# host-wide count would contradict it) and the retired XLA bf16 switches.
TRAINING_ENV_UNSET: tuple[str, ...] = (ENV.NEURON_NUM_CORES, *RETIRED_BF16_VARS)


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
      user's flags name one), the training compiler flags and ``--retry_failed_compilation``.
    - ``NEURON_COMPILE_CACHE_URL`` points at the same folder: SageMaker syncs
      ``/opt/ml/checkpoints`` to ``checkpoint_s3_uri``, so the next job starts warm.
    - bf16: ``NEURON_RT_STOCHASTIC_ROUNDING_EN=1`` (the tested recipe); the precision itself
      is the Trainer's ``bf16=True``. ``XLA_USE_BF16`` / ``XLA_DOWNCAST_BF16`` are removed.
    - multi-host: the EFA provider settings for collectives between hosts.
    User values already in ``base`` win over these defaults.
    """
    env = {key: value for key, value in base.items() if key not in RETIRED_BF16_VARS}
    for name in RETIRED_BF16_VARS:
        if name in base:
            log.warning(
                "%s=%s removed from the training workers: it overrides autocast's per-op "
                "precision; bf16 comes from the bf16 hyperparameter",
                name,
                base[name],
            )
    cache = str(paths.neuron_cache)
    flags = list(parse_compiler_args(base.get(NEURON_CC_FLAGS, "")))
    if not any(flag.startswith("--cache_dir") for flag in flags):
        flags.append(f"--cache_dir={cache}")
    for flag in (*compiler_args, RETRY_FAILED_COMPILATION):
        name = flag.split("=", 1)[0]
        if not any(existing.split("=", 1)[0] == name for existing in flags):
            flags.append(flag)
    env[NEURON_CC_FLAGS] = shlex.join(flags)
    env.setdefault(NEURON_COMPILE_CACHE_URL, cache)
    if bf16:
        env.setdefault(STOCHASTIC_ROUNDING, "1")
    if multi_host:
        for key, value in EFA_ENV.items():
            env.setdefault(key, value)
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
