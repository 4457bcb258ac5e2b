"""Helpers for the container tests: /opt/ml job trees, training runs, server containers."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import netutil

DEMO_DATA = Path(__file__).resolve().parents[2] / "examples" / "spam" / "data"
# Keep the containers small on a shared 2-core machine.
SMALL = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
HYPERPARAMETERS = {
    "max_steps": 4,
    "per_device_train_batch_size": 8,
    "logging_steps": 2,
    "save_steps": 2,
    "sequence_lengths": [16, 32],
    "batch_size": 2,
    "labels": ["ham", "spam"],
}


def demo_rows(name: str, count: int) -> str:
    lines = (DEMO_DATA / name).read_text(encoding="utf-8").splitlines()
    return "\n".join(lines[: count + 1]) + "\n"


def make_job(base: Path, model: Path, hyperparameters: dict) -> Path:
    """An /opt/ml tree for a training job: model + train + validation channels."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    data = base / "input" / "data"
    shutil.copytree(model, data / "model")
    (data / "train").mkdir()
    (data / "train" / "train.csv").write_text(demo_rows("train.csv", 48))
    (data / "validation").mkdir()
    (data / "validation" / "validation.csv").write_text(demo_rows("validation.csv", 16))
    (config / "hyperparameters.json").write_text(
        json.dumps({key: json.dumps(value) for key, value in hyperparameters.items()})
    )
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    for name in ("model", "output", "checkpoints"):
        (base / name).mkdir(exist_ok=True)
    return base


@dataclass
class JobResult:
    exit_code: int
    logs: str
    opt_ml: Path


def run_training(docker_client, image: str, opt_ml: Path, command: list[str]) -> JobResult:
    container = docker_client.containers.run(
        image,
        command,
        detach=True,
        environment=SMALL,
        volumes={str(opt_ml): {"bind": "/opt/ml", "mode": "rw"}},
        nano_cpus=2_000_000_000,
    )
    try:
        status = container.wait(timeout=600)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    return JobResult(status["StatusCode"], logs, opt_ml)


@dataclass
class Server:
    container: object
    url: str
    stack: str = ""

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")


def start_server(
    docker_client, image: str, model_dir: Path, stack: str, env: dict | None = None
) -> Server:
    container = docker_client.containers.run(
        image,
        ["serve"],
        detach=True,
        environment={
            **SMALL,
            "SMNEURON_SERVER": stack,
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            "SMNEURON_LOG_FORMAT": "text",
            **(env or {}),
        },
        volumes={str(model_dir): {"bind": "/opt/ml/model", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
        nano_cpus=2_000_000_000,
    )
    container.reload()
    port = container.ports["8080/tcp"][0]["HostPort"]
    return Server(container, f"http://127.0.0.1:{port}", stack)


def wait_ready(server: Server, limit_s: float = 240) -> None:
    def exited() -> str | None:
        server.container.reload()
        return "exited" if server.container.status == "exited" else None

    netutil.wait_ready(server.url, limit_s, exited=exited, logs=server.logs)
