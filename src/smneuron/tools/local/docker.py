"""Local container runs with the docker SDK, laid out as SageMaker would (Neuron devices allowed).

SageMaker's local mode cannot pass devices into its containers. These runs do what SageMaker
does for one host: write ``/opt/ml/input/config`` (hyperparameters, resource and input data
config), mount the channels read-only under ``/opt/ml/input/data/<name>``, run ``train`` and
tar ``/opt/ml/model`` into ``model.tar.gz``; or mount a model at ``/opt/ml/model``, run
``serve`` and publish port 8080. ``training_run_spec``/``serving_run_spec`` only write files
and describe the container, so they are tested without docker.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from smneuron.artifact.archive import extract
from smneuron.errors import ConfigurationError, SmneuronError
from smneuron.tools.build.images import docker_client as engine_client
from smneuron.tools.http import NotReadyError, wait_for_ping
from smneuron.tools.local.devices import NeuronDevices

HOST = "algo-1"
SERVING_PORT = 8080
LOG_TAIL_CHARS = 4000
FAILURE_CHARS = 2000


class LocalRunError(SmneuronError):
    """A local container run failed; the message carries the container's failure and log tail."""


@dataclass(frozen=True)
class RunSpec:
    """One container to run: what ``docker run`` gets, and where its /opt/ml lives on the host.

    Attributes:
        image: image tag.
        command: ``["train"]`` or ``["serve"]``.
        volumes: the docker SDK's ``volumes`` (host path -> {"bind", "mode"}).
        devices: the docker SDK's ``devices`` (``"/dev/neuron0:/dev/neuron0:rwm"``).
        environment: container variables.
        workdir: host folder holding the ``/opt/ml`` tree.
        ports: the docker SDK's ``ports`` (``{"8080/tcp": ("127.0.0.1", 8080)}``); serving only.
        hostname: the container's host name (the one resourceconfig.json names).
    """

    image: str
    command: list[str]
    volumes: dict[str, dict[str, str]]
    devices: list[str]
    environment: dict[str, str]
    workdir: Path
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)
    hostname: str = HOST

    @property
    def host_port(self) -> int | None:
        published = self.ports.get(f"{SERVING_PORT}/tcp")
        return published[1] if published else None

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``docker.containers.run`` (detached)."""
        return {
            "command": list(self.command),
            "detach": True,
            "volumes": dict(self.volumes),
            "devices": list(self.devices),
            "environment": dict(self.environment),
            "ports": dict(self.ports),
            "hostname": self.hostname,
        }


def _environment(devices: NeuronDevices | None, env: Mapping[str, str] | None) -> dict[str, str]:
    # The user's --env wins over the device defaults (e.g. a different accelerator override).
    return {**(devices.env if devices else {}), **dict(env or {})}


def training_run_spec(
    image: str,
    channels: Mapping[str, str | Path],
    hyperparameters: Mapping[str, Any],
    workdir: Path,
    devices: NeuronDevices | None = None,
    env: Mapping[str, str] | None = None,
) -> RunSpec:
    """Write the /opt/ml tree of a one-host training job under ``workdir``; describe its run.

    Hyperparameter values are JSON-encoded into strings, as SageMaker does
    (``{"max_steps": "4", "labels": "\\"ham,spam\\""}``).

    Raises:
        ConfigurationError: a channel folder does not exist or a channel name is not usable.
    """
    workdir = Path(workdir).resolve()
    config = workdir / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    volumes: dict[str, dict[str, str]] = {
        str(config): {"bind": "/opt/ml/input/config", "mode": "ro"}
    }
    data_config: dict[str, dict[str, str]] = {}
    for name, path in channels.items():
        if not name or "/" in name or name.startswith("."):
            raise ConfigurationError(f"channel name {name!r} is not a folder name")
        source = Path(path).resolve()
        if not source.is_dir():
            raise ConfigurationError(f"channel {name}: {source} is not a folder")
        volumes[str(source)] = {"bind": f"/opt/ml/input/data/{name}", "mode": "ro"}
        data_config[name] = {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
    encoded = {str(key): json.dumps(value) for key, value in hyperparameters.items()}
    (config / "hyperparameters.json").write_text(json.dumps(encoded, indent=2), encoding="utf-8")
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": HOST, "hosts": [HOST], "network_interface_name": "eth0"}),
        encoding="utf-8",
    )
    (config / "inputdataconfig.json").write_text(json.dumps(data_config), encoding="utf-8")
    for name in ("model", "output", "checkpoints"):
        (workdir / name).mkdir(exist_ok=True)
        volumes[str(workdir / name)] = {"bind": f"/opt/ml/{name}", "mode": "rw"}
    return RunSpec(
        image=image,
        command=["train"],
        volumes=volumes,
        devices=list(devices.sdk_devices) if devices else [],
        environment=_environment(devices, env),
        workdir=workdir,
    )


def _unpack_model(model: Path, target: Path) -> Path:
    """A model folder as is, or a model.tar.gz unpacked into ``target``."""
    if model.is_dir():
        return model
    if not model.is_file() or not tarfile.is_tarfile(model):
        raise ConfigurationError(f"--model-data {model}: not a model folder or a model.tar.gz")
    if target.exists():
        shutil.rmtree(target)
    extract(model, target)
    return target


def serving_run_spec(
    image: str,
    model_dir_or_tar: str | Path,
    port: int,
    workdir: Path,
    devices: NeuronDevices | None = None,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
) -> RunSpec:
    """Describe a ``serve`` container: the model (unpacked if a .tar.gz) at /opt/ml/model.

    Args:
        port: host port published to the container's 8080, on ``host`` (loopback by default).
    """
    text = str(model_dir_or_tar).removeprefix("file://")
    workdir = Path(workdir).resolve()
    model = _unpack_model(Path(text).resolve(), workdir / "model")
    if not 0 < port < 65536:
        raise ConfigurationError(f"--port {port}: not a TCP port")
    return RunSpec(
        image=image,
        command=["serve"],
        volumes={str(model): {"bind": "/opt/ml/model", "mode": "ro"}},
        devices=list(devices.sdk_devices) if devices else [],
        environment=_environment(devices, env),
        workdir=workdir,
        ports={f"{SERVING_PORT}/tcp": (host, port)},
    )


def _logs(container) -> str:
    try:
        return container.logs().decode(errors="replace")
    except Exception:  # the container may be gone already; the caller still reports the rest
        return ""


def _remove(container) -> None:
    try:
        container.remove(force=True)
    except Exception:
        pass


def _tar_model(model: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as tar:
        for entry in sorted(model.iterdir()):
            tar.add(entry, arcname=entry.name)
    return target


def run_training(spec: RunSpec, client=None, stream: TextIO | None = None) -> Path:
    """Run ``train`` detached, stream its log, wait; return ``output/model.tar.gz``.

    Raises:
        LocalRunError: the container exited non-zero (with its ``failure`` file and log tail).
    """
    stream = stream or sys.stdout
    client = client or engine_client()
    container = client.containers.run(spec.image, **spec.run_kwargs())
    tail: deque[str] = deque()
    size = 0
    try:
        for chunk in container.logs(stream=True, follow=True):
            text = chunk.decode(errors="replace")
            stream.write(text)
            tail.append(text)
            size += len(text)
            while size > LOG_TAIL_CHARS and len(tail) > 1:
                size -= len(tail.popleft())
        stream.flush()
        code = int(container.wait().get("StatusCode", -1))
        if code != 0:
            failure = spec.workdir / "output" / "failure"
            reason = (
                failure.read_text(encoding="utf-8", errors="replace")[-FAILURE_CHARS:].strip()
                if failure.is_file()
                else "(no /opt/ml/output/failure written)"
            )
            log_tail = "".join(tail)[-LOG_TAIL_CHARS:] or _logs(container)[-LOG_TAIL_CHARS:]
            raise LocalRunError(
                f"training container {spec.image} exited with {code}\n"
                f"failure: {reason}\n--- log tail ---\n{log_tail}"
            )
    finally:
        _remove(container)
    return _tar_model(spec.workdir / "model", spec.workdir / "output" / "model.tar.gz")


def run_serving(
    spec: RunSpec,
    health_timeout: float = 300,
    client=None,
    stream: TextIO | None = None,
):
    """Start ``serve`` detached; return the container once /ping is 200 (the caller stops it).

    Raises:
        LocalRunError: the container exited, or /ping was not 200 within ``health_timeout``;
            the log tail is printed to ``stream`` (stderr) and the container removed.
    """
    port = spec.host_port
    if port is None:
        raise ConfigurationError("a serving run needs a published port")
    host = spec.ports[f"{SERVING_PORT}/tcp"][0]
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host
    client = client or engine_client()
    container = client.containers.run(spec.image, **spec.run_kwargs())

    try:
        _wait_healthy(container, spec.image, f"http://{host}:{port}", health_timeout)
    except BaseException:
        print(
            f"--- {spec.image} log tail ---\n{_logs(container)[-LOG_TAIL_CHARS:]}",
            file=stream or sys.stderr,
        )
        _remove(container)
        raise
    return container


def _wait_healthy(container, image: str, url: str, timeout_s: float) -> None:
    """Wait for /ping 200 from a serving container; LocalRunError when it exits or times out."""

    def exited() -> str | None:
        container.reload()
        return container.status if container.status in ("exited", "dead") else None

    try:
        wait_for_ping(url, timeout_s, exited=exited)
    except NotReadyError as err:
        if err.exited is not None:
            raise LocalRunError(
                f"serving container {image} exited before /ping was 200 (log tail above)"
            ) from err
        raise LocalRunError(
            f"serving container {image}: {url}/ping not 200 within {timeout_s:.0f}s "
            f"({err.last}; log tail above)"
        ) from err
