"""The serving artifact: manifest.json schema, read/write, and the host compatibility check.

Layout of ``/opt/ml/model`` (the content of model.tar.gz)::

    manifest.json            this schema (FORMAT_VERSION)
    config.json, model.safetensors, tokenizer files   the fine-tuned Hugging Face checkpoint
    compiled/b{B}-seq{L}.pt  one static-shape TorchScript graph per (batch size, sequence bucket)
    compiled/weights.safetensors   CPU: the graphs' parameters, stored once for all of them
    code/inference.py        optional user handler overrides

Format 1 (one batch size, ``compiled/seq{L}.pt``) is still read: its ``batch_size`` is the one
compiled batch size.
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

FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)  # format 1: one batch size per artifact, graphs keyed by bucket
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
    "next-sentence-prediction",
    "causal-lm",
    "seq2seq",
    "image-classification",
    "audio-classification",
    "masked-image-modeling",
)
# Tasks whose graphs take images or audio instead of tokens (``smneuron.artifact.media``):
# images have one bucket, ``image_size`` (height × width pixels); audio buckets are samples at
# ``sampling_rate``.
IMAGE_TASKS = ("image-classification", "masked-image-modeling")
AUDIO_TASKS = ("audio-classification",)
MEDIA_TASKS = IMAGE_TASKS + AUDIO_TASKS


def compiled_name(sequence_length: int, batch_size: int | None = None) -> str:
    """A graph's file: ``compiled/b{B}-seq{L}.pt`` (format 1, no batch: ``compiled/seq{L}.pt``)."""
    if batch_size is None:
        return f"{COMPILED_DIR}/seq{sequence_length}.pt"
    return f"{COMPILED_DIR}/b{batch_size}-seq{sequence_length}.pt"


def graph_key(batch_size: int, sequence_length: int) -> str:
    """The key of a graph in ``files["compiled"]``: ``"{batch}x{length}"``."""
    return f"{batch_size}x{sequence_length}"


@dataclass(frozen=True)
class Manifest:
    """What ``serve`` needs to know about an artifact without loading it.

    Attributes:
        task: one of TASKS.
        labels: label names in logit order (classification tasks), else empty.
        backend: "cpu" or "neuron": who traced the graphs.
        batch_size: the largest compiled batch size (the most rows one forward takes).
        sequence_lengths: the compiled buckets, ascending.
        batch_sizes: every compiled batch size, ascending, ending with ``batch_size``; one
            graph per (batch size, bucket). Empty when constructed: ``(batch_size,)``.
        input_names: graph inputs in call order (e.g. input_ids, attention_mask).
        cores_per_model: NeuronCores one loaded copy needs (1 on CPU).
        versions: package versions at compile time (torch, transformers, torch_neuronx, ...).
        files: relative paths: "compiled" maps ``graph_key(batch, bucket)`` -> graph file
            (format 1: str(bucket) -> graph file); "shared" lists files every graph needs
            (the CPU backend's one copy of the weights).
        target: hardware the graphs were compiled for ("cpu", "inf2", "trn1", ...).
        compiler_args: the compiler flags used (Neuron), for the record.
        max_masks: fill-mask: mask tokens one input may hold (the graph's ``mask_positions``
            input is ``[batch, max_masks]``).
        choices: multiple-choice: the compiled number of choices (inputs
            ``[batch, choices, sequence]``).
        task_parameters: shape parameters of the task that serving follows (question
            answering: ``doc_stride``, the tokens two windows of a long context share;
            generation: ``max_total_length``, ``engine``..., see ``artifact.generation``).
        image_size: image tasks: (height, width) of the pixels every graph takes; the one
            bucket in ``sequence_lengths`` is height × width.
        sampling_rate: audio tasks: samples per second; ``sequence_lengths`` are samples.
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
    max_masks: int | None = None
    choices: int | None = None
    batch_sizes: tuple[int, ...] = ()
    task_parameters: Mapping[str, Any] = field(default_factory=dict)
    image_size: tuple[int, ...] = ()
    sampling_rate: int = 0
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
        sizes = tuple(self.batch_sizes) or (self.batch_size,)
        if list(sizes) != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] != self.batch_size:
            raise ArtifactError(
                "manifest: batch_sizes must be ascending, without repeats, ≥ 1, and end with "
                f"batch_size {self.batch_size}; got {list(sizes)}"
            )
        object.__setattr__(self, "batch_sizes", sizes)
        if self.task in IMAGE_TASKS and len(self.image_size) != 2:
            raise ArtifactError(
                f"manifest: {self.task} needs image_size [height, width], got "
                f"{list(self.image_size)}"
            )
        if self.task in AUDIO_TASKS and self.sampling_rate < 1:
            raise ArtifactError(f"manifest: {self.task} needs a sampling_rate ≥ 1")

    def graphs(self) -> list[tuple[int, int]]:
        """Every compiled (batch size, sequence length), smallest batch first."""
        return [(batch, length) for batch in self.batch_sizes for length in self.sequence_lengths]

    def graph_path(self, root: Path, sequence_length: int, batch_size: int | None = None) -> Path:
        """The file of the graph for ``sequence_length`` at ``batch_size`` (default: largest)."""
        batch = self.batch_size if batch_size is None else batch_size
        compiled = self.files.get("compiled", {})
        named = compiled.get(graph_key(batch, sequence_length))
        if named is None and self.format_version < 2 and batch == self.batch_size:
            named = compiled.get(str(sequence_length), compiled_name(sequence_length))
        return root / (named or compiled_name(sequence_length, batch))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in (
            "sequence_lengths",
            "labels",
            "input_names",
            "compiler_args",
            "batch_sizes",
            "image_size",
        ):
            data[key] = list(data[key])
        data["versions"] = dict(self.versions)
        data["files"] = dict(self.files)
        data["task_parameters"] = dict(self.task_parameters)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        version = data.get("format_version")
        if version not in READ_VERSIONS:
            raise ArtifactError(
                f"manifest format_version {version!r} is not supported by this smneuron "
                f"(reads {', '.join(map(str, READ_VERSIONS))}); rebuild the artifact with this "
                "image's `train` or `smneuron compile`, or serve it with a newer image"
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
                max_masks=_optional_int(data.get("max_masks")),
                choices=_optional_int(data.get("choices")),
                # Format 1 has one batch size: batch_size, the default.
                batch_sizes=tuple(int(x) for x in data.get("batch_sizes") or ()),
                task_parameters=dict(data.get("task_parameters") or {}),
                image_size=tuple(int(x) for x in data.get("image_size") or ()),
                sampling_rate=int(data.get("sampling_rate") or 0),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"manifest.json is missing or has a bad field: {err}") from err


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


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
    """Every compiled graph named by the manifest, and every file they share, must exist."""
    missing = [
        str(manifest.graph_path(model_dir, length, batch).relative_to(model_dir))
        for batch, length in manifest.graphs()
        if not manifest.graph_path(model_dir, length, batch).is_file()
    ]
    missing += [
        name for name in manifest.files.get("shared", ()) if not (model_dir / name).is_file()
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
