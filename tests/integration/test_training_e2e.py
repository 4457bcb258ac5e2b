"""`train` end to end on a tiny random BERT: a serving artifact whose graphs match the model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from smneuron.artifact.backends import get_backend  # noqa: E402
from smneuron.artifact.manifest import check_files, read_manifest  # noqa: E402

DEMO_DATA = Path(__file__).resolve().parents[2] / "examples" / "spam" / "data"
# The regexes docs/training.md gives for metric_definitions.
METRIC_REGEXES = {
    "train:loss": r"train_loss=([0-9.eE+-]+)",
    "validation:accuracy": r"eval_accuracy=([0-9.eE+-]+)",
    "validation:loss": r"eval_loss=([0-9.eE+-]+)",
}


def demo_rows(name: str, count: int) -> str:
    lines = (DEMO_DATA / name).read_text(encoding="utf-8").splitlines()
    return "\n".join(lines[: count + 1]) + "\n"


@pytest.fixture(scope="module")
def trained(opt_ml_factory, tiny_model_dir):
    """One short training run shared by the tests below."""
    opt_ml = opt_ml_factory("e2e")
    opt_ml.model_channel(tiny_model_dir)
    opt_ml.channel("train", {"train.csv": demo_rows("train.csv", 48)})
    opt_ml.channel("validation", {"validation.csv": demo_rows("validation.csv", 16)})
    opt_ml.hyperparameters(
        {
            "max_steps": 6,
            "per_device_train_batch_size": 8,
            "logging_steps": 2,
            "save_steps": 2,
            "save_total_limit": 2,
            "sequence_lengths": [16, 32],
            "batch_size": 2,
            "labels": ["ham", "spam"],
            "sagemaker_job_name": "e2e",  # the SDK's own: ignored by the built-in trainer
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "smneuron.training"],
        env={**opt_ml.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return opt_ml, result.stdout


@pytest.mark.slow
def test_training_writes_a_complete_artifact_and_success(trained):
    opt_ml, _ = trained
    assert opt_ml.paths.success.exists()
    assert not opt_ml.paths.failure.exists()
    files = set(opt_ml.model_files())
    assert {"manifest.json", "config.json", "model.safetensors", "compiled"} <= files
    assert {"tokenizer.json", "vocab.txt"} & files
    manifest = read_manifest(opt_ml.paths.model)
    assert manifest.labels == ("ham", "spam")
    assert manifest.sequence_lengths == (16, 32)
    assert manifest.batch_size == 2
    assert manifest.backend == "cpu"
    check_files(opt_ml.paths.model, manifest)
    config = json.loads((opt_ml.paths.model / "config.json").read_text())
    assert config["id2label"] == {"0": "ham", "1": "spam"}
    assert config["label2id"] == {"ham": 0, "spam": 1}
    metrics = json.loads((opt_ml.paths.output_data / "metrics.json").read_text())
    assert metrics["global_step"] == 6
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert not [p for p in opt_ml.base.iterdir() if p.name.startswith(".model-staging")]


@pytest.mark.slow
def test_metrics_lines_match_the_documented_regexes(trained):
    _, stdout = trained
    for name, regex in METRIC_REGEXES.items():
        assert re.search(regex, stdout), f"{name}: {regex} matches nothing"
    step_line = next(line for line in stdout.splitlines() if " train_loss=" in line)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", step_line), "log lines carry timestamps"
    assert re.search(r"epoch=[0-9.]+ step=2 train_loss=", step_line)


@pytest.mark.slow
def test_periodic_checkpoints_keep_only_the_last_two(trained):
    opt_ml, _ = trained
    names = sorted(p.name for p in opt_ml.paths.checkpoints.iterdir())
    assert names == ["checkpoint-4", "checkpoint-6"]


@pytest.mark.slow
def test_compiled_graphs_match_the_trained_eager_model(trained):
    opt_ml, _ = trained
    model_dir = opt_ml.paths.model
    manifest = read_manifest(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    backend = get_backend(manifest.backend)
    texts = ["WINNER! claim your free prize now", "see you at lunch tomorrow?"]
    for length in manifest.sequence_lengths:
        graph = backend.load(manifest.graph_path(model_dir, length))
        enc = tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )
        with torch.no_grad():
            compiled = graph(*(enc[name] for name in manifest.input_names))
            eager = model(**enc).logits
        assert compiled.shape == (2, 2)
        assert float((compiled - eager).abs().max()) <= 1e-4
