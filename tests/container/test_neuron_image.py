"""The ACCELERATOR=neuron Dockerfile path, built FROM a stand-in tagged as the pinned Neuron DLC.

No machine here can pull the AWS Neuron DLC, so tests/resources/fake_neuron/standin.py builds
a local stand-in (bookworm Python 3.11, CPU torch, the FAKE torch-neuronx and neuronx-cc) and
tags it with the DLC URIs of constraints/neuron.txt for the duration of the build. What this
proves is the Dockerfile mechanics: FROM the pinned DLC, smneuron installed on top of the
base's torch-neuronx without a second torch, the Neuron tools on PATH, the entrypoint. It
proves nothing about the real DLC's Python 3.12 or the Neuron build of torch.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from dockerjobs import run_training

from smneuron.tools.build.images import build_images
from smneuron.tools.build.pins import read_pins

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
NEURON_TOOLS = "/opt/aws/neuron/bin"


def _standin_module():
    path = ROOT / "tests" / "resources" / "fake_neuron" / "standin.py"
    spec = importlib.util.spec_from_file_location("fake_neuron_standin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def neuron_images(docker_client) -> dict[str, str]:
    """{"training": tag, "inference": tag} built FROM the stand-in posing as the DLCs.

    Afterwards the DLC tags and the neuron image tags are removed (their layers stay cached),
    so nothing here can be mistaken for, or pushed as, a real Neuron image.
    """
    standin = _standin_module()
    uris = standin.dlc_tags(ROOT, REGION)
    standin.tag_as_dlc(docker_client, standin.build_standin(docker_client, ROOT), uris)
    built: list[str] = []
    try:
        results = build_images("neuron", region=REGION, root=ROOT)
        for result in results:
            built += result.tags
            print(f"\n{result.tags[0]}: {result.size_bytes / 1e6:.0f} MB")
        yield {result.image: result.tags[0] for result in results}
    finally:
        standin.untag(docker_client, uris)
        for tag in built:
            docker_client.images.remove(tag, noprune=True)


def _python(docker_client, image: str, code: str) -> str:
    output = docker_client.containers.run(
        image, ["python", "-c", code], remove=True, network_disabled=True
    )
    return output.decode().strip().splitlines()[-1]


@pytest.mark.parametrize("role", ["training", "inference"])
def test_built_from_the_pinned_dlc(docker_client, neuron_images, role):
    labels = docker_client.images.get(neuron_images[role]).labels
    assert labels["com.smneuron.accelerator"] == "neuron"
    assert labels["com.smneuron.stand-in"] == "true"  # inherited: FROM the DLC-named base


@pytest.mark.parametrize("role", ["training", "inference"])
def test_smneuron_imports_next_to_torch_neuronx(docker_client, neuron_images, role):
    out = _python(
        docker_client,
        neuron_images[role],
        "import smneuron, torch_neuronx; print(torch_neuronx.FAKE, torch_neuronx.__version__)",
    )
    pins = read_pins(ROOT / "constraints" / "neuron.txt").packages
    assert out == f"True {pins['torch-neuronx']}"


@pytest.mark.parametrize("role", ["training", "inference"])
def test_neuron_backend_is_backed_by_the_base_torch_neuronx(docker_client, neuron_images, role):
    out = _python(
        docker_client,
        neuron_images[role],
        "import json; from smneuron.artifact.backends import get_backend; "
        "b = get_backend('neuron'); "
        "print(json.dumps([type(b).__module__, type(b).__name__, b.versions()]))",
    )
    module, name, versions = json.loads(out)
    assert (module, name) == ("smneuron.neuron.backend", "NeuronBackend")
    pins = read_pins(ROOT / "constraints" / "neuron.txt").packages
    assert versions["torch_neuronx"] == pins["torch-neuronx"]
    assert versions["neuronx_cc"] == pins["neuronx-cc"]


@pytest.mark.parametrize("role", ["training", "inference"])
def test_no_second_torch_and_no_cuda(docker_client, neuron_images, role):
    """torch, torch-neuronx and neuronx-cc are the base's, once each; nothing CUDA."""
    out = _python(
        docker_client,
        neuron_images[role],
        "import importlib.metadata as m, json; print(json.dumps([[d.metadata['Name'].lower(), "
        "d.version, str(d.locate_file(''))] for d in m.distributions()]))",
    )
    dists = json.loads(out)
    for name in ("torch", "torch-neuronx", "neuronx-cc"):
        found = [(version, where) for dist, version, where in dists if dist == name]
        assert len(found) == 1, f"{name}: {found}"
        assert not found[0][1].startswith("/opt/venv"), f"{name} installed by smneuron: {found}"
    torch_version = next(version for dist, version, _ in dists if dist == "torch")
    assert "+cu" not in torch_version
    cuda = [dist for dist, _, _ in dists if dist.startswith("nvidia-") or "cuda" in dist]
    assert cuda == []


@pytest.mark.parametrize("role", ["training", "inference"])
def test_neuron_tools_on_path(docker_client, neuron_images, role):
    env = docker_client.images.get(neuron_images[role]).attrs["Config"]["Env"]
    path = next(item.split("=", 1)[1] for item in env if item.startswith("PATH="))
    assert path.split(":")[:2] == ["/opt/venv/bin", NEURON_TOOLS]
    found = docker_client.containers.run(
        neuron_images[role], ["sh", "-c", "command -v neuron-ls"], remove=True
    )
    assert found.decode().strip() == f"{NEURON_TOOLS}/neuron-ls"


def test_inference_image_takes_the_port_contract(docker_client, neuron_images):
    config = docker_client.images.get(neuron_images["inference"]).attrs["Config"]
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert "8080/tcp" in config["ExposedPorts"]


@pytest.mark.parametrize("command", [["train"], []], ids=["train", "no-argument"])
def test_training_entrypoint_dispatches_to_train(docker_client, neuron_images, tmp_path, command):
    """An empty /opt/ml: `train` runs and fails the SageMaker way (exit 1 + failure file)."""
    opt_ml = tmp_path / "ml"
    opt_ml.mkdir()
    result = run_training(docker_client, neuron_images["training"], opt_ml, command)
    assert result.exit_code == 1, result.logs[-3000:]
    failure = (opt_ml / "output" / "failure").read_text(encoding="utf-8")
    assert "no pretrained model" in failure
