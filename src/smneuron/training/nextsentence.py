"""Next-sentence-prediction training data: sentence pairs and whether the second follows.

Each row holds a text (``text_column``, default ``text``), a second text
(``text_pair_column``, default ``text_pair`` for this task) and ``is_next`` (``is_next_column``:
true/false, 1/0, yes/no). The pair is tokenized as ``[CLS] text [SEP] text_pair [SEP]``. The
head's class 0 is "is next" (BERT's pre-training convention, which
``BertForNextSentencePrediction`` keeps), so ``is_next`` true becomes label 0. The metric lines
carry ``eval_accuracy``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smneuron.errors import DataError
from smneuron.training.data import Splits, channel_files, check_columns, check_text, load_channel

DEFAULT_PAIR_COLUMN = "text_pair"
TEXT, PAIR = "text", "text_pair"
TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")


def _label(value: Any, channel: str, row: int, column: str) -> int:
    """0 when the second text follows the first, else 1 (the NSP head's classes)."""
    text = str(value).strip().lower()
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    if text in TRUE:
        return 0
    if text in FALSE:
        return 1
    raise DataError(
        f"channel {channel!r}, row {row}: {column!r} is {value!r}; use true/false (or 1/0, yes/no)"
    )


def load_pair_splits(
    channels: Mapping[str, Path],
    *,
    train_channel: str,
    validation_channel: str,
    text_column: str,
    text_pair_column: str,
    is_next_column: str,
    data_format: str = "auto",
    cache_dir: Path | None = None,
) -> Splits:
    """Splits with ``text``, ``text_pair`` and ``labels`` (0: is next) columns."""
    import datasets

    pair_column = text_pair_column or DEFAULT_PAIR_COLUMN
    found = [channel_files(train_channel, channels, data_format)]
    if validation_channel:
        found.append(channel_files(validation_channel, channels, data_format))
    encoded = []
    for files in found:
        dataset = load_channel(files, cache_dir)
        check_columns(dataset, files.channel, [text_column, pair_column, is_next_column])
        check_text(dataset, files.channel, text_column)
        check_text(dataset, files.channel, pair_column)
        labels = [
            _label(value, files.channel, number, is_next_column)
            for number, value in enumerate(dataset[is_next_column], start=1)
        ]
        encoded.append(
            datasets.Dataset.from_dict(
                {TEXT: dataset[text_column], PAIR: dataset[pair_column], "labels": labels}
            )
        )
    return Splits(encoded[0], encoded[1] if len(encoded) > 1 else None, ())


def tokenize(splits: Splits, tokenizer: Any, max_length: int) -> dict[str, Any]:
    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch[TEXT], batch[PAIR], truncation=True, max_length=max_length)

    out = {}
    for name, dataset in (("train", splits.train), ("validation", splits.validation)):
        if dataset is not None:
            drop = [column for column in dataset.column_names if column != "labels"]
            out[name] = dataset.map(encode, batched=True, remove_columns=drop)
    return out
