"""Every environment variable and /opt/ml file, read once into frozen dataclasses.

Nothing here runs at import time: callers build settings with ``from_env()`` (or pass an
explicit environment, as the tests do). Every variable this package reads is named in
``ENV`` below and documented in docs/configuration.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from smneuron.errors import ConfigurationError
from smneuron.typed import parse_int


class ENV:
    """Names of every environment variable the toolkit reads."""

    BASE_DIR = "SAGEMAKER_BASE_DIR"  # the /opt/ml root (training toolkit name)
    ACCELERATOR = "SMNEURON_ACCELERATOR"  # neuron | cpu (default: detect)
    SERVER = "SMNEURON_SERVER"  # mms | gunicorn
    LOG_LEVEL = "SMNEURON_LOG_LEVEL"
    LOG_FORMAT = "SMNEURON_LOG_FORMAT"  # json | text
    # Serving (names SageMaker already uses are kept).
    BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
    MAX_PAYLOAD_IN_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
    MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
    MODEL_SERVER_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
    MODEL_SERVER_VMARGS = "SAGEMAKER_MODEL_SERVER_VMARGS"
    MAX_CONCURRENT_TRANSFORMS = "SMNEURON_MAX_CONCURRENT_TRANSFORMS"
    BATCH_STRATEGY = "SMNEURON_BATCH_STRATEGY"
    DEFAULT_ACCEPT = "SMNEURON_DEFAULT_ACCEPT"
    THREADS_PER_WORKER = "SMNEURON_THREADS_PER_WORKER"
    MAX_BATCH_DELAY_MS = "SMNEURON_MAX_BATCH_DELAY_MS"
    OVERFLOW = "SMNEURON_OVERFLOW"  # truncate | reject (input longer than the largest bucket)
    TRUST_REMOTE_CODE = "SMNEURON_TRUST_REMOTE_CODE"
    # Serving handler limits and decoding (docs/serving.md "Limits").
    MAX_INPUTS = "SMNEURON_MAX_INPUTS"  # inputs per request (413 above), default 1000
    MAX_TEXT_CHARS = "SMNEURON_MAX_TEXT_CHARS"  # characters per text before tokenizing, 32768
    REQUEST_DEADLINE_S = "SMNEURON_REQUEST_DEADLINE_S"  # batcher deadline (504), 0.9 x timeout
    MAX_QUEUE = "SMNEURON_MAX_QUEUE"  # items waiting per worker (503 + Retry-After above), 4096
    CSV_HEADER = "SMNEURON_CSV_HEADER"  # auto | always | never: is the first CSV row a header
    INSTALL_REQUIREMENTS = "SMNEURON_INSTALL_REQUIREMENTS"  # pip install code/requirements.txt
    # Neuron runtime, honored when the platform already set them.
    NEURON_VISIBLE_CORES = "NEURON_RT_VISIBLE_CORES"
    NEURON_NUM_CORES = "NEURON_RT_NUM_CORES"
    # Internal: set by `serve` for the MMS backend workers it does not start itself.
    RUNTIME_DIR = "SMNEURON_RUNTIME_DIR"
    # Training process layout: the worker marker we set, the ranks torchrun sets.
    TRAINING_WORKER = "SMNEURON_TRAINING_WORKER"
    RANK = "RANK"
    LOCAL_RANK = "LOCAL_RANK"
    WORLD_SIZE = "WORLD_SIZE"
    MASTER_PORT = "SMNEURON_MASTER_PORT"  # torchrun rendezvous port on hosts[0]
    # Instance type (NeuronCore layout): explicit override, then SageMaker training's name.
    INSTANCE_TYPE = "SMNEURON_INSTANCE_TYPE"
    SM_CURRENT_INSTANCE_TYPE = "SM_CURRENT_INSTANCE_TYPE"
    # Script mode: the SageMaker training toolkit's names, then ours.
    SAGEMAKER_PROGRAM = "SAGEMAKER_PROGRAM"  # the user's script (or hp sagemaker_program)
    SAGEMAKER_SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"  # its source: s3:// or folder
    TRAINING_JOB_NAME = "TRAINING_JOB_NAME"  # set by SageMaker in the training container
    SAGEMAKER_TRAINING_MODULE = "SAGEMAKER_TRAINING_MODULE"  # -> SM_FRAMEWORK_MODULE
    S3_ENDPOINT_URL = "S3_ENDPOINT_URL"  # another S3 endpoint for the source download
    INSTALL_REQUIREMENTS = "SMNEURON_INSTALL_REQUIREMENTS"  # false: skip requirements.txt
    SCRIPT_STOP_GRACE_S = "SMNEURON_SCRIPT_STOP_GRACE_S"  # SIGTERM -> SIGKILL (25 s)


# --------------------------------------------------------------------------------------------
# /opt/ml paths


# --------------------------------------------------------------------------------------------
# Typed values


# --------------------------------------------------------------------------------------------
# Training job configuration


# --------------------------------------------------------------------------------------------
# Serving configuration


def _env_int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = parse_int(raw, name)
    if value < minimum:
        raise ConfigurationError(f"{name}: {value} is below the minimum {minimum}")
    return value


def accelerator_override(environ: Mapping[str, str] | None = None) -> str | None:
    """The forced backend from ``SMNEURON_ACCELERATOR``, or None to detect."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV.ACCELERATOR, "").strip().lower()
    if not value or value == "auto":
        return None
    if value not in ("neuron", "cpu"):
        raise ConfigurationError(f"{ENV.ACCELERATOR}: {value!r} is not one of: neuron, cpu, auto")
    return value
