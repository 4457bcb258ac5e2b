"""Extractive question answering: question + context -> windows of the context -> best span.

A context whose tokens (with the question's) do not fit the largest compiled bucket is split
into overlapping windows of that bucket (``doc_stride`` tokens shared between neighbours), as
the Hugging Face ``question-answering`` pipeline does with ``max_seq_len``; each window is one
row through the batcher, in the smallest bucket that holds it. The graph returns start and end
logits per token; the answer is picked over all windows the way the pipeline picks it (scores
are the product of the start and end probabilities within a window; spans widened to whole
words; equal answers from several windows add up), with character offsets into the context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smneuron.errors import ClientError

TASK = "question-answering"
PARAMETERS = ("top_k", "doc_stride", "max_answer_len", "handle_impossible_answer", "align_to_words")
DEFAULT_MAX_ANSWER_LEN = 15
DEFAULT_STRIDE = 128  # the pipeline's default overlap, capped at half the largest bucket
MASKED = -10000.0  # the logit given to tokens that cannot be in an answer


def default_stride(largest_bucket: int, wanted: int | None = None) -> int:
    """The overlap between windows: ``wanted`` (default 128), at most half the largest bucket."""
    return min(DEFAULT_STRIDE if wanted is None else wanted, largest_bucket // 2)


def _positive_int(parameters: Mapping[str, Any], name: str, minimum: int) -> int | None:
    if name not in parameters or parameters[name] is None:
        return None
    value = parameters[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ClientError(f'"{name}" must be an integer ≥ {minimum}, got {value!r}')
    return value


def _flag(parameters: Mapping[str, Any], name: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ClientError(f'"{name}" must be true or false, got {value!r}')
    return value


def read_options(
    parameters: Mapping[str, Any], largest_bucket: int, stride: int | None
) -> dict[str, Any]:
    """The request's parameters, checked; ``stride`` is the artifact's ``doc_stride``."""
    unknown = sorted(str(name) for name in parameters if name not in PARAMETERS)
    if unknown:
        hint = ""
        if any(name in ("max_seq_len", "max_question_len") for name in unknown):
            hint = (
                f" (the compiled buckets fix the window length: the largest is {largest_bucket} "
                "tokens, question included)"
            )
        raise ClientError(
            f"unknown parameter(s) {', '.join(unknown)} for {TASK}; accepted parameters: "
            f"{', '.join(PARAMETERS)}{hint}"
        )
    top_k = _positive_int(parameters, "top_k", 1) or 1
    max_answer_len = _positive_int(parameters, "max_answer_len", 1) or DEFAULT_MAX_ANSWER_LEN
    doc_stride = _positive_int(parameters, "doc_stride", 0)
    if doc_stride is not None and doc_stride >= largest_bucket:
        raise ClientError(
            f'"doc_stride" ({doc_stride}) must be below the largest bucket ({largest_bucket} '
            "tokens): it is the overlap between two windows of the context"
        )
    return {
        "top_k": top_k,
        "max_answer_len": max_answer_len,
        "handle_impossible_answer": _flag(parameters, "handle_impossible_answer", False),
        "align_to_words": _flag(parameters, "align_to_words", True),
        "doc_stride": default_stride(largest_bucket, stride) if doc_stride is None else doc_stride,
    }


# --------------------------------------------------------------------------------------------
# Windows


@dataclass(frozen=True)
class Window:
    """One window of a context with the question: what a graph row runs on (before padding).

    Attributes:
        encoded: ``input_ids``, ``attention_mask`` (and ``token_type_ids``) of the window.
        offsets: character span of each token (in the question or the context).
        sequence_ids: 0 for the question's tokens, 1 for the context's, None for specials.
        word_ids: the word of each token within its sequence, None for specials.
        cls: positions of the [CLS] token, the one special token an answer may start on
            (the "no answer" span).
    """

    encoded: Mapping[str, Sequence[int]]
    offsets: Sequence[tuple[int, int]]
    sequence_ids: Sequence[int | None]
    word_ids: Sequence[int | None]
    cls: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.encoded["input_ids"])


def windows(tokenizer: Any, question: str, context: str, largest: int, stride: int) -> list[Window]:
    """The windows of ``context`` (with ``question`` first) that fit ``largest`` tokens.

    Raises:
        ClientError: the question alone leaves no room for the context in the largest bucket.
    """
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    room = largest - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    if room < 1:
        raise ClientError(
            f"the question has {question_tokens} tokens: with the context it must fit the "
            f"largest bucket of {largest} tokens; ask a shorter question"
        )
    # The tokenizer refuses (aborts) a stride that is not below the room left for the context.
    stride = min(stride, room - 1)
    batch = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=largest,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids="token_type_ids" in tokenizer.model_input_names,
    )
    cls_id = tokenizer.cls_token_id
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in batch]
    found = []
    for index in range(len(batch["input_ids"])):
        ids = batch["input_ids"][index]
        found.append(
            Window(
                encoded={name: batch[name][index] for name in names},
                offsets=[tuple(span) for span in batch["offset_mapping"][index]],
                sequence_ids=batch.sequence_ids(index),
                word_ids=batch.word_ids(index),
                cls=tuple(
                    i for i, token in enumerate(ids) if cls_id is not None and token == cls_id
                ),
            )
        )
    return found


# --------------------------------------------------------------------------------------------
# Answers


def _softmax(values: Any) -> Any:
    import numpy as np

    exps = np.exp(values - values.max())
    return exps / exps.sum()


def _char_span(window: Window, start: int, end: int, align: bool) -> tuple[int, int]:
    """Character offsets of tokens ``start..end``: widened to their whole words (``align``)."""
    first, last = window.word_ids[start], window.word_ids[end]
    if align and first is not None and last is not None:
        starts = [
            window.offsets[i][0]
            for i, word in enumerate(window.word_ids)
            if word == first and window.sequence_ids[i] == 1
        ]
        ends = [
            window.offsets[i][1]
            for i, word in enumerate(window.word_ids)
            if word == last and window.sequence_ids[i] == 1
        ]
        if starts and ends:
            return starts[0], ends[-1]
    return window.offsets[start][0], window.offsets[end][1]


def _spans(
    rows: Sequence[Sequence[float]], window: Window, options: Mapping[str, Any], count: int
) -> tuple[list[tuple[int, int, float]], float]:
    """The ``count`` best (start, end, score) spans of one window, and its no-answer score."""
    import numpy as np

    logits = np.asarray(rows, dtype=np.float32)[: window.length]
    allowed = np.array(
        [sequence == 1 or i in window.cls for i, sequence in enumerate(window.sequence_ids)]
    )
    start = _softmax(np.where(allowed, logits[:, 0], MASKED))
    end = _softmax(np.where(allowed, logits[:, 1], MASKED))
    null = float(start[0] * end[0])
    start[0] = end[0] = 0.0
    # Scores of every span that ends at or after its start and is at most max_answer_len long.
    scores = np.tril(np.triu(np.outer(start, end)), options["max_answer_len"] - 1)
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")[:count]
    spans = []
    for index in order:
        first, last = divmod(int(index), window.length)
        if allowed[first] and allowed[last]:
            spans.append((first, last, float(flat[index])))
    return spans, null


def answer(
    outputs: Sequence[Sequence[Sequence[float]]],
    found: Sequence[Window],
    context: str,
    options: Mapping[str, Any],
) -> Any:
    """``{"answer", "score", "start", "end"}`` (a list of up to ``top_k`` when more than one).

    ``outputs`` holds one graph row per window: ``[tokens, 2]`` start and end logits.
    """
    top_k = options["top_k"]
    align = options["align_to_words"]
    # Word alignment may map several token spans onto one answer: look at more of them.
    count = top_k * 2 + 10 if align else top_k
    answers: list[dict[str, Any]] = []
    by_text: dict[str, dict[str, Any]] = {}
    null = 1000000.0  # lowered by every window (there is at least one)
    for rows, window in zip(outputs, found, strict=True):
        spans, window_null = _spans(rows, window, options, count)
        null = min(null, window_null)
        for first, last, score in spans:
            start, end = _char_span(window, first, last, align)
            text = context[start:end]
            same = by_text.get(text.lower())
            if same is not None:
                same["score"] += score
                continue
            entry = {"score": score, "start": start, "end": end, "answer": text}
            by_text[text.lower()] = entry
            answers.append(entry)
    if options["handle_impossible_answer"]:
        answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
    ranked = sorted(answers, key=lambda entry: entry["score"], reverse=True)[:top_k]
    ranked = [
        {"answer": e["answer"], "score": e["score"], "start": e["start"], "end": e["end"]}
        for e in ranked
    ]
    return ranked[0] if len(ranked) == 1 else ranked
