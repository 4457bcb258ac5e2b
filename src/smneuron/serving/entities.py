"""Token classification answers: per-token logits -> tokens or entities with character offsets.

The strategies are those of the ``transformers`` token-classification pipeline's
``aggregation_strategy`` (so answers equal what the Hugging Face inference toolkit returns):

- ``none``: one entry per token, ``{"entity", "score", "index", "word", "start", "end"}``;
- ``simple``: adjacent tokens with the same tag (B-X then I-X...) grouped into
  ``{"entity_group", "score", "word", "start", "end"}``, the score their mean;
- ``first`` / ``average`` / ``max``: first every word's sub-tokens agree on one tag (the first
  sub-token's, the averaged scores', or the most confident sub-token's), then words are grouped
  as with ``simple``.

Entries whose tag is in ``ignore_labels`` (default ``["O"]``) are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smneuron.errors import ClientError

STRATEGIES = ("none", "simple", "first", "average", "max")
PARAMETERS = ("aggregation_strategy", "ignore_labels")
DEFAULT_STRATEGY = "none"  # the pipeline's (and so the toolkit's) default


@dataclass(frozen=True)
class Token:
    """One non-special token with its softmax scores and its span in the text."""

    index: int
    word: str
    scores: list[float]
    start: int
    end: int
    is_subword: bool


def read_options(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``aggregation_strategy`` and ``ignore_labels`` from the request (400 when bad)."""
    unknown = sorted(str(name) for name in parameters if name not in PARAMETERS)
    if unknown:
        raise ClientError(
            f"unknown parameter(s) {', '.join(unknown)} for token-classification; accepted "
            f"parameters: {', '.join(PARAMETERS)}"
        )
    strategy = parameters.get("aggregation_strategy")
    if strategy is None:
        strategy = DEFAULT_STRATEGY
    elif not isinstance(strategy, str) or strategy.lower() not in STRATEGIES:
        raise ClientError(
            f'"aggregation_strategy" must be one of {", ".join(STRATEGIES)}, got {strategy!r}'
        )
    ignore = parameters.get("ignore_labels")
    if ignore is None:
        ignore = ["O"]
    elif not isinstance(ignore, list) or not all(isinstance(name, str) for name in ignore):
        raise ClientError('"ignore_labels" must be a list of label names, e.g. ["O"]')
    return {"strategy": strategy.lower(), "ignore": frozenset(ignore)}


def softmax(row: Sequence[float]) -> list[float]:
    peak = max(row)
    exps = [math.exp(value - peak) for value in row]
    total = sum(exps)
    return [value / total for value in exps]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def word_aware(tokenizer: Any) -> bool:
    """A tokenizer that marks continuing sub-words (WordPiece ``##``) tells words apart."""
    backend = getattr(tokenizer, "_tokenizer", None)
    return bool(backend and getattr(backend.model, "continuing_subword_prefix", None))


def tokens_of(
    logits: Sequence[Sequence[float]],
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    special: Sequence[int],
    text: str,
    tokenizer: Any,
) -> list[Token]:
    """The text's tokens (special ones left out), each with its scores and character span."""
    aware = word_aware(tokenizer)
    found = []
    for index, token_id in enumerate(ids):
        if special[index]:
            continue
        word = tokenizer.convert_ids_to_tokens(int(token_id))
        start, end = (int(value) for value in offsets[index])
        span = text[start:end]
        if aware:  # "##ing" is longer than the "ing" it covers
            is_subword = len(word) != len(span)
        else:  # no marker: a token glued to the previous character continues a word
            is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if int(token_id) == tokenizer.unk_token_id:
            word, is_subword = span, False
        found.append(Token(index, word, softmax(logits[index]), start, end, is_subword))
    return found


def _per_token(tokens: Sequence[Token], labels: Any) -> list[dict[str, Any]]:
    entries = []
    for token in tokens:
        best = _argmax(token.scores)
        entries.append(
            {
                "entity": labels(best),
                "score": token.scores[best],
                "index": token.index,
                "word": token.word,
                "start": token.start,
                "end": token.end,
            }
        )
    return entries


def _word(tokens: Sequence[Token], strategy: str, labels: Any, tokenizer: Any) -> dict[str, Any]:
    """One word from its sub-tokens, tagged by ``strategy``."""
    if strategy == "first":
        scores = tokens[0].scores
    elif strategy == "max":
        scores = max(tokens, key=lambda token: max(token.scores)).scores
    else:  # average
        scores = [
            sum(column) / len(tokens) for column in zip(*(t.scores for t in tokens), strict=True)
        ]
    best = _argmax(scores)
    return {
        "entity": labels(best),
        "score": scores[best],
        "word": tokenizer.convert_tokens_to_string([token.word for token in tokens]),
        "start": tokens[0].start,
        "end": tokens[-1].end,
    }


def _words(
    tokens: Sequence[Token], strategy: str, labels: Any, tokenizer: Any
) -> list[dict[str, Any]]:
    groups: list[list[Token]] = []
    for token in tokens:
        if groups and token.is_subword:
            groups[-1].append(token)
        else:
            groups.append([token])
    return [_word(group, strategy, labels, tokenizer) for group in groups]


def split_tag(name: str) -> tuple[str, str]:
    """``B-PER`` -> (B, PER); ``I-PER`` -> (I, PER); a tag without a prefix continues (I)."""
    if name.startswith(("B-", "I-")):
        return name[0], name[2:]
    return "I", name


def _group(entries: Sequence[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
    scores = [float(entry["score"]) for entry in entries]
    return {
        "entity_group": entries[0]["entity"].split("-", 1)[-1],
        "score": sum(scores) / len(scores),
        "word": tokenizer.convert_tokens_to_string([entry["word"] for entry in entries]),
        "start": entries[0]["start"],
        "end": entries[-1]["end"],
    }


def group_entities(entries: Sequence[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """Join runs of entries whose tag continues the previous one (same type, not a new B-)."""
    groups: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    for entry in entries:
        if run:
            prefix, kind = split_tag(entry["entity"])
            if kind == split_tag(run[-1]["entity"])[1] and prefix != "B":
                run.append(entry)
                continue
            groups.append(_group(run, tokenizer))
        run = [entry]
    if run:
        groups.append(_group(run, tokenizer))
    return groups


def entities(
    tokens: Sequence[Token], options: Mapping[str, Any], labels: Any, tokenizer: Any
) -> list[dict[str, Any]]:
    """The answer for one text under ``options`` (from ``read_options``)."""
    strategy = options["strategy"]
    if strategy in ("none", "simple"):
        entries = _per_token(tokens, labels)
    else:
        entries = _words(tokens, strategy, labels, tokenizer)
    if strategy != "none":
        entries = group_entities(entries, tokenizer)
    ignore = options["ignore"]
    return [
        entry
        for entry in entries
        if entry.get("entity") not in ignore and entry.get("entity_group") not in ignore
    ]
