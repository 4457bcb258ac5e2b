"""Every environment variable and /opt/ml file, read once into frozen dataclasses.

Nothing here runs at import time: callers build settings with ``from_env()`` (or pass an
explicit environment, as the tests do). Every variable this package reads is named in
``ENV`` below and documented in docs/configuration.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from smneuron.errors import ConfigurationError


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


# --------------------------------------------------------------------------------------------
# /opt/ml paths


@dataclass(frozen=True)
class Paths:
    """The SageMaker directory layout under one base directory (``/opt/ml`` by default)."""

    base: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Paths:
        environ = os.environ if environ is None else environ
        return cls(Path(environ.get(ENV.BASE_DIR) or "/opt/ml"))

    @property
    def input_config(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters(self) -> Path:
        return self.input_config / "hyperparameters.json"

    @property
    def resource_config(self) -> Path:
        return self.input_config / "resourceconfig.json"

    @property
    def input_data_config(self) -> Path:
        return self.input_config / "inputdataconfig.json"

    @property
    def data(self) -> Path:
        return self.base / "input" / "data"

    def channel(self, name: str) -> Path:
        return self.data / name

    @property
    def model(self) -> Path:
        return self.base / "model"

    @property
    def output(self) -> Path:
        return self.base / "output"

    @property
    def output_data(self) -> Path:
        return self.output / "data"

    @property
    def failure(self) -> Path:
        return self.output / "failure"

    @property
    def success(self) -> Path:
        return self.output / "success"

    @property
    def checkpoints(self) -> Path:
        return self.base / "checkpoints"

    @property
    def neuron_cache(self) -> Path:
        """Neuron compile cache: under checkpoints so SageMaker's S3 sync keeps it."""
        return self.checkpoints / "neuron-compile-cache"

    @property
    def code(self) -> Path:
        return self.model / "code"


# --------------------------------------------------------------------------------------------
# Typed values


def parse_bool(value: Any, name: str = "value") -> bool:
    """Parse a boolean the way SageMaker users write it: true/false/True/False/1/0/yes/no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "y", "on"):
            return True
        if lowered in ("false", "0", "no", "n", "off", ""):
            return False
    raise ConfigurationError(f"{name}: expected true or false, got {value!r}")


def parse_int(value: Any, name: str = "value") -> int:
    if isinstance(value, bool):
        raise ConfigurationError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
    raise ConfigurationError(f"{name}: expected an integer, got {value!r}")


def parse_float(value: Any, name: str = "value") -> float:
    if isinstance(value, bool):
        raise ConfigurationError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ConfigurationError(f"{name}: expected a number, got {value!r}")


def parse_str(value: Any, name: str = "value") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ConfigurationError(f"{name}: expected a string, got {value!r}")


def parse_int_list(value: Any, name: str = "value") -> tuple[int, ...]:
    """A list of integers from ``[32, 64]``, ``"32,64"`` or ``"[32, 64]"``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigurationError(
                    f"{name}: expected a list of integers, got {value!r}"
                ) from err
        else:
            value = [part for part in text.replace(" ", "").split(",") if part]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigurationError(f"{name}: expected a non-empty list of integers, got {value!r}")
    return tuple(parse_int(item, name) for item in value)


def parse_str_list(value: Any, name: str = "value") -> tuple[str, ...]:
    """A list of strings from ``["ham", "spam"]``, ``"ham,spam"`` or ``""`` (empty)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigurationError(
                    f"{name}: expected a list of strings, got {value!r}"
                ) from err
        else:
            return tuple(part.strip() for part in text.split(",") if part.strip())
    if not isinstance(value, list | tuple):
        raise ConfigurationError(f"{name}: expected a list of strings, got {value!r}")
    return tuple(parse_str(item, name) for item in value)


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "bool": parse_bool,
    "int": parse_int,
    "float": parse_float,
    "str": parse_str,
    "int_list": parse_int_list,
    "str_list": parse_str_list,
}


def hp(
    default: Any,
    kind: str,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """Declare a typed hyperparameter field (metadata read by ``parse_hyperparameters``)."""
    return field(
        default=default,
        metadata={"kind": kind, "help": help, "choices": choices, "min": minimum, "max": maximum},
    )


def _decode_sagemaker_value(value: Any) -> Any:
    """SageMaker stores every hyperparameter as a JSON-encoded string; undo that once."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _check_range(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        allowed = ", ".join(str(choice) for choice in choices)
        raise ConfigurationError(f"{name}: {value!r} is not one of: {allowed}")
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if not isinstance(item, int | float):
            continue
        if meta.get("min") is not None and item < meta["min"]:
            raise ConfigurationError(f"{name}: {item!r} is below the minimum {meta['min']}")
        if meta.get("max") is not None and item > meta["max"]:
            raise ConfigurationError(f"{name}: {item!r} is above the maximum {meta['max']}")


def parse_hyperparameters(cls: type, raw: Mapping[str, Any]) -> Any:
    """Build the frozen dataclass ``cls`` from SageMaker's hyperparameters.json content.

    Unknown names are a client error that lists the known ones; names starting with
    ``sagemaker_`` belong to the SageMaker Python SDK and are ignored.
    """
    specs = {f.name: f for f in fields(cls)}
    unknown = sorted(
        name for name in raw if name not in specs and not name.startswith("sagemaker_")
    )
    if unknown:
        raise ConfigurationError(
            f"unknown hyperparameter(s): {', '.join(unknown)}; known: {', '.join(sorted(specs))}"
        )
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in raw:
            continue
        meta = spec.metadata
        value = _PARSERS[meta["kind"]](_decode_sagemaker_value(raw[name]), name)
        _check_range(name, value, meta)
        values[name] = value
    return cls(**values)


def hyperparameter_table(cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) rows for docs and ``smneuron hyperparameters``."""
    rows = []
    for spec in fields(cls):
        meta = spec.metadata
        extra = []
        if meta.get("choices"):
            extra.append("one of " + ", ".join(str(c) for c in meta["choices"]))
        if meta.get("min") is not None:
            extra.append(f"≥ {meta['min']}")
        if meta.get("max") is not None:
            extra.append(f"≤ {meta['max']}")
        text = meta["help"] + (f" ({'; '.join(extra)})" if extra else "")
        default = spec.default
        if isinstance(default, tuple):
            default = ",".join(str(item) for item in default)
        rows.append((spec.name, meta["kind"], repr(default), text))
    return rows


# --------------------------------------------------------------------------------------------
# Training job configuration


def read_json(path: Path, what: str, default: Any = None) -> Any:
    """Read a JSON file: a missing one gives ``default`` (when given), a broken one an error."""
    if not path.exists():
        if default is not None:
            return default
        raise ConfigurationError(f"{what} not found at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as err:
        raise ConfigurationError(f"{what} at {path} is not valid JSON: {err}") from err


@dataclass(frozen=True)
class ResourceConfig:
    current_host: str = "algo-1"
    hosts: tuple[str, ...] = ("algo-1",)
    network_interface_name: str = "eth0"

    @property
    def master(self) -> str:
        return self.hosts[0]

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def num_hosts(self) -> int:
        return len(self.hosts)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceConfig:
        hosts = tuple(data.get("hosts") or ("algo-1",))
        current = data.get("current_host") or hosts[0]
        if current not in hosts:
            raise ConfigurationError(
                f"resourceconfig.json: current_host {current!r} is not in hosts {list(hosts)}"
            )
        return cls(
            current_host=current,
            hosts=tuple(sorted(hosts)),
            network_interface_name=data.get("network_interface_name", "eth0"),
        )


@dataclass(frozen=True)
class TrainingEnv:
    """What SageMaker tells a training container, read once."""

    paths: Paths
    hyperparameters: Mapping[str, Any]
    resource: ResourceConfig
    input_data_config: Mapping[str, Any]
    channels: Mapping[str, Path]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingEnv:
        paths = Paths.from_env(environ)
        raw_hps = read_json(paths.hyperparameters, "hyperparameters.json", default={})
        if not isinstance(raw_hps, dict):
            raise ConfigurationError("hyperparameters.json must hold a JSON object")
        resource = ResourceConfig.from_dict(
            read_json(paths.resource_config, "resourceconfig.json", default={})
        )
        data_config = read_json(paths.input_data_config, "inputdataconfig.json", default={})
        channel_names = set(data_config) | (
            {p.name for p in paths.data.iterdir() if p.is_dir()} if paths.data.is_dir() else set()
        )
        channels = {name: paths.channel(name) for name in sorted(channel_names)}
        return cls(paths, raw_hps, resource, data_config, channels)


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


@dataclass(frozen=True)
class ServingSettings:
    """Everything ``serve`` reads from the environment."""

    paths: Paths
    server: str = "mms"
    port: int = 8080
    max_payload_mb: int = 6
    workers: int | None = None  # None: derive from the accelerator
    threads_per_worker: int | None = None
    model_server_timeout: int = 60
    max_concurrent_transforms: int | None = None
    batch_strategy: str = "MULTI_RECORD"
    default_accept: str = "application/json"
    max_batch_delay_ms: float = 5.0
    overflow: str = "truncate"
    accelerator: str | None = None  # None: detect
    log_level: str = "INFO"
    log_format: str = "json"
    vmargs: str | None = None
    trust_remote_code: bool = False

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        environ = os.environ if environ is None else environ
        server = environ.get(ENV.SERVER, "mms").strip().lower() or "mms"
        if server not in ("mms", "gunicorn"):
            raise ConfigurationError(f"{ENV.SERVER}: {server!r} is not one of: mms, gunicorn")
        overflow = environ.get(ENV.OVERFLOW, "truncate").strip().lower() or "truncate"
        if overflow not in ("truncate", "reject"):
            raise ConfigurationError(
                f"{ENV.OVERFLOW}: {overflow!r} is not one of: truncate, reject"
            )
        strategy = environ.get(ENV.BATCH_STRATEGY, "MULTI_RECORD").strip().upper()
        if strategy not in ("MULTI_RECORD", "SINGLE_RECORD"):
            raise ConfigurationError(
                f"{ENV.BATCH_STRATEGY}: {strategy!r} is not one of: MULTI_RECORD, SINGLE_RECORD"
            )
        payload = _env_int(environ, ENV.MAX_PAYLOAD_IN_MB, 6, minimum=1)
        if payload > 100:
            raise ConfigurationError(f"{ENV.MAX_PAYLOAD_IN_MB}: {payload} is above the maximum 100")
        workers = environ.get(ENV.MODEL_SERVER_WORKERS)
        threads = environ.get(ENV.THREADS_PER_WORKER)
        concurrent = environ.get(ENV.MAX_CONCURRENT_TRANSFORMS)
        delay = environ.get(ENV.MAX_BATCH_DELAY_MS)
        return cls(
            paths=Paths.from_env(environ),
            server=server,
            port=_env_int(environ, ENV.BIND_TO_PORT, 8080, minimum=1),
            max_payload_mb=payload,
            workers=parse_int(workers, ENV.MODEL_SERVER_WORKERS) if workers else None,
            threads_per_worker=parse_int(threads, ENV.THREADS_PER_WORKER) if threads else None,
            model_server_timeout=_env_int(environ, ENV.MODEL_SERVER_TIMEOUT, 60, minimum=1),
            max_concurrent_transforms=(
                parse_int(concurrent, ENV.MAX_CONCURRENT_TRANSFORMS) if concurrent else None
            ),
            batch_strategy=strategy,
            default_accept=environ.get(ENV.DEFAULT_ACCEPT, "application/json"),
            max_batch_delay_ms=parse_float(delay, ENV.MAX_BATCH_DELAY_MS) if delay else 5.0,
            overflow=overflow,
            accelerator=accelerator_override(environ),
            log_level=environ.get(ENV.LOG_LEVEL, "INFO").upper(),
            log_format=environ.get(ENV.LOG_FORMAT, "json").lower(),
            vmargs=environ.get(ENV.MODEL_SERVER_VMARGS),
            trust_remote_code=parse_bool(
                environ.get(ENV.TRUST_REMOTE_CODE, "false"), ENV.TRUST_REMOTE_CODE
            ),
        )


def accelerator_override(environ: Mapping[str, str] | None = None) -> str | None:
    """The forced backend from ``SMNEURON_ACCELERATOR``, or None to detect."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV.ACCELERATOR, "").strip().lower()
    if not value or value == "auto":
        return None
    if value not in ("neuron", "cpu"):
        raise ConfigurationError(f"{ENV.ACCELERATOR}: {value!r} is not one of: neuron, cpu, auto")
    return value
