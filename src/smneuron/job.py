"""The /opt/ml job contract: paths, the job's configuration files, and its outcome."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smneuron.env import ENV
from smneuron.errors import ConfigurationError


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
