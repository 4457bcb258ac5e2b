"""Task registry: how a graph's output tensor becomes each input's answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from smneuron.errors import ClientError

# A postprocessor: (one row of the graph output, labels, request parameters) -> JSON-able value.
Postprocess = Callable[[Sequence[float], Sequence[str], Mapping[str, Any]], Any]


def _top_k(parameters: Mapping[str, Any], count: int) -> int | None:
    value = parameters.get("top_k")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClientError(f'"top_k" must be a positive integer, got {value!r}')
    return min(value, count)


def text_classification(
    row: Sequence[float], labels: Sequence[str], parameters: Mapping[str, Any]
) -> Any:
    """Softmax over the logits: the best ``{"label", "score"}``, or the ``top_k`` best as a list."""
    import math

    peak = max(row)
    exps = [math.exp(value - peak) for value in row]
    total = sum(exps)
    names = list(labels) if len(labels) == len(row) else [f"LABEL_{i}" for i in range(len(row))]
    ranked = sorted(
        ({"label": name, "score": exp / total} for name, exp in zip(names, exps, strict=True)),
        key=lambda entry: float(entry["score"]),  # type: ignore[arg-type]
        reverse=True,
    )
    k = _top_k(parameters, len(ranked))
    return ranked[0] if k is None else ranked[:k]


def feature_extraction(
    row: Sequence[float], labels: Sequence[str], parameters: Mapping[str, Any]
) -> Any:
    """The pooled, normalised embedding the graph returns."""
    return [float(value) for value in row]


TASKS: dict[str, Postprocess] = {
    "text-classification": text_classification,
    "feature-extraction": feature_extraction,
}


def postprocessor(task: str) -> Postprocess:
    from smneuron.errors import ArtifactError

    found = TASKS.get(task)
    if found is None:
        raise ArtifactError(
            f"task {task!r} has no serving support yet (served: {', '.join(TASKS)}); "
            "provide code/inference.py with your own predict_fn"
        )
    return found
