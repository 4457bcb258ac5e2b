"""Task registry: each task's request parameters and how a graph output becomes its answer.

Answers have the shapes of the Hugging Face pipelines (and so of the Hugging Face inference
toolkit, which hands ``parameters`` to the pipeline), docs/tasks.md lists them per task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smneuron.errors import ArtifactError, ClientError

UNSET: Any = object()  # a parameter the request did not send (None is a value for top_k)


@dataclass(frozen=True)
class Head:
    """What postprocessing needs to know about the model.

    Attributes:
        labels: label names in logit order (``config.id2label``).
        problem_type: ``config.problem_type`` (regression, single_label_classification,
            multi_label_classification) or None.
        tokenizer: the artifact's tokenizer (token classification turns ids back into words).
        sequence_lengths: the compiled buckets (question answering windows the largest).
        task_parameters: the manifest's shape parameters of the task (e.g. ``doc_stride``).
        max_masks: fill-mask: mask tokens per input the graph takes.
        choices: multiple-choice: the compiled number of choices.
    """

    labels: tuple[str, ...] = ()
    problem_type: str | None = None
    tokenizer: Any = None
    sequence_lengths: tuple[int, ...] = ()
    task_parameters: Mapping[str, Any] = field(default_factory=dict)
    max_masks: int = 1
    choices: int | None = None

    def label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else f"LABEL_{index}"


@dataclass(frozen=True)
class Item:
    """One tokenized input: its text and the tokens the graph ran on (before padding).

    ``offsets`` (character spans per token) and ``special`` (1 for [CLS], [SEP]...) are
    filled for the tasks that ask for them (``Task.offsets``). ``windows``: question
    answering's windows of the context (``text``), one graph row each (``Task.questions``).
    """

    text: str
    ids: Sequence[int]
    offsets: Sequence[tuple[int, int]] | None = None
    special: Sequence[int] | None = None
    windows: Sequence[Any] | None = None


Options = dict[str, Any]


@dataclass(frozen=True)
class Task:
    """One servable task.

    Attributes:
        read: request ``parameters`` -> options; a ClientError for a bad or unknown one.
        postprocess: (graph output row, item, head, options) -> the answer for one input.
        lone: (the answer for a lone input, whether it was a dict, options) -> the response
            for a request that held one input instead of a list.
        pairs: accepts ``{"text", "text_pair"}`` inputs.
        offsets: needs character offsets and the special-tokens mask from the tokenizer.
        similarity: answers ``{"source_sentence", "sentences"}`` requests (its answers are
            embeddings, compared by ``similarities``).
        check: (input index, item, head) -> None or a ClientError, on each tokenized input
            before any forward (fill-mask: its mask tokens).
        needs_pairs: every input must be a ``{"text", "text_pair"}`` pair.
        choices: takes ``{"context", "choices"}`` inputs (multiple choice), and only those.
        unwrap_one: a list of one input answers as that input alone (the fill-mask pipeline).
        questions: answers ``{"question", "context"}`` inputs; each runs as one or more
            windows, and ``postprocess`` gets the list of their graph rows.
    """

    name: str
    read: Callable[[Mapping[str, Any], Head], Options]
    postprocess: Callable[[Any, Item, Head, Options], Any]
    lone: Callable[[Any, bool, Options], Any] = field(default=lambda answer, _d, _o: answer)
    pairs: bool = False
    offsets: bool = False
    similarity: bool = False
    check: Callable[[int, Item, Head], None] | None = None
    needs_pairs: bool = False
    choices: bool = False
    unwrap_one: bool = False
    questions: bool = False


def check_known(task: str, parameters: Mapping[str, Any], accepted: Sequence[str]) -> None:
    unknown = sorted(str(name) for name in parameters if name not in accepted)
    if unknown:
        known = ", ".join(accepted) if accepted else "none"
        raise ClientError(
            f"unknown parameter(s) {', '.join(unknown)} for {task}; accepted parameters: {known}"
        )


def read_top_k(parameters: Mapping[str, Any]) -> Any:
    """``UNSET`` when absent, ``None`` (every label) or a positive integer."""
    if "top_k" not in parameters:
        return UNSET
    value = parameters["top_k"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClientError(f'"top_k" must be a positive integer or null (all), got {value!r}')
    return value


# --------------------------------------------------------------------------------------------
# text-classification

FUNCTIONS = ("sigmoid", "softmax", "none")
# truncation: a tokenizer argument the pipeline passes on; accepted for clients of the Hugging
# Face toolkit, while texts above the largest bucket follow SMNEURON_OVERFLOW either way.
CLASSIFICATION_PARAMETERS = ("top_k", "function_to_apply", "truncation")


def default_function(head: Head) -> str:
    """What the pipeline applies when the request names no function (from problem_type)."""
    count = len(head.labels)
    if head.problem_type == "regression":
        return "none"
    if head.problem_type == "multi_label_classification" or count == 1:
        return "sigmoid"
    if head.problem_type == "single_label_classification" or count > 1:
        return "softmax"
    return "none"


def read_classification(parameters: Mapping[str, Any], head: Head) -> Options:
    check_known("text-classification", parameters, CLASSIFICATION_PARAMETERS)
    function = parameters.get("function_to_apply")
    if function is None:
        function = default_function(head)
    elif not isinstance(function, str) or function.lower() not in FUNCTIONS:
        raise ClientError(
            f'"function_to_apply" must be one of {", ".join(FUNCTIONS)}, got {function!r}'
        )
    if not isinstance(parameters.get("truncation", True), bool):
        raise ClientError(f'"truncation" must be true or false, got {parameters["truncation"]!r}')
    return {"top_k": read_top_k(parameters), "function": function.lower()}


def scores_of(row: Sequence[float], function: str) -> list[float]:
    if function == "sigmoid":
        return [_sigmoid(value) for value in row]
    if function == "softmax":
        peak = max(row)
        exps = [math.exp(value - peak) for value in row]
        total = sum(exps)
        return [value / total for value in exps]
    return [float(value) for value in row]


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


def text_classification(row: Sequence[float], item: Item, head: Head, options: Options) -> Any:
    """The best ``{"label", "score"}``; with ``top_k`` the k best as a list (None: all)."""
    scores = scores_of(row, options["function"])
    top_k = options["top_k"]
    if top_k is UNSET:
        best = max(range(len(scores)), key=scores.__getitem__)
        return {"label": head.label(best), "score": scores[best]}
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    ranked = [{"label": head.label(i), "score": scores[i]} for i in order]
    return ranked if top_k is None else ranked[:top_k]


def classification_lone(answer: Any, was_dict: bool, options: Options) -> Any:
    """The pipeline wraps a lone string's best answer in a list, but not a lone pair's, and
    answers a lone input with ``top_k`` by the ranked list itself."""
    if options["top_k"] is UNSET and not was_dict:
        return [answer]
    return answer


# --------------------------------------------------------------------------------------------
# feature-extraction


def read_nothing(parameters: Mapping[str, Any], head: Head) -> Options:
    check_known("feature-extraction", parameters, ())
    return {}


def feature_extraction(row: Sequence[float], item: Item, head: Head, options: Options) -> Any:
    """The pooled, normalised embedding the graph returns."""
    return [float(value) for value in row]


def similarities(source: Sequence[float], sentences: Sequence[Sequence[float]]) -> Any:
    """``{"similarities": [...]}``: the cosine similarity of ``source`` with each sentence's
    embedding (as the Hugging Face toolkit's sentence-similarity task answers).

    The graph's embeddings are already unit-length; dividing by the norms anyway keeps the
    answer a cosine for a graph that does not normalise.
    """
    source_norm = math.sqrt(math.fsum(value * value for value in source))
    scores = []
    for other in sentences:
        dot = math.fsum(a * b for a, b in zip(source, other, strict=True))
        norm = source_norm * math.sqrt(math.fsum(value * value for value in other))
        scores.append(dot / norm if norm > 0 else 0.0)
    return {"similarities": scores}


# --------------------------------------------------------------------------------------------
# token-classification (the aggregation itself: smneuron.serving.entities)


def read_token_classification(parameters: Mapping[str, Any], head: Head) -> Options:
    from smneuron.serving import entities

    return entities.read_options(parameters)


def token_classification(
    rows: Sequence[Sequence[float]], item: Item, head: Head, options: Options
) -> Any:
    """Tokens or entities with their character spans in the text (``aggregation_strategy``)."""
    from smneuron.serving import entities

    if item.offsets is None or item.special is None:
        raise ArtifactError("token-classification needs the tokenizer's offsets (a fast tokenizer)")
    tokens = entities.tokens_of(
        rows, item.ids, item.offsets, item.special, item.text, head.tokenizer
    )
    return entities.entities(tokens, options, head.label, head.tokenizer)


# --------------------------------------------------------------------------------------------
# fill-mask (smneuron.serving.masks), multiple-choice (smneuron.serving.choices),
# next-sentence-prediction


def read_fill_mask(parameters: Mapping[str, Any], head: Head) -> Options:
    from smneuron.serving import masks

    return masks.read_options(parameters, head.tokenizer)


def check_fill_mask(index: int, item: Item, head: Head) -> None:
    from smneuron.serving import masks

    masks.check(index, item.ids, head.tokenizer, head.max_masks)


def fill_mask(rows: Sequence[Sequence[float]], item: Item, head: Head, options: Options) -> Any:
    from smneuron.serving import masks

    return masks.answer(rows, item.ids, head.tokenizer, options)


def read_multiple_choice(parameters: Mapping[str, Any], head: Head) -> Options:
    check_known("multiple-choice", parameters, ())
    return {}


def multiple_choice(row: Sequence[float], item: Item, head: Head, options: Options) -> Any:
    from smneuron.serving import choices

    return choices.answer(row)


def read_next_sentence(parameters: Mapping[str, Any], head: Head) -> Options:
    check_known("next-sentence-prediction", parameters, ())
    return {}


def next_sentence(row: Sequence[float], item: Item, head: Head, options: Options) -> Any:
    """``{"is_next", "score"}``: score = P(text_pair follows text), the head's logit 0."""
    score = scores_of(row, "softmax")[0]
    return {"is_next": score >= 0.5, "score": score}


# --------------------------------------------------------------------------------------------
# question-answering (windows and span selection: smneuron.serving.qa)


def read_question_answering(parameters: Mapping[str, Any], head: Head) -> Options:
    from smneuron.serving import qa

    largest = head.sequence_lengths[-1] if head.sequence_lengths else 0
    return qa.read_options(parameters, largest, head.task_parameters.get("doc_stride"))


def question_answering(
    rows: Sequence[Sequence[Sequence[float]]], item: Item, head: Head, options: Options
) -> Any:
    """The best ``{"answer", "score", "start", "end"}`` over the context's windows."""
    from smneuron.serving import qa

    return qa.answer(rows, item.windows or (), item.text, options)


# image-classification, audio-classification: the text classifier's answers (serving.media)

MEDIA_PARAMETERS = ("top_k", "function_to_apply")


def read_media_classification(parameters: Mapping[str, Any], head: Head) -> Options:
    check_known("image and audio classification", parameters, MEDIA_PARAMETERS)
    return read_classification(parameters, head)


# --------------------------------------------------------------------------------------------
# masked-image-modeling (serving.media chooses the patches; the graph reconstructs the image)

MIM_PARAMETERS = ("mask_ratio", "masked_patches", "seed")


def read_masked_image_modeling(parameters: Mapping[str, Any], head: Head) -> Options:
    check_known("masked-image-modeling", parameters, MIM_PARAMETERS)
    ratio = parameters.get("mask_ratio", 0.0)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
        raise ClientError(f'"mask_ratio" must be a number from 0 to 1, got {ratio!r}')
    seed = parameters.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ClientError(f'"seed" must be a non-negative integer, got {seed!r}')
    patches = parameters.get("masked_patches")
    if patches is not None and (
        not isinstance(patches, list)
        or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in patches)
    ):
        raise ClientError(f'"masked_patches" must be a list of patch indices, got {patches!r}')
    if patches is not None and "mask_ratio" in parameters:
        raise ClientError('give "masked_patches" or "mask_ratio", not both')
    return {"mask_ratio": float(ratio), "seed": seed, "masked_patches": patches}


def masked_image_modeling(row: Any, item: Item, head: Head, options: Options) -> Any:
    """``{"reconstruction": [height][width][3] in 0..1, "masked_patches": [...]}``."""
    return {"reconstruction": row, "masked_patches": list(item.ids)}


TASKS: dict[str, Task] = {
    "text-classification": Task(
        "text-classification",
        read_classification,
        text_classification,
        classification_lone,
        pairs=True,
    ),
    "token-classification": Task(
        "token-classification",
        read_token_classification,
        token_classification,
        offsets=True,
    ),
    "question-answering": Task(
        "question-answering",
        read_question_answering,
        question_answering,
        questions=True,
    ),
    "feature-extraction": Task(
        "feature-extraction",
        read_nothing,
        feature_extraction,
        lambda answer, _d, _o: [answer],
        similarity=True,
    ),
    "fill-mask": Task(
        "fill-mask", read_fill_mask, fill_mask, check=check_fill_mask, unwrap_one=True
    ),
    "multiple-choice": Task("multiple-choice", read_multiple_choice, multiple_choice, choices=True),
    "next-sentence-prediction": Task(
        "next-sentence-prediction",
        read_next_sentence,
        next_sentence,
        pairs=True,
        needs_pairs=True,
    ),
    "image-classification": Task(
        "image-classification",
        read_media_classification,
        text_classification,
        classification_lone,
    ),
    "audio-classification": Task(
        "audio-classification",
        read_media_classification,
        text_classification,
        classification_lone,
    ),
    "masked-image-modeling": Task(
        "masked-image-modeling", read_masked_image_modeling, masked_image_modeling
    ),
}


def task_for(name: str) -> Task:
    found = TASKS.get(name)
    if found is None:
        raise ArtifactError(
            f"task {name!r} has no serving support yet (served: {', '.join(TASKS)}); "
            "provide code/inference.py with your own predict_fn"
        )
    return found
