"""Extractive question answering training data: SQuAD rows -> windows with answer positions;
exact match and F1.

Each row holds a ``question``, a ``context`` and its ``answers`` in SQuAD form,
``{"text": [...], "answer_start": [...]}`` (character offsets into the context; in CSV the
cell holds that object as JSON). An empty ``text`` list marks a question the context does not
answer. A context longer than ``max_seq_length`` tokens (with its question) is split into
windows that share ``doc_stride`` tokens; each window is one training example whose start and
end positions are the answer's tokens, or the [CLS] token when the answer is not in that
window. Only a row's first answer is trained on; the metrics compare with all of them.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smneuron.errors import DataError
from smneuron.training.data import Splits, channel_files, check_columns, load_channel

log = logging.getLogger(__name__)

MAX_ANSWER_TOKENS = 30  # the longest answer span the metrics' decoding considers
N_BEST = 20  # start and end candidates per window in that decoding


def _answers(value: Any, context: str, channel: str, row: int, column: str) -> dict[str, list]:
    """The row's answers as ``{"text": [str], "answer_start": [int]}``, each found in the
    context at its offset."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(
                f"channel {channel!r}, row {row}: column {column!r} is not JSON: {err}"
            ) from err
    form = '{"text": [string, ...], "answer_start": [int, ...]}'
    if not isinstance(value, Mapping) or set(value) != {"text", "answer_start"}:
        raise DataError(
            f"channel {channel!r}, row {row}: column {column!r} must be {form} "
            f"(SQuAD form), got {value!r:.200}"
        )
    texts, starts = list(value["text"] or []), list(value["answer_start"] or [])
    if len(texts) != len(starts):
        raise DataError(
            f"channel {channel!r}, row {row}: {len(texts)} answer texts but {len(starts)} "
            f"answer_start offsets in {column!r}; give one offset per text"
        )
    for text, start in zip(texts, starts, strict=True):
        if not isinstance(text, str) or not text or isinstance(start, bool):
            raise DataError(
                f"channel {channel!r}, row {row}: answer {text!r} must be a non-empty string"
            )
        if not isinstance(start, int) or context[start : start + len(text)] != text:
            found = context.find(text) if isinstance(text, str) else -1
            hint = f" (it is at {found})" if found >= 0 else " (the context does not hold it)"
            raise DataError(
                f"channel {channel!r}, row {row}: answer {text!r} is not at answer_start "
                f"{start!r} of the context{hint}; answer_start counts characters from 0"
            )
    return {"text": texts, "answer_start": starts}


def _rows(
    dataset: Any, channel: str, columns: tuple[str, str, str]
) -> tuple[list[str], list[str], list[dict[str, list]]]:
    question_column, context_column, answers_column = columns
    questions, contexts, answers = [], [], []
    for number, (question, context, value) in enumerate(
        zip(
            dataset[question_column], dataset[context_column], dataset[answers_column], strict=True
        ),
        start=1,
    ):
        for column, text in ((question_column, question), (context_column, context)):
            if not isinstance(text, str) or not text.strip():
                raise DataError(
                    f"channel {channel!r}, row {number}: column {column!r} must be non-empty "
                    f"text, got {text!r:.100}"
                )
        questions.append(question)
        contexts.append(context)
        answers.append(_answers(value, context, channel, number, answers_column))
    return questions, contexts, answers


def load_qa_splits(
    channels: Mapping[str, Path],
    *,
    train_channel: str,
    validation_channel: str,
    question_column: str = "question",
    context_column: str = "context",
    answers_column: str = "answers",
    data_format: str = "auto",
    cache_dir: Path | None = None,
) -> Splits:
    """Load and check the train (and validation) channels: columns ``question``,
    ``context`` and ``answers`` (normalised to SQuAD form); no labels."""
    import datasets

    found = [channel_files(train_channel, channels, data_format)]
    if validation_channel:
        found.append(channel_files(validation_channel, channels, data_format))
    columns = (question_column, context_column, answers_column)
    encoded = []
    for files in found:
        dataset = load_channel(files, cache_dir)
        check_columns(dataset, files.channel, list(columns))
        questions, contexts, answers = _rows(dataset, files.channel, columns)
        encoded.append(
            datasets.Dataset.from_dict(
                {"question": questions, "context": contexts, "answers": answers}
            )
        )
    return Splits(encoded[0], encoded[1] if len(encoded) > 1 else None, ())


# --------------------------------------------------------------------------------------------
# Windows with answer positions


def _stride(tokenizer: Any, questions: Sequence[str], max_length: int, wanted: int) -> int:
    """``wanted``, lowered where the batch's longest question leaves less room (the
    tokenizer aborts on a stride that is not below the room left for the context)."""
    longest = max(
        len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]
    )
    room = max_length - longest - tokenizer.num_special_tokens_to_add(pair=True)
    if room < 2:
        raise DataError(
            f"a question has {longest} tokens, leaving no room for its context in "
            f"max_seq_length {max_length}; raise max_seq_length or shorten the question"
        )
    return min(wanted, max_length // 2, room - 1)


def positions(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    answer: tuple[int, int] | None,
    cls_index: int,
) -> tuple[int, int]:
    """(start, end) token positions of the ``answer``'s characters in one window, or the
    [CLS] position twice when the window does not hold the whole answer (or there is none)."""
    if answer is None:
        return cls_index, cls_index
    start_char, end_char = answer
    context = [i for i, sequence in enumerate(sequence_ids) if sequence == 1]
    if not context:
        return cls_index, cls_index
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index
    start = first
    while start <= last and offsets[start][1] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][0] >= end_char:
        end -= 1
    return start, end


@dataclass(frozen=True)
class EvalWindows:
    """What the metrics need to read an answer out of each validation window's logits."""

    example: list[int]  # the row each window came from
    offsets: list[list[tuple[int, int] | None]]  # None outside the context
    contexts: list[str]
    answers: list[list[str]]


def tokenize_qa(
    splits: Splits, tokenizer: Any, max_length: int, doc_stride: int
) -> tuple[dict[str, Any], EvalWindows | None]:
    """Tokenized train/validation windows with ``start_positions``/``end_positions``, and the
    validation windows' offsets for the metrics."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        stride = _stride(tokenizer, batch["question"], max_length, doc_stride)
        encoded = tokenizer(
            batch["question"],
            batch["context"],
            truncation="only_second",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        starts, ends, offsets = [], [], []
        for index, row in enumerate(encoded["overflow_to_sample_mapping"]):
            answers = batch["answers"][row]
            span = None
            if answers["text"]:
                span = (
                    answers["answer_start"][0],
                    answers["answer_start"][0] + len(answers["text"][0]),
                )
            ids = encoded["input_ids"][index]
            cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
            sequence_ids = encoded.sequence_ids(index)
            start, end = positions(encoded["offset_mapping"][index], sequence_ids, span, cls_index)
            starts.append(start)
            ends.append(end)
            offsets.append(
                [
                    tuple(pair) if sequence == 1 else None
                    for pair, sequence in zip(
                        encoded["offset_mapping"][index], sequence_ids, strict=True
                    )
                ]
            )
        encoded["start_positions"] = starts
        encoded["end_positions"] = ends
        encoded["example"] = list(encoded["overflow_to_sample_mapping"])
        encoded["window_offsets"] = offsets
        encoded.pop("offset_mapping")
        encoded.pop("overflow_to_sample_mapping")
        return encoded

    out: dict[str, Any] = {}
    windows = None
    for name, dataset in (("train", splits.train), ("validation", splits.validation)):
        if dataset is None:
            continue
        mapped = dataset.map(encode, batched=True, remove_columns=dataset.column_names)
        log.info(
            "question answering %s: %d rows -> %d windows of up to %d tokens (doc_stride %d)",
            name,
            len(dataset),
            len(mapped),
            max_length,
            min(doc_stride, max_length // 2),
        )
        if name == "validation":
            windows = EvalWindows(
                example=list(mapped["example"]),
                offsets=[
                    [tuple(pair) if pair is not None else None for pair in row]
                    for row in mapped["window_offsets"]
                ],
                contexts=list(dataset["context"]),
                answers=[list(answers["text"]) for answers in dataset["answers"]],
            )
        out[name] = mapped.remove_columns(["example", "window_offsets"])
    return out, windows


# --------------------------------------------------------------------------------------------
# Exact match and F1 (the SQuAD evaluation's normalisation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(char for char in text.lower() if char not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truths: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised truth ("" when there is none)."""
    return float(any(normalize_answer(prediction) == normalize_answer(t) for t in truths or [""]))


def f1_score(prediction: str, truths: Sequence[str]) -> float:
    """The best token-overlap F1 of the normalised prediction against each truth."""
    best = 0.0
    predicted = normalize_answer(prediction).split()
    for truth in truths or [""]:
        wanted = normalize_answer(truth).split()
        if not predicted or not wanted:
            best = max(best, float(predicted == wanted))
            continue
        common = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
        if common:
            precision, recall = common / len(predicted), common / len(wanted)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _stacked(parts: Any) -> Any:
    """One [windows, tokens] array from the Trainer's (XLA: per-batch, ragged) arrays."""
    import numpy as np

    if not isinstance(parts, list | tuple):
        return np.asarray(parts)
    arrays = [np.asarray(part) for part in parts]
    width = max(array.shape[1] for array in arrays)
    padded = [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=-1e4) for a in arrays]
    return np.concatenate(padded)


def predict_answers(start_logits: Any, end_logits: Any, windows: EvalWindows) -> list[str]:
    """The best answer text per validation row: over its windows, the span of context tokens
    (at most ``MAX_ANSWER_TOKENS``) with the highest start + end logit, or "" when the [CLS]
    token's no-answer score is higher."""
    import numpy as np

    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for index, row in enumerate(windows.example):
        starts, ends = start_logits[index], end_logits[index]
        offsets = windows.offsets[index]
        context = windows.contexts[row]
        null[row] = max(null.get(row, -np.inf), float(starts[0] + ends[0]))
        for start in np.argsort(starts[: len(offsets)])[::-1][:N_BEST]:
            for end in np.argsort(ends[: len(offsets)])[::-1][:N_BEST]:
                first, last = offsets[start], offsets[end]
                if first is None or last is None or end < start:
                    continue
                if end - start + 1 > MAX_ANSWER_TOKENS:
                    continue
                score = float(starts[start] + ends[end])
                if row not in best or score > best[row][0]:
                    best[row] = (score, context[first[0] : last[1]])
    answers = []
    for row in range(len(windows.contexts)):
        score, text = best.get(row, (-np.inf, ""))
        answers.append(text if score >= null.get(row, -np.inf) else "")
    return answers


def metrics_for(windows: EvalWindows) -> Any:
    """A Trainer ``compute_metrics``: exact match and F1 in percent, over validation rows."""

    def compute(eval_pred: Any) -> dict[str, float]:
        logits = eval_pred[0]
        if isinstance(logits, list) and logits and isinstance(logits[0], list | tuple):
            logits = ([part[0] for part in logits], [part[1] for part in logits])  # XLA
        start_logits, end_logits = _stacked(logits[0]), _stacked(logits[1])
        predictions = predict_answers(start_logits, end_logits, windows)
        count = len(predictions) or 1
        return {
            "exact_match": 100.0
            * sum(exact_match(p, t) for p, t in zip(predictions, windows.answers, strict=True))
            / count,
            "f1": 100.0
            * sum(f1_score(p, t) for p, t in zip(predictions, windows.answers, strict=True))
            / count,
        }

    return compute
