"""CPU compile: one static-shape graph per bucket that gives the eager model's outputs."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from smneuron.artifact.backends import CpuBackend, get_backend  # noqa: E402
from smneuron.artifact.build import compile_artifact  # noqa: E402
from smneuron.artifact.manifest import check_compatible, check_files, read_manifest  # noqa: E402
from smneuron.errors import ConfigurationError  # noqa: E402
from tinymodels import tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def classifier():
    return tiny_model(vocab_size=128, max_positions=128)


def batch(batch_size, length, real_lengths):
    ids = torch.randint(5, 120, (batch_size, length))
    mask = torch.zeros((batch_size, length), dtype=torch.long)
    for row, real in enumerate(real_lengths):
        mask[row, :real] = 1
    return ids * mask, mask


def test_classifier_graphs_match_eager_model(tmp_path, classifier):
    manifest = compile_artifact(
        tmp_path,
        classifier,
        task="text-classification",
        labels=["ham", "spam"],
        batch_size=2,
        sequence_lengths=[16, 8],
        backend=CpuBackend(),
    )
    assert manifest.sequence_lengths == (8, 16)
    assert read_manifest(tmp_path) == manifest
    check_files(tmp_path, manifest)
    check_compatible(manifest, "cpu", CpuBackend().versions())
    backend = CpuBackend()
    for length in manifest.sequence_lengths:
        graph = backend.load(manifest.graph_path(tmp_path, length))
        ids, mask = batch(2, length, [length, 3])
        types = torch.zeros_like(ids)
        types[0, length // 2 :] = 1  # the first row is a text pair
        with torch.no_grad():
            expected = classifier(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            got = graph(ids, mask, types)
        assert got.shape == (2, 2)
        assert torch.max(torch.abs(got - expected)).item() <= 1e-4


def test_feature_extraction_graph_returns_unit_mean_pooled_embeddings(tmp_path):
    encoder = tiny_model("feature-extraction", vocab_size=128, max_positions=128)
    manifest = compile_artifact(
        tmp_path,
        encoder,
        task="feature-extraction",
        labels=[],
        batch_size=1,
        sequence_lengths=[8],
        backend=CpuBackend(),
        pooling="mean",
    )
    graph = CpuBackend().load(manifest.graph_path(tmp_path, 8))
    ids, mask = batch(1, 8, [5])
    with torch.no_grad():
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state[0, :5].mean(0)
        got = graph(ids, mask)[0]
    expected = hidden / hidden.norm()
    assert manifest.pooling == "mean"
    assert torch.allclose(got, expected, atol=1e-5)


def test_unknown_backend_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="unknown backend 'tpu'"):
        get_backend("tpu")


def test_one_graph_per_batch_size_and_bucket_each_matching_eager(tmp_path, classifier):
    from smneuron.artifact.build import plan_batch_sizes

    manifest = compile_artifact(
        tmp_path,
        classifier,
        task="text-classification",
        labels=["ham", "spam"],
        batch_sizes=plan_batch_sizes(4),
        sequence_lengths=[16, 8],
        backend=CpuBackend(),
    )
    assert (manifest.batch_sizes, manifest.batch_size) == ((1, 2, 4), 4)
    assert sorted(p.name for p in (tmp_path / "compiled").iterdir()) == sorted(
        [f"b{b}-seq{n}.pt" for b in (1, 2, 4) for n in (8, 16)] + ["weights.safetensors"]
    )
    assert manifest.files["compiled"]["2x16"] == "compiled/b2-seq16.pt"
    check_files(tmp_path, manifest)
    for size, length in manifest.graphs():
        graph = CpuBackend().load(manifest.graph_path(tmp_path, length, size))
        ids, mask = batch(size, length, [length] + [2] * (size - 1))
        types = torch.zeros_like(ids)  # BERT-style: the graph takes token types too
        with torch.no_grad():
            expected = classifier(input_ids=ids, attention_mask=mask).logits
            got = graph(ids, mask, types)
        assert got.shape == (size, 2)
        assert torch.max(torch.abs(got - expected)).item() <= 1e-4


@pytest.mark.parametrize(
    ("largest", "smaller", "planned"),
    [
        (8, (1, 2, 4, 8), (1, 2, 4, 8)),
        (4, (1, 2, 4, 8), (1, 2, 4)),
        (1, (1, 2, 4, 8), (1,)),
        (6, (1, 2, 4, 8), (1, 2, 4, 6)),
        (16, (1, 2, 4, 8), (1, 2, 4, 8, 16)),
        (8, (8,), (8,)),
        (8, (4, 1, 4), (1, 4, 8)),
    ],
)
def test_planned_batch_sizes_are_capped_at_the_largest(largest, smaller, planned):
    from smneuron.artifact.build import plan_batch_sizes

    assert plan_batch_sizes(largest, smaller) == planned


def test_a_batch_size_below_one_is_refused():
    from smneuron.artifact.build import plan_batch_sizes

    with pytest.raises(ConfigurationError, match="batch sizes must be ≥ 1"):
        plan_batch_sizes(4, (0, 2))


def _weight_pointers(graph):
    """Where the tensors a frozen graph holds as constants live in memory."""
    constants = graph.code_with_constants[1].const_mapping.values()
    return frozenset(
        t.data_ptr() for t in constants if isinstance(t, torch.Tensor) and t.numel() > 64
    )


def _param_bytes(model):
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_cpu_graphs_store_the_weights_once_and_share_them_when_loaded(tmp_path, classifier):
    from smneuron.artifact.build import example_inputs, traceable

    manifest = compile_artifact(
        tmp_path,
        classifier,
        task="text-classification",
        labels=["ham", "spam"],
        batch_sizes=(1, 2, 4),
        sequence_lengths=[8, 16],
        backend=CpuBackend(),
    )
    compiled = tmp_path / "compiled"
    weights = compiled / "weights.safetensors"
    assert manifest.files["shared"] == ["compiled/weights.safetensors"]
    # One copy of the parameters on disk; each graph file is only its code.
    assert weights.stat().st_size >= _param_bytes(classifier)
    graph_sizes = [p.stat().st_size for p in compiled.glob("*.pt")]
    assert len(graph_sizes) == 6
    inputs = example_inputs(4, 16, manifest.input_names)
    whole = CpuBackend().trace(traceable(classifier, manifest.task), inputs)
    torch.jit.save(whole, str(tmp_path / "whole.pt"))  # what a graph would be with its weights
    without_weights = (tmp_path / "whole.pt").stat().st_size - 0.9 * _param_bytes(classifier)
    assert max(graph_sizes) <= without_weights
    # Loaded, every graph uses the same tensors, and gives the eager model's answer.
    backend = CpuBackend()
    graphs = {
        key: backend.load(manifest.graph_path(tmp_path, key[1], key[0]))
        for key in manifest.graphs()
    }
    in_every_graph = frozenset.intersection(*(_weight_pointers(g) for g in graphs.values()))
    weights_count = sum(1 for p in classifier.parameters() if p.numel() > 64)
    assert len(in_every_graph) >= weights_count > 0  # the same tensors, not copies
    ids, mask = batch(2, 16, [16, 3])
    with torch.no_grad():
        expected = classifier(input_ids=ids, attention_mask=mask).logits
        got = graphs[(2, 16)](ids, mask, torch.zeros_like(ids))
    assert torch.max(torch.abs(got - expected)).item() <= 1e-4


def test_a_missing_shared_weights_file_is_an_incomplete_artifact(tmp_path, classifier):
    from smneuron.errors import ArtifactError

    manifest = compile_artifact(
        tmp_path,
        classifier,
        task="text-classification",
        labels=["ham", "spam"],
        batch_size=1,
        sequence_lengths=[8],
        backend=CpuBackend(),
    )
    (tmp_path / "compiled" / "weights.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing compiled/weights.safetensors"):
        check_files(tmp_path, read_manifest(tmp_path))
    assert manifest.files["shared"]


def test_saving_keeps_the_callers_graph_whole(tmp_path, classifier):
    backend = CpuBackend()
    from smneuron.artifact.build import traceable

    wrapper = traceable(classifier, "text-classification")
    ids, mask = batch(1, 8, [8])
    types = torch.zeros_like(ids)
    graph = backend.trace(wrapper, (ids, mask, types))
    with torch.no_grad():
        before = graph(ids, mask, types)
        backend.save(graph, tmp_path / "g.pt")
        after = graph(ids, mask, types)
    assert torch.equal(before, after)


def test_graphs_of_two_models_cannot_share_one_folder(tmp_path, classifier):
    from smneuron.artifact.build import example_inputs, traceable

    backend = CpuBackend()
    other = copy.deepcopy(classifier)
    with torch.no_grad():
        other.classifier.weight.add_(1.0)
    inputs = example_inputs(1, 8, ("input_ids", "attention_mask", "token_type_ids"))
    backend.save(
        backend.trace(traceable(classifier, "text-classification"), inputs), tmp_path / "a.pt"
    )
    with pytest.raises(ConfigurationError, match="traces of one model"):
        backend.save(
            backend.trace(traceable(other, "text-classification"), inputs), tmp_path / "b.pt"
        )


def test_a_whole_graph_from_an_older_artifact_still_loads(tmp_path, classifier):
    from smneuron.artifact.build import example_inputs, traceable

    inputs = example_inputs(1, 8, ("input_ids", "attention_mask", "token_type_ids"))
    backend = CpuBackend()
    whole = torch.jit.freeze(backend.trace(traceable(classifier, "text-classification"), inputs))
    torch.jit.save(whole, str(tmp_path / "b1-seq8.pt"))  # no weights.safetensors beside it
    graph = backend.load(tmp_path / "b1-seq8.pt")
    with torch.no_grad():
        assert torch.allclose(graph(*inputs), whole(*inputs))
