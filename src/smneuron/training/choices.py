"""Multiple-choice training data: a context, a list of choices and the index of the right one.

Each row holds the context or question (``text_column``, default ``text``), its choices
(``choices_column``, default ``choices``: a list in JSON Lines and Parquet, a JSON array in
CSV) and the right choice's index (``label_column``, default ``label``, from 0). Every row has
the same number of choices: the compiled graph takes exactly that many
(``[batch, choices, sequence]``). Each (context, choice) pair is tokenized as
``[CLS] context [SEP] choice [SEP]``; the metric lines carry ``eval_accuracy``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smneuron.errors import DataError
from smneuron.training.data import Splits, channel_files, check_columns, load_channel

CONTEXT = "context"
CHOICES = "choices"


def _choices(value: Any, channel: str, row: int, column: str) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(
                f"channel {channel!r}, row {row}: column {column!r} is not a JSON array of "
                f"choices: {err}"
            ) from err
    if (
        not isinstance(value, list | tuple)
        or len(value) < 2
        or not all(isinstance(choice, str) for choice in value)
    ):
        raise DataError(
            f"channel {channel!r}, row {row}: column {column!r} must hold a list of at least 2 "
            'text choices (JSON Lines / Parquet: a list; CSV: a JSON array like ["a", "b"])'
        )
    return list(value)


def _label(value: Any, channel: str, row: int, column: str, count: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise DataError(
            f"channel {channel!r}, row {row}: label {value!r} in {column!r} is not the index of "
            f"a choice (0 to {count - 1})"
        )
    return value


def load_choice_splits(
    channels: Mapping[str, Path],
    *,
    train_channel: str,
    validation_channel: str,
    text_column: str,
    choices_column: str,
    label_column: str,
    data_format: str = "auto",
    cache_dir: Path | None = None,
) -> tuple[Splits, int]:
    """(splits with ``context``, ``choices``, ``labels`` columns, the number of choices)."""
    import datasets

    found = [channel_files(train_channel, channels, data_format)]
    if validation_channel:
        found.append(channel_files(validation_channel, channels, data_format))
    count: int | None = None
    encoded = []
    for files in found:
        dataset = load_channel(files, cache_dir)
        check_columns(dataset, files.channel, [text_column, choices_column, label_column])
        contexts, options, labels = [], [], []
        rows = zip(
            dataset[text_column], dataset[choices_column], dataset[label_column], strict=True
        )
        for number, (context, listed, label) in enumerate(rows, start=1):
            if not isinstance(context, str):
                raise DataError(
                    f"channel {files.channel!r}, row {number}: column {text_column!r} holds "
                    f"{context!r}, not text"
                )
            listed = _choices(listed, files.channel, number, choices_column)
            if count is None:
                count = len(listed)
            if len(listed) != count:
                raise DataError(
                    f"channel {files.channel!r}, row {number}: {len(listed)} choices, but the "
                    f"first row has {count}; every row needs the same number (the compiled "
                    "graph takes exactly that many)"
                )
            contexts.append(context)
            options.append(listed)
            labels.append(_label(label, files.channel, number, label_column, count))
        encoded.append(
            datasets.Dataset.from_dict({CONTEXT: contexts, CHOICES: options, "labels": labels})
        )
    assert count is not None  # load_channel refuses a channel without rows
    return Splits(encoded[0], encoded[1] if len(encoded) > 1 else None, ()), count


def tokenize(splits: Splits, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Per row, every (context, choice) pair's encoding: ``[choices, tokens]`` lists."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        count = len(batch[CHOICES][0])
        firsts = [context for context in batch[CONTEXT] for _ in range(count)]
        seconds = [choice for listed in batch[CHOICES] for choice in listed]
        flat = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
        out = {
            key: [values[i : i + count] for i in range(0, len(values), count)]
            for key, values in flat.items()
        }
        out["labels"] = batch["labels"]
        return out

    out = {}
    for name, dataset in (("train", splits.train), ("validation", splits.validation)):
        if dataset is not None:
            out[name] = dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    return out


def collator(tokenizer: Any, max_length: int | None) -> Any:
    """Pads every choice of a batch together; ``max_length``: to it (static shapes)."""
    from transformers import DataCollatorForMultipleChoice

    if max_length is None:
        return DataCollatorForMultipleChoice(tokenizer)
    return DataCollatorForMultipleChoice(tokenizer, padding="max_length", max_length=max_length)
