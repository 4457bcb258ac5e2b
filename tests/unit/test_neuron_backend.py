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
from smneuron.errors import ArtifactError, ConfigurationError  # noqa: E402
from smneuron.neuron.backend import (  # noqa: E402
    DEFAULT_COMPILER_ARGS,
    NeuronBackend,
    check_target,
    compiler_target,
    debian_package_version,
    neuron_versions,
    parse_compiler_args,
    with_target,
)
from smneuron.versions import package_version  # noqa: E402
from tinymodels import tiny_model  # noqa: E402

FAKE = Path(__file__).resolve().parents[1] / "resources" / "fake_neuron"
PINNED = {"torch-neuronx": "2.9.0.2.13.26312+8e870898", "neuronx-cc": "2.24.8799.0+6f62ff7c"}
DPKG = """Package: aws-neuronx-tools
Status: install ok installed
Version: 2.26.14.0

Package: aws-neuronx-runtime-lib
Status: install ok installed
Version: 2.31.24.0-0b044f4ce
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
    """The backend on an inf2.xlarge with its Neuron device (``cpu_backend=False``)."""
    kwargs.setdefault("cpu_backend", False)
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
    # input_ids, attention_mask, token_type_ids (a BERT classifier takes text pairs)
    assert [call["shapes"] for call in traces] == [
        [[4, 32]] * 3,
        [[4, 64]] * 3,
        [[4, 128]] * 3,
    ]
    assert manifest.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert all(call["dtypes"] == ["torch.int64"] * 3 for call in traces)
    assert all(
        call["compiler_args"] == ["--auto-cast", "matmult", "--auto-cast-type", "bf16"]
        for call in traces
    )
    assert manifest.backend == "neuron"
    assert manifest.target == "inf2"
    assert manifest.compiler_args == DEFAULT_COMPILER_ARGS
    assert manifest.versions["torch_neuronx"] == "2.9.0.2.13.26312+8e870898"
    assert manifest.versions["neuronx_cc"] == "2.24.8799.0+6f62ff7c"
    assert manifest.versions["neuron_runtime"] == "2.31.24.0-0b044f4ce"
    assert manifest.versions["torch"] == torch.__version__
    assert read_manifest(tmp_path) == manifest
    check_files(tmp_path, manifest)
    check_compatible(manifest, "neuron", backend(dpkg_status).versions())


def test_one_trace_per_batch_size_and_bucket_each_loadable(
    tmp_path, classifier, fake_torch_neuronx, dpkg_status
):
    neuron = backend(dpkg_status)
    manifest = compile_artifact(
        tmp_path,
        classifier,
        task="text-classification",
        labels=["ham", "spam"],
        batch_sizes=(1, 2, 4),
        sequence_lengths=[32, 16],
        backend=neuron,
        compiler_args=DEFAULT_COMPILER_ARGS,
    )
    traces = [call for call in fake_torch_neuronx.CALLS if call["call"] == "trace"]
    pairs = [(b, n) for b in (1, 2, 4) for n in (16, 32)]
    # ids, mask and token types (the tiny BERT has segment embeddings) per (batch, bucket)
    assert [call["shapes"] for call in traces] == [[[b, n]] * 3 for b, n in pairs]
    assert manifest.graphs() == pairs and manifest.batch_size == 4
    check_files(tmp_path, manifest)
    for batch, length in pairs:
        graph = neuron.load(manifest.graph_path(tmp_path, length, batch))
        ids = torch.randint(5, 120, (batch, length))
        assert graph(ids, torch.ones_like(ids), torch.zeros_like(ids)).shape == (batch, 2)


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
    types = torch.zeros_like(ids)
    types[:, 8:] = 1  # a text pair's second segment
    with torch.no_grad():
        expected = classifier(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        assert torch.allclose(graph(ids, mask, types), expected, atol=1e-4)


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
    assert found["torch_neuronx"] == "2.9.0.2.13.26312+8e870898" and "libneuronxla" not in found
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


# --------------------------------------------------------------------------------------------
# Compiling on a host without a Neuron device (torch_neuronx.trace(..., cpu_backend=True))


def test_host_without_device_traces_on_the_cpu_backend_for_the_target(
    tmp_path, classifier, fake_torch_neuronx, dpkg_status, monkeypatch
):
    from smneuron.neuron import backend as module

    monkeypatch.setattr(module, "list_neuron_devices", lambda: [])  # a CodeBuild (CPU) host
    neuron = NeuronBackend(version_of=fake_versions, dpkg_status=dpkg_status)
    manifest = compile_artifact(
        tmp_path,
        classifier,
        task="text-classification",
        labels=["ham", "spam"],
        batch_size=1,
        sequence_lengths=[16],
        backend=neuron,
        compiler_args=with_target(DEFAULT_COMPILER_ARGS, "inf2"),
    )
    (trace,) = [call for call in fake_torch_neuronx.CALLS if call["call"] == "trace"]
    assert trace["cpu_backend"] is True
    assert trace["compiler_args"][-2:] == ["--target", "inf2"]
    assert (manifest.target, list(manifest.compiler_args)) == ("inf2", trace["compiler_args"])


def test_host_without_device_and_without_target_is_told_to_name_one(
    classifier, fake_torch_neuronx, dpkg_status, monkeypatch
):
    from smneuron.neuron import backend as module

    monkeypatch.setattr(module, "list_neuron_devices", lambda: [])
    neuron = NeuronBackend(version_of=fake_versions, dpkg_status=dpkg_status)
    with pytest.raises(ConfigurationError, match="needs a target: give --target inf2"):
        neuron.trace(classifier, (torch.ones(1, 8, dtype=torch.long),) * 2, DEFAULT_COMPILER_ARGS)
    assert fake_torch_neuronx.CALLS == []


def test_host_with_a_device_compiles_on_it(
    classifier, fake_torch_neuronx, dpkg_status, monkeypatch
):
    from smneuron.neuron import backend as module

    monkeypatch.setattr(module, "list_neuron_devices", lambda: [Path("/dev/neuron0")])
    neuron = NeuronBackend(version_of=fake_versions, dpkg_status=dpkg_status)
    neuron.trace(classifier, (torch.ones(1, 8, dtype=torch.long),) * 2, DEFAULT_COMPILER_ARGS)
    (trace,) = fake_torch_neuronx.CALLS
    assert trace["cpu_backend"] is False


def test_with_target_keeps_a_named_target_and_refuses_unknown_families():
    assert with_target(("-O2",), "trn2") == ("-O2", "--target", "trn2")
    assert with_target(("--target=trn1",), "inf2") == ("--target=trn1",)
    with pytest.raises(ConfigurationError, match="use one of inf2, trn1, trn2"):
        with_target((), "inf1")


# --------------------------------------------------------------------------------------------
# The artifact's target against the serving host's family


@pytest.mark.parametrize(
    ("target", "host"),
    [("inf2", "inf2"), ("trn1", "inf2"), ("inf2", "trn1"), ("trn2", "trn2"), ("trn2", None)],
)
def test_targets_that_load(target, host):
    check_target(target, host)


@pytest.mark.parametrize(("target", "host"), [("trn2", "inf2"), ("trn2", "trn1"), ("inf2", "trn2")])
def test_targets_that_cannot_load_say_how_to_recompile(target, host):
    with pytest.raises(ArtifactError) as err:
        check_target(target, host)
    message = str(err.value)
    assert f"compiled for {target}" in message and f"is {host}" in message
    assert f"smneuron compile --backend neuron --target {host}" in message


def test_backend_checks_the_manifest_target_against_this_host(dpkg_status):
    from smneuron.artifact.manifest import Manifest

    manifest = Manifest(
        task="text-classification", backend="neuron", batch_size=1, sequence_lengths=(16,)
    )
    trn2_artifact = Manifest(**{**manifest.__dict__, "target": "trn2"})
    inf2_artifact = Manifest(**{**manifest.__dict__, "target": "trn1"})
    on_inf2 = backend(dpkg_status)
    on_inf2.check_artifact(inf2_artifact)
    with pytest.raises(ArtifactError, match="compiled for trn2"):
        on_inf2.check_artifact(trn2_artifact)
