"""Masked-LM (fill-mask) training data: one text column, masked at random by the collator.

Each row holds one text (``text_column``, default ``text``); no labels. The collator
(``DataCollatorForLanguageModeling``) picks ``mlm_probability`` of the tokens of every batch
afresh, replaces 80 % of them with the mask token, 10 % with a random token and keeps 10 %,
and the loss is the cross-entropy at the picked positions. The metric lines carry the
perplexity, ``exp(loss)`` (``train_perplexity``, ``eval_perplexity``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smneuron.training.data import Splits, channel_files, check_columns, check_text, load_channel

TEXT = "text"
# Trainer log keys whose perplexity is logged beside them.
PERPLEXITIES = {"loss": "train_perplexity", "eval_loss": "eval_perplexity"}
MAX_PERPLEXITY_LOSS = 700.0  # exp() above this overflows a float


def load_text_splits(
    channels: Mapping[str, Path],
    *,
    train_channel: str,
    validation_channel: str,
    text_column: str,
    data_format: str = "auto",
    cache_dir: Path | None = None,
) -> Splits:
    """The train (and validation) channels' texts, as a ``text`` column."""
    found = [channel_files(train_channel, channels, data_format)]
    if validation_channel:
        found.append(channel_files(validation_channel, channels, data_format))
    loaded = []
    for files in found:
        dataset = load_channel(files, cache_dir)
        check_columns(dataset, files.channel, [text_column])
        check_text(dataset, files.channel, text_column)
        dataset = dataset.select_columns([text_column])
        if text_column != TEXT:
            dataset = dataset.rename_column(text_column, TEXT)
        loaded.append(dataset)
    return Splits(loaded[0], loaded[1] if len(loaded) > 1 else None, ())


def tokenize(splits: Splits, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Tokenized texts (the collator masks them per batch)."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(
            batch[TEXT], truncation=True, max_length=max_length, return_special_tokens_mask=True
        )

    out = {}
    for name, dataset in (("train", splits.train), ("validation", splits.validation)):
        if dataset is not None:
            out[name] = dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    return out


def collator(tokenizer: Any, mlm_probability: float, max_length: int | None) -> Any:
    """Random masking per batch; ``max_length``: pad every batch to it (static shapes)."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=mlm_probability, pad_to_multiple_of=max_length
    )


def with_perplexity(logs: Mapping[str, Any]) -> dict[str, Any]:
    """``logs`` plus ``exp(loss)`` beside each loss (``PERPLEXITIES``)."""
    out = dict(logs)
    for key, name in PERPLEXITIES.items():
        value = logs.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = math.exp(min(float(value), MAX_PERPLEXITY_LOSS))
    return out
