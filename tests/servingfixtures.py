"""Fixtures for the serving tests: tiny random-weight artifacts with the real MiniLM tokenizer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tinymodels import minilm_dir, tiny_model

RESOURCES = Path(__file__).resolve().parent / "resources" / "handlers"
LABELS = ["ham", "spam"]
BUCKETS = (16, 32, 64)
BATCH = 4
BATCH_SIZES = (1, 2, 4)  # one graph per (batch size, bucket)


def build_artifact(model_dir: Path, task: str) -> Path:
    """save_pretrained a tiny BERT + the real tokenizer, then compile it on the CPU backend."""
    import torch
    from transformers import AutoTokenizer

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact

    torch.set_num_threads(1)
    model = tiny_model(task, LABELS, max_positions=128)
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True).save_pretrained(
        model_dir
    )
    compile_artifact(
        model_dir,
        model,
        task=task,
        labels=LABELS if task == "text-classification" else [],
        batch_sizes=BATCH_SIZES,
        sequence_lengths=BUCKETS,
        backend=CpuBackend(),
    )
    return model_dir


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
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
