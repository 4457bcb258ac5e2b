"""Fill-mask answers: the vocabulary probabilities at each mask token -> the pipeline's ranking.

The graph (``artifact.build.masked_scores``) returns, per input, the softmax over the
vocabulary at the positions named by its ``mask_positions`` input (``[batch, max_masks]``,
the compiled maximum). The answers are those of the ``transformers`` fill-mask pipeline:

- per mask, the ``top_k`` (default 5) tokens, best first, each
  ``{"score", "token" (id), "token_str", "sequence" (the input with that token in the mask)}``;
- ``targets`` (a word or a list of words) limits the ranking to those tokens (a word that is
  not one token counts as its first token, as in the pipeline); ``top_k`` is then at most the
  number of targets;
- one mask: the list of candidates; several masks: one list per mask (each ``sequence`` then
  keeps the other masks, as the pipeline decodes it).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any

from smneuron.errors import ArtifactError, ClientError

PARAMETERS = ("top_k", "targets")
MASK_POSITIONS = "mask_positions"  # the graph input (artifact.build.MASK_POSITIONS)
DEFAULT_TOP_K = 5


def mask_id(tokenizer: Any) -> int:
    found = getattr(tokenizer, "mask_token_id", None)
    if found is None:
        raise ArtifactError("fill-mask needs a tokenizer with a mask token; this one has none")
    return int(found)


def positions(ids: Sequence[int], mask: int, max_masks: int) -> list[int]:
    """The mask tokens' positions, padded with 0 to ``max_masks`` (the graph's input row)."""
    found = [index for index, token in enumerate(ids) if int(token) == mask][:max_masks]
    return found + [0] * (max_masks - len(found))


def read_options(parameters: Mapping[str, Any], tokenizer: Any) -> dict[str, Any]:
    """``top_k`` and ``targets`` (their ids) from the request; 400 when bad or unknown."""
    unknown = sorted(str(name) for name in parameters if name not in PARAMETERS)
    if unknown:
        raise ClientError(
            f"unknown parameter(s) {', '.join(unknown)} for fill-mask; accepted parameters: "
            f"{', '.join(PARAMETERS)}"
        )
    top_k = parameters.get("top_k")
    if top_k is None:
        top_k = DEFAULT_TOP_K
    elif isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ClientError(f'"top_k" must be a positive integer, got {top_k!r}')
    targets = parameters.get("targets")
    target_ids = None if targets is None else _target_ids(targets, tokenizer)
    if target_ids is not None:
        top_k = min(top_k, len(target_ids))
    return {"top_k": top_k, "targets": target_ids}


def _target_ids(targets: Any, tokenizer: Any) -> list[int]:
    """Token ids of ``targets`` as the pipeline finds them: the vocabulary entry, else the
    word's first token; words with no token are left out."""
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(word, str) for word in targets):
        raise ClientError('"targets" must be a string or a list of strings')
    vocab = tokenizer.get_vocab()
    ids = []
    for word in targets:
        found = vocab.get(word)
        if found is None:
            pieces = tokenizer(
                word,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                max_length=1,
                truncation=True,
            )["input_ids"]
            if not pieces:
                continue
            found = pieces[0]
        ids.append(int(found))
    unique = list(set(ids))  # the pipeline's order, for ties
    if not unique:
        raise ClientError(f'"targets" {targets!r} hold no token of the vocabulary')
    return unique


def check(index: int, ids: Sequence[int], tokenizer: Any, max_masks: int) -> None:
    """A 400 for an input without a mask token, or with more than the graph takes."""
    mask = mask_id(tokenizer)
    count = sum(1 for token in ids if int(token) == mask)
    if count == 0:
        raise ClientError(
            f"input {index} has no mask token {tokenizer.mask_token}: fill-mask predicts the "
            f'token at each {tokenizer.mask_token} (e.g. "Paris is the {tokenizer.mask_token} '
            'of France.")'
        )
    if count > max_masks:
        raise ClientError(
            f"input {index} has {count} mask tokens {tokenizer.mask_token}; this artifact takes "
            f"at most {max_masks} per input (compiled with max_masks={max_masks})"
        )


def answer(
    scores: Sequence[Sequence[float]],
    ids: Sequence[int],
    tokenizer: Any,
    options: Mapping[str, Any],
) -> list[Any]:
    """The pipeline's answer for one input from its per-mask probabilities."""
    mask = mask_id(tokenizer)
    where = [index for index, token in enumerate(ids) if int(token) == mask]
    single = len(where) == 1
    targets = options["targets"]
    top_k = options["top_k"]
    pad = tokenizer.pad_token_id
    result = []
    for slot, position in enumerate(where):
        probabilities = scores[slot]
        candidates = targets if targets is not None else range(len(probabilities))
        best = heapq.nlargest(top_k, candidates, key=probabilities.__getitem__)
        row = []
        for token in best:
            filled = [int(t) for t in ids]
            filled[position] = token
            kept = [t for t in filled if t != pad]
            row.append(
                {
                    "score": float(probabilities[token]),
                    "token": token,
                    "token_str": tokenizer.decode([token]),
                    "sequence": tokenizer.decode(kept, skip_special_tokens=single),
                }
            )
        result.append(row)
    return result[0] if single else result
