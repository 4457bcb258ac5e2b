"""Static shapes: the smallest compiled bucket and batch size that fit; truncate or reject above.

Two dimensions are static. A text is padded to the smallest sequence-length bucket that holds
it; a batch of ``n`` rows runs on the smallest compiled batch size ``≥ n`` (rows of padding
fill the rest). The batcher never takes more rows than the largest batch size, so a longer
queue is split into full largest-size runs and one last run on the smallest graph that holds
the remainder: with batch sizes 1, 2, 4, 8, 3 waiting rows run at batch 4, 9 run as 8 + 1, and
13 as 8 + 8 (the last five at batch 8).
"""

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


def choose_batch(rows: int, batch_sizes: Sequence[int]) -> int:
    """The smallest compiled batch size ≥ ``rows`` (``batch_sizes`` ascending).

    Raises:
        ValueError: ``rows`` is below 1 or above the largest size (the batcher takes at most
            the largest, so this is a fault in the caller).
    """
    for size in batch_sizes:
        if rows <= size:
            if rows < 1:
                raise ValueError(f"a batch needs at least one row, got {rows}")
            return size
    raise ValueError(f"{rows} rows are more than the largest compiled batch {batch_sizes[-1]}")
