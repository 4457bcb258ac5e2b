"""Static shapes: pick the smallest compiled bucket that fits, truncate or reject above it."""

from __future__ import annotations

from collections.abc import Sequence

from smneuron.errors import PayloadTooLarge


def choose_bucket(length: int, buckets: Sequence[int], overflow: str = "truncate") -> int:
    """The smallest bucket ≥ ``length``; above the largest, truncate to it or reject (413)."""
    for bucket in buckets:
        if length <= bucket:
            return bucket
    if overflow == "reject":
        raise PayloadTooLarge(
            f"input is {length} tokens, longer than the largest compiled sequence length "
            f"{buckets[-1]}; shorten it, or serve with SMNEURON_OVERFLOW=truncate"
        )
    return buckets[-1]


def pad_row(ids: Sequence[int], length: int, pad_id: int) -> tuple[list[int], list[int]]:
    """(input_ids, attention_mask) of exactly ``length``: cut or right-padded."""
    ids = list(ids[:length])
    mask = [1] * len(ids) + [0] * (length - len(ids))
    return ids + [pad_id] * (length - len(ids)), mask


def fit_tokens(ids: Sequence[int], length: int, tail: Sequence[int]) -> list[int]:
    """Cut ``ids`` to ``length`` keeping the closing special tokens (``tail``, e.g. [SEP])."""
    if len(ids) <= length:
        return list(ids)
    keep = length - len(tail)
    return list(ids[:keep]) + list(tail)
