"""Token classification (NER) training data: words with BIO tags -> sub-token labels; entity F1.

Each row holds a list of words (``tokens_column``, default ``tokens``) and one tag per word
(``tags_column``, default ``ner_tags``): tag names (``B-PER``, ``I-PER``, ``O``) or ids into
the ``labels`` hyperparameter. JSON Lines and Parquet hold the lists natively; a CSV cell holds
a JSON array or the items separated by spaces. After tokenizing, the first sub-token of each
word carries the word's tag and every other position (later sub-tokens, [CLS], [SEP], padding)
carries -100, which the loss and the metrics ignore.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smneuron.errors import DataError
from smneuron.training.data import Splits, channel_files, check_columns, load_channel

if TYPE_CHECKING:
    import datasets

IGNORED = -100
TAG_IDS = "tag_ids"


def _as_list(value: Any, channel: str, row: int, column: str) -> list[Any]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"channel {channel!r}, row {row}: column {column!r} is not a JSON list: {err}"
                ) from err
        else:
            value = text.split()
    if not isinstance(value, list | tuple):
        raise DataError(
            f"channel {channel!r}, row {row}: column {column!r} holds {value!r}, not a list "
            "(JSON Lines / Parquet: a list; CSV: a JSON array or space-separated items)"
        )
    return list(value)


def _rows(
    dataset: datasets.Dataset, channel: str, tokens_column: str, tags_column: str
) -> list[tuple[list[str], list[Any]]]:
    """(words, tags) per row, checked: words are text, one tag per word."""
    rows = []
    for number, (words, tags) in enumerate(
        zip(dataset[tokens_column], dataset[tags_column], strict=True), start=1
    ):
        words = _as_list(words, channel, number, tokens_column)
        tags = _as_list(tags, channel, number, tags_column)
        if not words or not all(isinstance(word, str) and word for word in words):
            raise DataError(
                f"channel {channel!r}, row {number}: column {tokens_column!r} must be a "
                "non-empty list of non-empty words"
            )
        if len(tags) != len(words):
            raise DataError(
                f"channel {channel!r}, row {number}: {len(words)} words but {len(tags)} tags; "
                f"give one tag per word in {tags_column!r}"
            )
        rows.append((words, tags))
    return rows


def _is_id(tag: Any) -> bool:
    return (isinstance(tag, int) and not isinstance(tag, bool)) or (
        isinstance(tag, str) and tag.isdigit()
    )


def tag_names(rows: Sequence[tuple[list[str], list[Any]]], given: Sequence[str]) -> tuple:
    """The label names in logit order: ``given``, else ``O`` first and the other tags sorted."""
    if given:
        return tuple(given)
    names = {str(tag) for _, tags in rows for tag in tags}
    if any(_is_id(tag) for _, tags in rows for tag in tags):
        raise DataError(
            "the tags are ids: give the label names in id order with the labels "
            'hyperparameter (e.g. "O,B-PER,I-PER,B-LOC,I-LOC")'
        )
    if len(names) < 2:
        raise DataError(f"the tags have {len(names)} distinct value(s) {sorted(names)}; need 2+")
    return (("O",) if "O" in names else ()) + tuple(sorted(names - {"O"}))


def tag_ids(
    rows: Sequence[tuple[list[str], list[Any]]], labels: Sequence[str], channel: str
) -> list[list[int]]:
    index = {name: i for i, name in enumerate(labels)}
    encoded = []
    for number, (_, tags) in enumerate(rows, start=1):
        ids = []
        for tag in tags:
            if isinstance(tag, str) and tag in index:
                ids.append(index[tag])
            elif _is_id(tag) and int(tag) < len(labels):
                ids.append(int(tag))
            else:
                raise DataError(
                    f"channel {channel!r}, row {number}: tag {tag!r} is not one of the labels "
                    f"({', '.join(labels)}) nor an id below {len(labels)}"
                )
        encoded.append(ids)
    return encoded


def load_token_splits(
    channels: Mapping[str, Path],
    *,
    train_channel: str,
    validation_channel: str,
    tokens_column: str,
    tags_column: str,
    labels: Sequence[str] = (),
    data_format: str = "auto",
    cache_dir: Path | None = None,
) -> Splits:
    """Load, check and tag-encode the train (and validation) channels: columns ``words``
    (the word lists) and ``tag_ids`` (one label id per word)."""
    import datasets

    found = [channel_files(train_channel, channels, data_format)]
    if validation_channel:
        found.append(channel_files(validation_channel, channels, data_format))
    loaded = []
    for files in found:
        dataset = load_channel(files, cache_dir)
        check_columns(dataset, files.channel, [tokens_column, tags_column])
        loaded.append((files.channel, _rows(dataset, files.channel, tokens_column, tags_column)))
    names = tag_names(loaded[0][1], labels)
    encoded = [
        datasets.Dataset.from_dict(
            {"words": [words for words, _ in rows], TAG_IDS: tag_ids(rows, names, channel)}
        )
        for channel, rows in loaded
    ]
    return Splits(encoded[0], encoded[1] if len(encoded) > 1 else None, names)


def align_labels(word_ids: Sequence[int | None], tags: Sequence[int]) -> list[int]:
    """One label per sub-token: the word's tag on its first sub-token, -100 elsewhere."""
    labels = []
    previous = None
    for word in word_ids:
        labels.append(IGNORED if word is None or word == previous else tags[word])
        previous = word
    return labels


def tokenize_words(splits: Splits, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Tokenized train/validation datasets with aligned ``labels``."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch["words"], is_split_into_words=True, truncation=True, max_length=max_length
        )
        encoded["labels"] = [
            align_labels(encoded.word_ids(i), tags) for i, tags in enumerate(batch[TAG_IDS])
        ]
        return encoded

    out = {}
    for name, dataset in (("train", splits.train), ("validation", splits.validation)):
        if dataset is not None:
            out[name] = dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    return out


# --------------------------------------------------------------------------------------------
# Entity-level metrics (the conlleval / seqeval default rules for BIO tags)


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of every entity in a BIO tag sequence.

    An entity starts at ``B-X``, or at ``I-X`` that does not continue an ``X`` entity; it
    ends before ``O``, a ``B-``, or a tag of another type. A tag without a prefix is ``I-``.
    """
    spans = set()
    kind: str | None = None
    start = 0
    for index, tag in enumerate([*tags, "O"]):
        if tag == "O":
            prefix, name = "O", None
        elif tag[:2] in ("B-", "I-"):
            prefix, name = tag[0], tag[2:]
        else:
            prefix, name = "I", tag
        if kind is not None and (prefix != "I" or name != kind):
            spans.add((kind, start, index - 1))
            kind = None
        if prefix != "O" and kind is None:
            kind, start = name, index
    return spans


def entity_scores(
    true: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Micro precision, recall and F1 over entities, and token accuracy."""
    hits = found = wanted = 0
    right = total = 0
    for want, got in zip(true, predicted, strict=True):
        want_spans, got_spans = entity_spans(want), entity_spans(got)
        hits += len(want_spans & got_spans)
        found += len(got_spans)
        wanted += len(want_spans)
        right += sum(a == b for a, b in zip(want, got, strict=True))
        total += len(want)
    precision = hits / found if found else 0.0
    recall = hits / wanted if wanted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": right / total if total else 0.0,
    }


def metrics_for(labels: Sequence[str]) -> Any:
    """A Trainer ``compute_metrics`` over (per-token logits, labels with -100)."""
    import numpy as np

    def compute(eval_pred: Any) -> dict[str, float]:
        logits, label_ids = eval_pred
        if isinstance(logits, list | tuple):  # XLA: one array per evaluation batch
            logits = np.concatenate([np.asarray(part) for part in logits])
        if isinstance(label_ids, list | tuple):
            label_ids = np.concatenate([np.asarray(part) for part in label_ids])
        predictions = np.asarray(logits).argmax(axis=-1)
        label_ids = np.asarray(label_ids)
        true, predicted = [], []
        for want_row, got_row in zip(label_ids, predictions, strict=True):
            keep = want_row != IGNORED
            true.append([labels[i] for i in want_row[keep]])
            predicted.append([labels[i] for i in got_row[keep]])
        return entity_scores(true, predicted)

    return compute
