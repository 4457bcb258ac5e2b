"""The CPU images run directly through smneuron.tools.local.docker (--neuron-devices path)."""

from __future__ import annotations

import json
import tarfile
import urllib.request

import pytest
from localjobs import HYPERPARAMETERS, SERVE_ENV, SMALL_ENV
from netutil import free_port

from smneuron.tools.local import docker as localrun

pytestmark = [pytest.mark.docker, pytest.mark.localmode]


class Recording:
    """A docker client that remembers the containers it started (CI runs others beside us)."""

    def __init__(self, client) -> None:
        self.client, self.made = client, []
        self.containers = self

    def run(self, image, **kwargs):
        container = self.client.containers.run(image, **kwargs)
        self.made.append(container)
        return container


@pytest.fixture(scope="module")
def model_tar(docker_client, cpu_images, spam_channels, tmp_path_factory):
    spec = localrun.training_run_spec(
        cpu_images["training"],
        spam_channels,
        {**HYPERPARAMETERS, "max_steps": 2},
        tmp_path_factory.mktemp("localrun") / "job",
        None,
        SMALL_ENV,
    )
    return localrun.run_training(spec, docker_client)


def test_training_writes_model_tar_gz_with_a_manifest(model_tar):
    assert model_tar.name == "model.tar.gz"
    with tarfile.open(model_tar) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"manifest.json", "config.json"} <= names
    assert (manifest["backend"], manifest["labels"]) == ("cpu", ["ham", "spam"])
    assert manifest["sequence_lengths"] == [16, 32]


def test_failed_training_reports_the_failure_file(docker_client, cpu_images, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train.csv").write_text("text,label\nhello,ham\n")
    spec = localrun.training_run_spec(
        cpu_images["training"],
        {"train": tmp_path / "train"},  # no model channel
        {"max_steps": 1, "no_such_hyperparameter": 3},
        tmp_path / "job",
        None,
        SMALL_ENV,
    )
    recording = Recording(docker_client)
    with pytest.raises(localrun.LocalRunError) as caught:
        localrun.run_training(spec, recording)
    assert "exited with 1" in str(caught.value)
    assert "unknown hyperparameter(s): no_such_hyperparameter" in str(caught.value)
    (made,) = recording.made
    assert docker_client.containers.list(all=True, filters={"id": made.id}) == []


def test_serving_answers_ping_and_invocations(docker_client, cpu_images, model_tar, tmp_path):
    port = free_port("")  # the SDK binds it on every interface
    spec = localrun.serving_run_spec(
        cpu_images["inference"], model_tar, port, tmp_path / "serve", None, SERVE_ENV
    )
    container = localrun.run_serving(spec, health_timeout=240, client=docker_client)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as answer:
            assert answer.status == 200
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": "WINNER!! Claim your free prize now"}).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            body = json.loads(answer.read())
        body = body[0] if isinstance(body, list) else body
        assert body["label"] in ("ham", "spam")
    finally:
        container.remove(force=True)
