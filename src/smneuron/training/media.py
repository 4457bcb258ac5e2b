"""Image and audio classification training: files under the channels -> Trainer -> artifact.

Two layouts per channel:

- folder per label: ``train/<label>/*.jpg`` (``.png``, ``.webp``...; audio: ``*.wav``,
  ``.flac``, ``.mp3``, ``.ogg``);
- a manifest: CSV or JSON Lines files with a file column (paths relative to the manifest) and
  a label column (``label_column``).

The checkpoint's image processor (or feature extractor) prepares the examples and is saved
with the fine-tuned model, so ``serve`` prepares requests exactly as training did.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smneuron.artifact.manifest import AUDIO_TASKS, IMAGE_TASKS
from smneuron.errors import ConfigurationError, DataError
from smneuron.job import TrainingEnv
from smneuron.training.checkpoints import TerminationFlag
from smneuron.training.hyperparameters import TrainingHyperparameters

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
EXTENSIONS = {
    "image-classification": IMAGE_EXTENSIONS,
    "masked-image-modeling": IMAGE_EXTENSIONS,
    "audio-classification": (".wav", ".flac", ".mp3", ".ogg"),
}
LABELLED = ("image-classification", "audio-classification")
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".json", ".ndjson")
FILE_COLUMNS = ("file_name", "file", "path", "image", "audio")


@dataclass(frozen=True)
class Example:
    path: Path
    label: str


# --------------------------------------------------------------------------------------------
# Finding the examples


def _visible(directory: Path) -> list[Path]:
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def find_examples(
    name: str, channels: Mapping[str, Path], task: str, file_column: str, label_column: str
) -> list[Example]:
    """The (file, label) examples of channel ``name``: from its manifests, else its folders."""
    directory = channels.get(name)
    if directory is None or not directory.is_dir():
        present = ", ".join(sorted(c for c, p in channels.items() if p.is_dir())) or "none"
        raise DataError(
            f"channel {name!r} not found (channels present: {present}); add it to the training "
            "job's inputs or change the *_channel hyperparameter"
        )
    files = _visible(directory)
    # Manifests sit at the channel's top level: a JSON file inside a label folder is data.
    manifests = [
        p for p in files if p.suffix.lower() in MANIFEST_EXTENSIONS and p.parent == directory
    ]
    if manifests:
        examples = [
            example
            for manifest in manifests
            for example in _manifest_examples(
                name, manifest, file_column, None if task not in LABELLED else label_column
            )
        ]
    else:
        examples = _folder_examples(name, directory, files, task)
    if not examples:
        raise DataError(f"channel {name!r} ({directory}) holds no examples")
    log.info("channel %s: %d %s examples", name, len(examples), task.split("-")[0])
    return examples


def _folder_examples(name: str, directory: Path, files: list[Path], task: str) -> list[Example]:
    known = EXTENSIONS[task]
    media = [p for p in files if p.suffix.lower() in known]
    if not media:
        raise DataError(
            f"channel {name!r} ({directory}) has no {'/'.join(known)} files and no CSV/JSON "
            "Lines manifest; put the files in one folder per label (train/<label>/...)"
        )
    if task == "masked-image-modeling":  # no labels: every image, in any folder
        return [Example(p, "") for p in media]
    loose = [p.name for p in media if len(p.relative_to(directory).parts) < 2]
    if loose:
        raise DataError(
            f"channel {name!r}: {', '.join(loose[:5])} are not in a label folder; put each "
            "file in a folder named after its label (train/<label>/...), or add a manifest"
        )
    return [Example(p, p.relative_to(directory).parts[0]) for p in media]


def _manifest_rows(name: str, manifest: Path) -> list[dict[str, Any]]:
    text = manifest.read_text(encoding="utf-8-sig")
    if manifest.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"channel {name!r}: {manifest.name} line {number}: {err}") from err
        if not isinstance(row, dict):
            raise DataError(f"channel {name!r}: {manifest.name} line {number} is not an object")
        rows.append(row)
    return rows


def _manifest_examples(
    name: str, manifest: Path, file_column: str, label_column: str | None
) -> list[Example]:
    rows = _manifest_rows(name, manifest)
    if not rows:
        raise DataError(f"channel {name!r}: {manifest.name} holds no rows")
    columns = list(rows[0])
    column = file_column or next((c for c in FILE_COLUMNS if c in columns), "")
    for needed, what in ((column, "file_column"), (label_column, "label_column")):
        if what == "label_column" and label_column is None:
            continue
        if not needed or needed not in columns:
            wanted = needed or " / ".join(FILE_COLUMNS)
            raise DataError(
                f"channel {name!r}: {manifest.name} has no column {wanted!r}; columns are: "
                f"{', '.join(columns)} (set {what})"
            )
    examples = []
    for number, row in enumerate(rows, start=1):
        relative = row.get(column)
        label = row.get(label_column) if label_column is not None else ""
        if not isinstance(relative, str) or not relative.strip() or label is None:
            raise DataError(
                f"channel {name!r}: {manifest.name} row {number} needs a {column!r} path and a "
                f"{label_column!r} label"
            )
        path = (manifest.parent / relative.strip()).resolve()
        if not path.is_file():
            raise DataError(
                f"channel {name!r}: {manifest.name} row {number}: {relative!r} not found "
                "(paths are relative to the manifest)"
            )
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        examples.append(Example(path, str(label).strip()))
    return examples


def label_names(examples: Sequence[Example], given: Sequence[str]) -> tuple[str, ...]:
    if given:
        return tuple(given)
    names = tuple(sorted({example.label for example in examples}))
    if len(names) < 2:
        raise DataError(f"the training data has {len(names)} label(s) {list(names)}; need ≥ 2")
    return names


def label_ids(name: str, examples: Sequence[Example], labels: Sequence[str]) -> list[int]:
    index = {label: i for i, label in enumerate(labels)}
    for example in examples:
        if example.label not in index:
            raise DataError(
                f"channel {name!r}: {example.path.name} has label {example.label!r}, not one "
                f"of the labels ({', '.join(labels)}); fix the data or the labels hyperparameter"
            )
    return [index[example.label] for example in examples]


# --------------------------------------------------------------------------------------------
# Datasets and collators (plain map-style datasets: the Trainer's DataLoader takes them)


class ImageExamples:
    """``{"pixel_values", "labels"}`` per image, prepared by the checkpoint's processor."""

    def __init__(self, examples: Sequence[Example], ids: Sequence[int], processor: Any) -> None:
        self.examples, self.ids, self.processor = list(examples), list(ids), processor

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        from smneuron.artifact.media import image_pixels
        from smneuron.serving.images import decode_image

        example = self.examples[index]
        try:
            image = decode_image(example.path.read_bytes(), where=str(example.path.name))
        except Exception as err:
            raise DataError(f"cannot read image {example.path}: {err}") from err
        pixels = image_pixels(self.processor, [image])[0]
        return {"pixel_values": torch.from_numpy(pixels), "labels": self.ids[index]}


class MaskedImages:
    """``{"pixel_values", "bool_masked_pos"}`` per image: a fresh random ``ratio`` of the
    ``patches`` masked at every read (SimMIM-style pre-training)."""

    def __init__(
        self, examples: Sequence[Example], processor: Any, patches: int, ratio: float, seed: int
    ) -> None:
        self.images = ImageExamples(examples, [0] * len(examples), processor)
        self.patches, self.ratio, self.seed, self.reads = patches, ratio, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        import torch

        self.reads += 1
        rng = np.random.default_rng([self.seed, index, self.reads])
        mask = np.zeros(self.patches, dtype=bool)
        mask[rng.permutation(self.patches)[: max(1, round(self.ratio * self.patches))]] = True
        pixels = self.images[index]["pixel_values"]
        return {"pixel_values": pixels, "bool_masked_pos": torch.from_numpy(mask)}


class AudioExamples:
    """``{"audio", "labels"}`` per clip: mono, at the extractor's rate, cut to ``max_samples``."""

    def __init__(
        self, examples: Sequence[Example], ids: Sequence[int], rate: int, max_samples: int
    ) -> None:
        self.examples, self.ids = list(examples), list(ids)
        self.rate, self.max_samples = rate, max_samples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from smneuron.serving.audio import decode_audio

        example = self.examples[index]
        try:
            clip = decode_audio(example.path.read_bytes(), self.rate, self.max_samples)
        except Exception as err:
            raise DataError(f"cannot read audio {example.path}: {err}") from err
        return {"audio": clip, "labels": self.ids[index]}


class AudioCollator:
    """Pads a batch to the smallest bucket that holds its longest clip (the largest bucket for
    static shapes), as ``serve`` pads a request, through the feature extractor."""

    def __init__(self, processor: Any, buckets: Sequence[int], static_shapes: bool) -> None:
        self.processor, self.buckets, self.static = processor, tuple(buckets), static_shapes

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from smneuron.artifact.media import audio_features

        longest = max(len(row["audio"]) for row in rows)
        bucket = self.buckets[-1]
        if not self.static:
            bucket = next(b for b in self.buckets if b >= longest)
        features = audio_features(self.processor, [row["audio"] for row in rows], bucket)
        batch = {key: torch.from_numpy(value) for key, value in features.items()}
        if "attention_mask" in batch:
            batch["attention_mask"] = batch["attention_mask"].long()
        batch["labels"] = torch.tensor([row["labels"] for row in rows], dtype=torch.long)
        return batch


# --------------------------------------------------------------------------------------------
# The job


def load_pretrained(
    source: str,
    labels: tuple[str, ...],
    hps: TrainingHyperparameters,
    *,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """The processor and the task's model with a head sized for ``labels``."""
    import transformers

    from smneuron.artifact.media import MODEL_CLASSES, load_processor
    from smneuron.env import remote_code_hint

    transformers.set_seed(hps.seed)
    local_only = not hps.allow_hub_download
    processor = load_processor(
        source, hps.task, trust_remote_code=trust_remote_code, local_only=local_only
    )
    head: dict[str, Any] = {}
    if labels:  # a classification head sized for the labels replaces any other
        head = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)},
            "ignore_mismatched_sizes": True,
        }
    try:
        model = getattr(transformers, MODEL_CLASSES[hps.task]).from_pretrained(
            source, local_files_only=local_only, trust_remote_code=trust_remote_code, **head
        )
    except (OSError, ValueError) as err:
        raise ConfigurationError(
            f"cannot load a {hps.task} model from {source}: {remote_code_hint(err)}"
        ) from err
    return processor, model


def train(
    env: TrainingEnv, hps: TrainingHyperparameters, flag: TerminationFlag, backend: str
) -> Any:
    """Fine-tune an image or audio classifier; on rank 0 write the serving artifact."""
    from smneuron.artifact.media import duration_buckets, sampling_rate_of
    from smneuron.training import trainer as text

    source = text.resolve_model_source(hps, env.channels)
    found = {
        "train": find_examples(
            hps.train_channel, env.channels, hps.task, hps.file_column, hps.label_column
        )
    }
    if hps.validation_channel:
        found["validation"] = find_examples(
            hps.validation_channel, env.channels, hps.task, hps.file_column, hps.label_column
        )
    labelled = hps.task in LABELLED
    labels = label_names(found["train"], hps.labels) if labelled else ()
    ids = {
        split: label_ids(getattr(hps, f"{split}_channel"), examples, labels) if labelled else []
        for split, examples in found.items()
    }
    text._quiet_transformers()
    on_neuron = backend == "neuron"
    precompile_run = text._start_neuron_process() if on_neuron else False
    log.info("pretrained model: %s; labels: %s", source, ", ".join(labels))
    processor, model = load_pretrained(source, labels, hps, trust_remote_code=env.trust_remote_code)
    datasets: dict[str, ImageExamples | AudioExamples | MaskedImages]
    if hps.task == "masked-image-modeling":
        from smneuron.artifact.media import image_size_of, patch_grid

        rows, columns = patch_grid(model, image_size_of(processor))
        datasets = {
            s: MaskedImages(found[s], processor, rows * columns, hps.mask_ratio, hps.seed)
            for s in found
        }
        collator = None
    elif hps.task in IMAGE_TASKS:
        datasets = {s: ImageExamples(found[s], ids[s], processor) for s in found}
        collator = None  # the default stacks pixel_values and labels
    elif hps.task in AUDIO_TASKS:
        rate = sampling_rate_of(processor)
        buckets = duration_buckets(hps.audio_durations, rate)
        datasets = {s: AudioExamples(found[s], ids[s], rate, buckets[-1]) for s in found}
        collator = AudioCollator(processor, buckets, static_shapes=on_neuron)
    else:  # pragma: no cover - guarded by the caller
        raise ConfigurationError(f"{hps.task} is not an image or audio task")
    return _fit(
        env, hps, flag, model, processor, datasets, collator, labels, backend, precompile_run
    )


def _fit(
    env: TrainingEnv,
    hps: TrainingHyperparameters,
    flag: TerminationFlag,
    model: Any,
    processor: Any,
    datasets: Mapping[str, Any],
    collator: Any,
    labels: tuple[str, ...],
    backend: str,
    precompile_run: bool,
) -> Any:
    """Train (resuming from the latest checkpoint), then publish on rank 0 (as the text
    trainer does, ``training.trainer._fit``)."""
    import contextlib
    import os

    from transformers import PrinterCallback

    from smneuron.env import ENV
    from smneuron.training import trainer as text
    from smneuron.training.checkpoints import checkpoint_callback, latest_checkpoint, trainer_class
    from smneuron.training.output import write_artifact, write_metrics

    paths = env.paths
    evaluate = "validation" in datasets and not precompile_run
    with contextlib.ExitStack() as stack:
        output_dir = paths.checkpoints
        if precompile_run:  # its checkpoints never go where the real run resumes from
            scratch = tempfile.TemporaryDirectory(prefix="smneuron-precompile-")
            output_dir = Path(stack.enter_context(scratch))
        args = text.training_arguments(
            # Examples of one shape: length grouping (it reads input_ids) has nothing to group.
            replace(hps, group_by_length=False),
            output_dir,
            validation=evaluate,
            distributed=int(os.environ.get(ENV.WORLD_SIZE, "1")) > 1,
            on_cpu=backend != "neuron",
            max_steps=text.precompile_steps(hps) if precompile_run else None,
        )
        # The datasets hand over the model's inputs (and raw audio for the collator) only.
        args.remove_unused_columns = False
        if not labels:  # masked image modeling: the mask makes the model compute its loss,
            # so naming it as the "label" gives an eval_loss; no predictions are gathered
            args.label_names = ["bool_masked_pos"]
            args.prediction_loss_only = True
        trainer = trainer_class()(
            model=model,
            args=args,
            train_dataset=datasets["train"],
            eval_dataset=datasets.get("validation") if evaluate else None,
            processing_class=processor,
            data_collator=collator,
            compute_metrics=text.compute_metrics if evaluate and labels else None,
            callbacks=[text.metrics_callback(), checkpoint_callback(flag)],
        )
        trainer.remove_callback(PrinterCallback)  # it prints raw dicts; we log key=value lines
        resume = None if precompile_run else latest_checkpoint(paths.checkpoints)
        seconds = text._run(trainer, resume, flag)
    step = trainer.state.global_step
    text._raise_if_stopped(flag, step, paths.checkpoints, precompile_run)
    log.info("training took %.1fs (%d steps)", seconds, step)
    if precompile_run:
        return text.TrainResult({}, step, labels, None, None, precompile_run=True)
    metrics = text._final_metrics(trainer) if evaluate else {}
    artifact = None
    if trainer.is_world_process_zero():
        write_metrics(paths, metrics, step)
        artifact = write_artifact(trainer.model, processor, hps, labels, paths, flag, backend)
        log.info("artifact written to %s", artifact)
    return text.TrainResult(metrics, step, labels, resume, artifact)
