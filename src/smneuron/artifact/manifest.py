"""The serving artifact: manifest.json schema, read/write, and the host compatibility check.

Layout of ``/opt/ml/model`` (the content of model.tar.gz)::

    manifest.json            this schema (FORMAT_VERSION)
    config.json, model.safetensors, tokenizer files   the fine-tuned Hugging Face checkpoint
    compiled/seq{L}.pt       one static-shape TorchScript graph per sequence-length bucket
    code/inference.py        optional user handler overrides
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smneuron.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
COMPILED_DIR = "compiled"

# Tasks the artifact format knows; the serving task registry maps each to its pre/post code.
TASKS = (
    "text-classification",
    "feature-extraction",
    "token-classification",
    "question-answering",
    "fill-mask",
    "multiple-choice",
)


def compiled_name(sequence_length: int) -> str:
    return f"{COMPILED_DIR}/seq{sequence_length}.pt"


@dataclass(frozen=True)
class Manifest:
    """What ``serve`` needs to know about an artifact without loading it.

    Attributes:
        task: one of TASKS.
        labels: label names in logit order (classification tasks), else empty.
        backend: "cpu" or "neuron": who traced the graphs.
        batch_size: the static batch dimension of every compiled graph.
        sequence_lengths: the compiled buckets, ascending.
        input_names: graph inputs in call order (e.g. input_ids, attention_mask).
        cores_per_model: NeuronCores one loaded copy needs (1 on CPU).
        versions: package versions at compile time (torch, transformers, torch_neuronx, ...).
        files: relative paths: "compiled" maps str(bucket) -> graph file.
        target: hardware the graphs were compiled for ("cpu", "inf2", "trn1", ...).
        compiler_args: the compiler flags used (Neuron), for the record.
    """

    task: str
    backend: str
    batch_size: int
    sequence_lengths: tuple[int, ...]
    labels: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    cores_per_model: int = 1
    versions: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, Any] = field(default_factory=dict)
    target: str = "cpu"
    compiler_args: tuple[str, ...] = ()
    pooling: str | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ArtifactError(f"manifest: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.backend not in ("cpu", "neuron"):
            raise ArtifactError(f"manifest: unknown backend {self.backend!r}; known: cpu, neuron")
        if self.batch_size < 1:
            raise ArtifactError(f"manifest: batch_size must be ≥ 1, got {self.batch_size}")
        if not self.sequence_lengths or list(self.sequence_lengths) != sorted(
            set(self.sequence_lengths)
        ):
            raise ArtifactError(
                "manifest: sequence_lengths must be a non-empty ascending list without repeats, "
                f"got {list(self.sequence_lengths)}"
            )

    def graph_path(self, root: Path, sequence_length: int) -> Path:
        compiled = self.files.get("compiled", {})
        return root / compiled.get(str(sequence_length), compiled_name(sequence_length))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("sequence_lengths", "labels", "input_names", "compiler_args"):
            data[key] = list(data[key])
        data["versions"] = dict(self.versions)
        data["files"] = dict(self.files)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"manifest format_version {version!r} is not supported by this smneuron "
                f"(supports {FORMAT_VERSION}); rebuild the artifact with this image's `train` "
                "or `smneuron compile`"
            )
        try:
            return cls(
                task=data["task"],
                backend=data["backend"],
                batch_size=int(data["batch_size"]),
                sequence_lengths=tuple(int(x) for x in data["sequence_lengths"]),
                labels=tuple(data.get("labels") or ()),
                input_names=tuple(data.get("input_names") or ("input_ids", "attention_mask")),
                cores_per_model=int(data.get("cores_per_model", 1)),
                versions=dict(data.get("versions") or {}),
                files=dict(data.get("files") or {}),
                target=data.get("target", "cpu"),
                compiler_args=tuple(data.get("compiler_args") or ()),
                pooling=data.get("pooling"),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"manifest.json is missing or has a bad field: {err}") from err


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    """Write manifest.json atomically (a reader never sees half a file)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / MANIFEST
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(manifest.to_dict(), handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def read_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"no {MANIFEST} in {model_dir}: this is not an smneuron artifact. Produce one with "
            "the training image (`train`) or `smneuron compile --checkpoint DIR --output DIR`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path} is not valid JSON: {err}") from err
    return Manifest.from_dict(data)


def check_files(model_dir: Path, manifest: Manifest) -> None:
    """Every compiled graph named by the manifest must exist."""
    missing = [
        str(manifest.graph_path(model_dir, length).relative_to(model_dir))
        for length in manifest.sequence_lengths
        if not manifest.graph_path(model_dir, length).is_file()
    ]
    if missing:
        raise ArtifactError(
            f"artifact in {model_dir} is incomplete: missing {', '.join(missing)}; "
            "re-run the compile step (`smneuron compile`) or the training job"
        )


# Versions that must match exactly between compile time and load time, per backend.
# Neuron: a NEFF compiled by one neuronx-cc/torch-neuronx fails on another runtime with an
# opaque status, so refuse it up front. CPU TorchScript is checked on torch major.minor.
STRICT_VERSIONS = {"neuron": ("torch_neuronx", "neuronx_cc"), "cpu": ()}
MINOR_VERSIONS = {"neuron": ("torch",), "cpu": ("torch",)}


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def check_compatible(
    manifest: Manifest, host_backend: str, host_versions: Mapping[str, str]
) -> None:
    """Refuse an artifact that cannot run here, with a message that says what to do."""
    if manifest.backend != host_backend:
        raise ArtifactError(
            f"artifact was compiled for backend {manifest.backend!r} but this host runs "
            f"{host_backend!r}. Use the {manifest.backend} serving image, or recompile the "
            f"checkpoint for {host_backend} with `smneuron compile --backend {host_backend}`."
        )
    problems = []
    for name in STRICT_VERSIONS.get(host_backend, ()):
        built, here = manifest.versions.get(name), host_versions.get(name)
        if built and here and built != here:
            problems.append(f"{name} {built} (artifact) != {here} (host)")
    for name in MINOR_VERSIONS.get(host_backend, ()):
        built, here = manifest.versions.get(name), host_versions.get(name)
        if built and here and _major_minor(built) != _major_minor(here):
            problems.append(f"{name} {built} (artifact) != {here} (host)")
    if problems:
        raise ArtifactError(
            "artifact was compiled with other versions than this image has: "
            + "; ".join(problems)
            + ". Recompile it with this image (`smneuron compile`), or serve it with the image "
            "version that compiled it (see docs/compatibility.md)."
        )
