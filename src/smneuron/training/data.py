"""Training data from SageMaker channels: find the files, load them with `datasets`, check them.

Every problem a user can cause (missing channel, empty or malformed file, missing column,
unknown label) is a DataError whose message names the channel, file, column or value.
File discovery is plain pathlib so those checks run before the `datasets` import.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smneuron.errors import DataError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

# File extension -> format; compression suffixes are looked through.
EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSION = (".gz", ".bz2", ".xz", ".zst")
# `datasets` builder name per format.
BUILDERS = {"csv": "csv", "jsonl": "json", "parquet": "parquet"}


@dataclass(frozen=True)
class ChannelFiles:
    channel: str
    files: tuple[Path, ...]
    data_format: str


@dataclass(frozen=True)
class Splits:
    """Encoded splits: ``train``/``validation`` carry ``labels`` ints in ``labels_names`` order."""

    train: datasets.Dataset
    validation: datasets.Dataset | None
    label_names: tuple[str, ...]


def _format_of(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSION:
        suffixes.pop()
    return EXTENSIONS.get(suffixes[-1]) if suffixes else None


def channel_files(
    name: str, channels: Mapping[str, Path], data_format: str = "auto"
) -> ChannelFiles:
    """The data files of channel ``name`` (every file under its directory, hidden ones aside)."""
    directory = channels.get(name)
    if directory is None or not directory.is_dir():
        present = ", ".join(sorted(c for c, p in channels.items() if p.is_dir())) or "none"
        raise DataError(
            f"channel {name!r} not found (channels present: {present}); add it to the training "
            "job's inputs or change the *_channel hyperparameter"
        )
    files = sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )
    if not files:
        raise DataError(f"channel {name!r} ({directory}) has no data files")
    if data_format == "auto":
        formats = {path: _format_of(path) for path in files}
        unknown = [p.name for p, f in formats.items() if f is None]
        if unknown:
            raise DataError(
                f"channel {name!r}: cannot tell the format of {', '.join(unknown[:5])} from the "
                f"extension (known: {', '.join(sorted(EXTENSIONS))}); rename the files or set "
                "data_format"
            )
        found = sorted({f for f in formats.values() if f is not None})
        if len(found) > 1:
            raise DataError(
                f"channel {name!r} mixes formats ({', '.join(found)}); use one format per channel"
            )
        data_format = found[0]
    empty = [p.name for p in files if p.stat().st_size == 0]
    if empty:
        raise DataError(f"channel {name!r}: file {', '.join(empty)} is empty")
    return ChannelFiles(name, tuple(files), data_format)


def _short(err: BaseException) -> str:
    """The innermost cause's message, on one line."""
    inner: BaseException | None = err
    while inner is not None:
        err, inner = inner, inner.__cause__ or inner.__context__
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def load_channel(found: ChannelFiles, cache_dir: Path | None = None) -> datasets.Dataset:
    """Load one channel's files into a single `datasets.Dataset`."""
    import datasets

    datasets.disable_progress_bars()
    names = ", ".join(p.name for p in found.files[:5])
    # Keep "NA", "null" and empty cells as text: a message may say exactly that.
    options = {"keep_default_na": False} if found.data_format == "csv" else {}
    try:
        dataset = datasets.load_dataset(
            BUILDERS[found.data_format],
            data_files=[str(p) for p in found.files],
            split="train",
            cache_dir=str(cache_dir) if cache_dir else None,
            **options,
        )
    except Exception as err:  # the builders raise many types; all mean "cannot read this"
        if "corresponds to no data" in str(err):  # datasets' words for a split with no rows
            raise DataError(f"channel {found.channel!r}: {names} holds no rows") from err
        raise DataError(
            f"channel {found.channel!r}: cannot read {names} as {found.data_format}: {_short(err)}"
        ) from err
    if len(dataset) == 0:
        raise DataError(f"channel {found.channel!r}: {names} holds no rows")
    log.info(
        "channel %s: %d rows from %d %s file(s)",
        found.channel,
        len(dataset),
        len(found.files),
        found.data_format,
    )
    return dataset


def check_columns(dataset: datasets.Dataset, channel: str, columns: Sequence[str]) -> None:
    present = list(dataset.column_names)
    for column in columns:
        if column not in present:
            raise DataError(
                f"channel {channel!r}: column {column!r} not found; columns are: "
                f"{', '.join(present)} (set text_column / label_column)"
            )


def _label_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def resolve_labels(dataset: datasets.Dataset, label_column: str, given: Sequence[str]) -> tuple:
    """The label names in logit order: ``given``, else the sorted distinct training values."""
    if given:
        return tuple(given)
    values = sorted({t for v in dataset[label_column] if (t := _label_text(v)) is not None})
    if len(values) < 2:
        raise DataError(
            f"column {label_column!r} has {len(values)} distinct value(s) {values}; "
            "a classifier needs at least 2"
        )
    return tuple(values)


def encode_labels(
    dataset: datasets.Dataset, channel: str, label_column: str, labels: Sequence[str]
) -> datasets.Dataset:
    """Add an int ``labels`` column; a value outside ``labels`` is a DataError naming it."""
    index = {name: i for i, name in enumerate(labels)}
    ids = []
    for row, value in enumerate(dataset[label_column]):
        text = _label_text(value)
        if text not in index:
            raise DataError(
                f"channel {channel!r}, row {row + 1}: label {value!r} is not one of the labels "
                f"({', '.join(labels)}); fix the data or the labels hyperparameter"
            )
        ids.append(index[text])
    if "labels" in dataset.column_names:
        dataset = dataset.remove_columns("labels")
    return dataset.add_column("labels", ids)


def check_text(dataset: datasets.Dataset, channel: str, column: str) -> None:
    for row, value in enumerate(dataset[column]):
        if not isinstance(value, str):
            raise DataError(
                f"channel {channel!r}, row {row + 1}: column {column!r} holds {value!r}, not text"
            )


def load_splits(
    channels: Mapping[str, Path],
    *,
    train_channel: str,
    validation_channel: str,
    text_column: str,
    label_column: str,
    text_pair_column: str = "",
    labels: Sequence[str] = (),
    data_format: str = "auto",
    cache_dir: Path | None = None,
) -> Splits:
    """Find, load, check and label-encode the train (and validation) channels."""
    found = [channel_files(train_channel, channels, data_format)]
    if validation_channel:
        found.append(channel_files(validation_channel, channels, data_format))
    text_columns = [text_column] + ([text_pair_column] if text_pair_column else [])
    loaded = []
    for files in found:
        dataset = load_channel(files, cache_dir)
        check_columns(dataset, files.channel, [*text_columns, label_column])
        for column in text_columns:
            check_text(dataset, files.channel, column)
        loaded.append(dataset)
    label_names = resolve_labels(loaded[0], label_column, labels)
    encoded = [
        encode_labels(dataset, files.channel, label_column, label_names)
        for dataset, files in zip(loaded, found, strict=True)
    ]
    return Splits(encoded[0], encoded[1] if len(encoded) > 1 else None, label_names)
