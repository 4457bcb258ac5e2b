"""manifest.json: schema validation, atomic round trip, file checks, host compatibility."""

from __future__ import annotations

import json

import pytest

from smneuron.artifact.manifest import (
    FORMAT_VERSION,
    Manifest,
    check_compatible,
    check_files,
    read_manifest,
    write_manifest,
)
from smneuron.errors import ArtifactError


def manifest(**overrides) -> Manifest:
    values = dict(
        task="text-classification",
        backend="cpu",
        batch_size=4,
        sequence_lengths=(32, 64),
        labels=("ham", "spam"),
        versions={"torch": "2.13.0+cpu", "transformers": "4.57.6"},
        files={"compiled": {"32": "compiled/seq32.pt", "64": "compiled/seq64.pt"}},
    )
    values.update(overrides)
    return Manifest(**values)


def test_round_trip_keeps_every_field(tmp_path):
    original = manifest(pooling=None, compiler_args=("--auto-cast", "matmult"))
    write_manifest(tmp_path, original)
    assert read_manifest(tmp_path) == original
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert data["sequence_lengths"] == [32, 64]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".manifest-")]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"task": "translation"}, "unknown task 'translation'"),
        ({"backend": "tpu"}, "unknown backend 'tpu'"),
        ({"batch_size": 0}, "batch_size must be ≥ 1"),
        ({"sequence_lengths": (64, 32)}, "ascending"),
        ({"sequence_lengths": ()}, "non-empty"),
    ],
)
def test_invalid_manifest_is_refused(overrides, fragment):
    with pytest.raises(ArtifactError, match=fragment):
        manifest(**overrides)


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(ArtifactError, match="not an smneuron artifact.*smneuron compile"):
        read_manifest(tmp_path)


def test_other_format_version_is_refused(tmp_path):
    data = manifest().to_dict() | {"format_version": FORMAT_VERSION + 1}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="format_version"):
        read_manifest(tmp_path)


def test_check_files_names_the_missing_graph(tmp_path):
    (tmp_path / "compiled").mkdir()
    (tmp_path / "compiled" / "seq32.pt").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="missing compiled/seq64.pt"):
        check_files(tmp_path, manifest(format_version=1))


# What `train` / `smneuron compile` wrote before batch-size buckets (format 1).
FORMAT_1 = {
    "format_version": 1,
    "task": "text-classification",
    "backend": "cpu",
    "batch_size": 8,
    "sequence_lengths": [32, 64],
    "labels": ["ham", "spam"],
    "files": {"compiled": {"32": "compiled/seq32.pt", "64": "compiled/seq64.pt"}},
    "versions": {"torch": "2.13.0+cpu"},
}


def test_format_1_manifest_reads_as_one_batch_size_with_its_graph_files(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(FORMAT_1))
    old = read_manifest(tmp_path)
    assert (old.batch_size, old.batch_sizes) == (8, (8,))
    assert old.graphs() == [(8, 32), (8, 64)]
    assert old.graph_path(tmp_path, 64) == tmp_path / "compiled" / "seq64.pt"
    assert old.graph_path(tmp_path, 64, 8) == tmp_path / "compiled" / "seq64.pt"
    (tmp_path / "compiled").mkdir()
    for name in ("seq32.pt", "seq64.pt"):
        (tmp_path / "compiled" / name).write_bytes(b"x")
    check_files(tmp_path, old)
    # Written back, it stays format 1 with the same files: still valid for older servers.
    write_manifest(tmp_path, old)
    assert read_manifest(tmp_path) == old
    assert json.loads((tmp_path / "manifest.json").read_text())["format_version"] == 1


def test_format_2_records_one_graph_per_batch_size_and_bucket(tmp_path):
    files = {
        f"{batch}x{length}": f"compiled/b{batch}-seq{length}.pt"
        for batch in (1, 2, 4)
        for length in (32, 64)
    }
    new = manifest(batch_size=4, batch_sizes=(1, 2, 4), files={"compiled": files})
    write_manifest(tmp_path, new)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION == 2
    assert data["batch_sizes"] == [1, 2, 4] and data["batch_size"] == 4
    again = read_manifest(tmp_path)
    assert again == new
    assert again.graphs() == [(1, 32), (1, 64), (2, 32), (2, 64), (4, 32), (4, 64)]
    assert again.graph_path(tmp_path, 64, 2) == tmp_path / "compiled" / "b2-seq64.pt"
    assert again.graph_path(tmp_path, 32) == tmp_path / "compiled" / "b4-seq32.pt"
    (tmp_path / "compiled").mkdir()
    for name in files.values():
        if name != "compiled/b2-seq64.pt":
            (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"missing compiled/b2-seq64.pt;"):
        check_files(tmp_path, again)


def test_a_single_batch_size_defaults_batch_sizes():
    assert manifest(batch_size=4).batch_sizes == (4,)


@pytest.mark.parametrize(
    "sizes", [(4, 2), (1, 1, 4), (0, 4), (1, 2)], ids=["descending", "repeat", "zero", "not-max"]
)
def test_bad_batch_sizes_are_refused(sizes):
    with pytest.raises(ArtifactError, match="batch_sizes must be ascending"):
        manifest(batch_size=4, batch_sizes=sizes)


def test_backend_mismatch_says_which_image_to_use():
    with pytest.raises(ArtifactError, match="compiled for backend 'neuron'.*'cpu'"):
        check_compatible(manifest(backend="neuron"), "cpu", {})


def test_cpu_torch_minor_mismatch_is_refused_but_patch_is_fine():
    check_compatible(manifest(), "cpu", {"torch": "2.13.1"})
    with pytest.raises(ArtifactError, match=r"torch 2.13.0\+cpu \(artifact\) != 2.12.0"):
        check_compatible(manifest(), "cpu", {"torch": "2.12.0"})
