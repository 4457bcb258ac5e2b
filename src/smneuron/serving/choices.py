"""Multiple choice: ``{"context" | "question", "choices"}`` requests, their rows, their answers.

Each input is a context (or question) and a list of choices. Every choice is encoded as the
pair ``[CLS] context [SEP] choice [SEP]`` (as training encodes it); one input is one row of
the graph, ``[choices, bucket]`` per graph input, the bucket the smallest that holds its
longest pair. The number of choices is static: the one compiled (``manifest.choices``).

The answer per input is ``{"label": index of the best choice, "score": its probability,
"scores": [probability per choice]}`` (softmax over the choices' logits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from smneuron.errors import ClientError

CONTEXT_KEYS = ("context", "question")
FORM = '{"context": string (or "question": string), "choices": [string, ...]}'


def is_choice(value: Any) -> bool:
    """A multiple-choice object: a JSON object with a ``choices`` key."""
    return isinstance(value, dict) and "choices" in value


def parse(value: dict[str, Any], where: str) -> tuple[str, list[str]]:
    """(context, choices) of one ``{"context" | "question", "choices"}`` object (400 if bad)."""
    unknown = sorted(str(key) for key in value if key not in (*CONTEXT_KEYS, "choices"))
    given = [key for key in CONTEXT_KEYS if key in value]
    if unknown or len(given) != 1:
        problem = (
            f"unknown key(s) {', '.join(unknown[:5])}"
            if unknown
            else 'give one of "context" or "question"'
        )
        raise ClientError(f"{where}: multiple choice takes {FORM}; {problem}")
    context = value[given[0]]
    if not isinstance(context, str):
        raise ClientError(f'{where}: "{given[0]}" must be a string; multiple choice takes {FORM}')
    choices = value["choices"]
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(choice, str) for choice in choices)
    ):
        raise ClientError(
            f'{where}: "choices" must be a list of at least 2 strings; multiple choice takes {FORM}'
        )
    return context, list(choices)


def check_count(index: int, choices: Sequence[str], compiled: int | None) -> None:
    if compiled and len(choices) != compiled:
        raise ClientError(
            f"input {index} has {len(choices)} choices; this artifact was compiled for exactly "
            f"{compiled} (recompile with choices={len(choices)} to serve that many)"
        )


def encode(
    tokenizer: Any, context: str, choices: Sequence[str], max_length: int | None
) -> dict[str, list[list[int]]]:
    """The tokenizer's encoding of every (context, choice) pair, unpadded."""
    options: dict[str, Any] = {"add_special_tokens": True}
    if max_length is None:
        options["truncation"] = False
    else:
        options.update(truncation="longest_first", max_length=max_length)
    encoded = tokenizer([context] * len(choices), list(choices), **options)
    return {key: [list(row) for row in encoded[key]] for key in encoded}


def padded(
    encoded: dict[str, list[list[int]]], names: Sequence[str], bucket: int, pad_id: int
) -> tuple[list[list[int]], ...]:
    """One ``[choices, bucket]`` list per graph input, right-padded."""
    out = []
    for name in names:
        rows = []
        for position, ids in enumerate(encoded["input_ids"]):
            fill = bucket - len(ids)
            if name == "input_ids":
                rows.append(ids + [pad_id] * fill)
            elif name == "attention_mask":
                rows.append([1] * len(ids) + [0] * fill)
            else:  # token_type_ids
                types = encoded.get(name)
                rows.append((types[position] if types else [0] * len(ids)) + [0] * fill)
        out.append(rows)
    return tuple(out)


def answer(logits: Sequence[float]) -> dict[str, Any]:
    """``{"label", "score", "scores"}`` from one input's per-choice logits."""
    peak = max(logits)
    exps = [math.exp(value - peak) for value in logits]
    total = sum(exps)
    scores = [value / total for value in exps]
    best = max(range(len(scores)), key=scores.__getitem__)
    return {"label": best, "score": scores[best], "scores": scores}
