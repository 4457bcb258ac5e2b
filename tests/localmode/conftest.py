"""Local-mode fixtures: an offline SageMaker SDK environment, moto_server, a local registry."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from netutil import free_port, wait_answering

DEMO_DATA = Path(__file__).resolve().parents[2] / "examples" / "spam" / "data"


def wait_http(url: str, process: subprocess.Popen, limit_s: float = 60) -> None:
    def exited() -> str | None:
        code = process.poll()
        return None if code is None else f"{process.args[0]} exited with {code}"

    wait_answering(url, limit_s, exited)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def offline(tmp_path_factory, monkeypatch) -> Path:
    """Dummy credentials, a region and telemetry off: the SDK never leaves the machine."""
    from smneuron.tools.local.sdk import offline_env

    workdir = tmp_path_factory.mktemp("sdk")
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "none"))
    for key, value in offline_env(workdir, {}).items():
        monkeypatch.setenv(key, value)
    return workdir


@pytest.fixture
def moto_ecr(tmp_path) -> Iterator[str]:
    """moto_server on 127.0.0.1 (a random port): the ECR API. Yields its URL."""
    exe = shutil.which("moto_server")
    if exe is None:
        pytest.fail("moto_server is not installed (`make venv` installs moto[server])")
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    process = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


REGISTRY_CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@pytest.fixture
def local_registry(tmp_path) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1 (a random port; the daemon trusts 127.0.0.0/8)."""
    exe = shutil.which("docker-registry")
    if exe is None:
        pytest.fail("docker-registry is not installed (scripts/docker-engine.sh installs it)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(REGISTRY_CONFIG.format(root=tmp_path / "registry", port=port))
    log = (tmp_path / "registry.log").open("w")
    process = subprocess.Popen([exe, "serve", str(config)], stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/", process)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


@pytest.fixture(scope="session")
def spam_channels(tmp_path_factory, docker_tiny_model) -> dict[str, Path]:
    """train / validation / model channels: a slice of the demo data and the tiny model."""
    root = tmp_path_factory.mktemp("channels")
    channels = {}
    for name, rows in (("train", 48), ("validation", 16)):
        lines = (DEMO_DATA / f"{name}.csv").read_text(encoding="utf-8").splitlines()
        (root / name).mkdir()
        (root / name / f"{name}.csv").write_text("\n".join(lines[: rows + 1]) + "\n")
        channels[name] = root / name
    channels["model"] = docker_tiny_model
    return channels


@pytest.fixture(scope="session", autouse=True)
def remove_local_mode_containers():
    """Local mode leaves its exited algo-N containers behind: remove the ones this session made."""
    try:
        import docker

        client = docker.from_env(timeout=30)
        before = {c.id for c in client.containers.list(all=True)}
    except Exception:  # no engine: the tests skip or fail on their own
        yield
        return
    yield
    for container in client.containers.list(all=True, filters={"status": "exited"}):
        if container.id not in before and "-algo-" in container.name:
            container.remove()
    client.close()
