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
        check_files(tmp_path, manifest())


def test_backend_mismatch_says_which_image_to_use():
    with pytest.raises(ArtifactError, match="compiled for backend 'neuron'.*'cpu'"):
        check_compatible(manifest(backend="neuron"), "cpu", {})


def test_cpu_torch_minor_mismatch_is_refused_but_patch_is_fine():
    check_compatible(manifest(), "cpu", {"torch": "2.13.1"})
    with pytest.raises(ArtifactError, match=r"torch 2.13.0\+cpu \(artifact\) != 2.12.0"):
        check_compatible(manifest(), "cpu", {"torch": "2.12.0"})
