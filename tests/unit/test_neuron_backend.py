"""NeuronBackend against the fake torch_neuronx: trace calls, artifact, versions, load."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from smneuron.artifact.backends import get_backend  # noqa: E402
from smneuron.artifact.build import compile_artifact  # noqa: E402
from smneuron.artifact.manifest import check_compatible, check_files, read_manifest  # noqa: E402
from smneuron.errors import ArtifactError  # noqa: E402
from smneuron.neuron.backend import (  # noqa: E402
    DEFAULT_COMPILER_ARGS,
    NeuronBackend,
    compiler_target,
    debian_package_version,
    neuron_versions,
    parse_compiler_args,
)
from smneuron.versions import package_version  # noqa: E402
from tinymodels import tiny_model  # noqa: E402

FAKE = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"
PINNED = {"torch-neuronx": "2.8.0.2.10.13553", "neuronx-cc": "2.21.18209.0"}
DPKG = """Package: aws-neuronx-tools
Status: install ok installed
Version: 2.26.14.0

Package: aws-neuronx-runtime-lib
Status: install ok installed
Version: 2.28.23.0-dd5879008
"""


def fake_versions(dist: str) -> str | None:
    return PINNED.get(dist) or package_version(dist)


@pytest.fixture
def fake_torch_neuronx(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE / "torch-neuronx"))
    monkeypatch.delitem(sys.modules, "torch_neuronx", raising=False)
    import torch_neuronx

    torch_neuronx.CALLS.clear()
    yield torch_neuronx
    sys.modules.pop("torch_neuronx", None)


@pytest.fixture
def dpkg_status(tmp_path):
    path = tmp_path / "status"
    path.write_text(DPKG)
    return path


@pytest.fixture(scope="module")
def classifier():
    return tiny_model(vocab_size=128, max_positions=128)


def backend(dpkg_status, **kwargs) -> NeuronBackend:
    return NeuronBackend(
        instance_type="inf2.xlarge", version_of=fake_versions, dpkg_status=dpkg_status, **kwargs
    )


def test_one_trace_per_bucket_with_static_shapes_and_compiler_args(
    tmp_path, classifier, fake_torch_neuronx, dpkg_status
):
    manifest = compile_artifact(
        tmp_path,
        classifier,
        task="text-classification",
        labels=["ham", "spam"],
        batch_size=4,
        sequence_lengths=[128, 32, 64],
        backend=backend(dpkg_status),
        compiler_args=DEFAULT_COMPILER_ARGS,
    )
    traces = [call for call in fake_torch_neuronx.CALLS if call["call"] == "trace"]
    assert [call["shapes"] for call in traces] == [
        [[4, 32], [4, 32]],
        [[4, 64], [4, 64]],
        [[4, 128], [4, 128]],
    ]
    assert all(call["dtypes"] == ["torch.int64", "torch.int64"] for call in traces)
    assert all(
        call["compiler_args"] == ["--auto-cast", "matmult", "--auto-cast-type", "bf16"]
        for call in traces
    )
    assert manifest.backend == "neuron"
    assert manifest.target == "inf2"
    assert manifest.compiler_args == DEFAULT_COMPILER_ARGS
    assert manifest.versions["torch_neuronx"] == "2.8.0.2.10.13553"
    assert manifest.versions["neuronx_cc"] == "2.21.18209.0"
    assert manifest.versions["neuron_runtime"] == "2.28.23.0-dd5879008"
    assert manifest.versions["torch"] == torch.__version__
    assert read_manifest(tmp_path) == manifest
    check_files(tmp_path, manifest)
    check_compatible(manifest, "neuron", backend(dpkg_status).versions())


def test_loaded_graph_answers_like_the_eager_model(
    tmp_path, classifier, fake_torch_neuronx, dpkg_status
):
    neuron = backend(dpkg_status)
    manifest = compile_artifact(
        tmp_path,
        classifier,
        task="text-classification",
        labels=["ham", "spam"],
        batch_size=2,
        sequence_lengths=[16],
        backend=neuron,
    )
    sys.modules.pop("torch_neuronx")  # load must import it again (it registers Neuron ops)
    graph = neuron.load(manifest.graph_path(tmp_path, 16))
    assert "torch_neuronx" in sys.modules
    ids = torch.randint(5, 120, (2, 16))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = classifier(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(graph(ids, mask), expected, atol=1e-4)


def test_compiler_workdir_and_async_load_reach_the_api(
    tmp_path, classifier, fake_torch_neuronx, dpkg_status
):
    neuron = backend(dpkg_status, compiler_workdir=tmp_path / "work", async_load=True)
    compile_artifact(
        tmp_path / "model",
        classifier,
        task="text-classification",
        labels=["a", "b"],
        batch_size=1,
        sequence_lengths=[8, 16],
        backend=neuron,
        compiler_args=["--target", "trn1"],
    )
    traces = [c for c in fake_torch_neuronx.CALLS if c["call"] == "trace"]
    workdirs = [Path(c["compiler_workdir"]) for c in traces]
    assert len(set(workdirs)) == 2 and all(w.parent == tmp_path / "work" for w in workdirs)
    assert [c["call"] for c in fake_torch_neuronx.CALLS].count("async_load") == 2
    assert neuron.target() == "trn1"


def test_missing_torch_neuronx_says_which_image_to_use(monkeypatch, tmp_path, classifier):
    monkeypatch.setitem(sys.modules, "torch_neuronx", None)  # import fails
    neuron = get_backend("neuron")
    with pytest.raises(ArtifactError, match="this image has no torch-neuronx: use the neuron"):
        neuron.trace(classifier, (torch.ones(1, 8, dtype=torch.long),) * 2)
    with pytest.raises(ArtifactError, match="no torch-neuronx"):
        neuron.load(tmp_path / "seq8.pt")
    with pytest.raises(ArtifactError, match="no torch-neuronx"):
        NeuronBackend(version_of=lambda dist: None).versions()


def test_target_defaults(dpkg_status):
    assert backend(dpkg_status).target() == "inf2"
    on_trn1 = NeuronBackend(environ={"SM_CURRENT_INSTANCE_TYPE": "ml.trn1.32xlarge"})
    assert on_trn1.target() == "trn1"


def test_versions_and_compiler_arg_helpers(dpkg_status, tmp_path):
    found = neuron_versions(fake_versions, dpkg_status)
    assert found["torch_neuronx"] == "2.8.0.2.10.13553" and "libneuronxla" not in found
    assert debian_package_version("aws-neuronx-tools", dpkg_status) == "2.26.14.0"
    assert debian_package_version("nothing", dpkg_status) is None
    assert debian_package_version("x", tmp_path / "absent") is None
    assert parse_compiler_args('--auto-cast all --model-type "transformer"') == (
        "--auto-cast",
        "all",
        "--model-type",
        "transformer",
    )
    assert compiler_target(["--target=inf2"]) == "inf2"
    assert compiler_target(["-O2"]) is None
