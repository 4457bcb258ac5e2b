"""SIGTERM during training: a checkpoint in /opt/ml/checkpoints, exit 143, and a resume."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

ROWS = "text,label\n" + "".join(
    f"free prize number {i} call now,spam\nlunch at {i} tomorrow?,ham\n" for i in range(24)
)
# The SageMaker deadline between SIGTERM and SIGKILL.
SIGKILL_AFTER_S = 30


def start(opt_ml, hyperparameters):
    opt_ml.hyperparameters(hyperparameters)
    return subprocess.Popen(
        [sys.executable, "-m", "smneuron.training"],
        env={**opt_ml.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_sigterm_checkpoints_exits_and_the_next_job_resumes(opt_ml, tiny_model_dir):
    opt_ml.model_channel(tiny_model_dir)
    opt_ml.channel("train", {"train.csv": ROWS})
    opt_ml.channel("validation", {"validation.csv": ROWS})
    common = {
        "per_device_train_batch_size": 8,
        "logging_steps": 1,
        "save_steps": 100000,
        "sequence_lengths": [16],
        "batch_size": 1,
    }
    process = start(opt_ml, {**common, "max_steps": 100000})
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if re.search(r" step=([3-9]|\d\d+) train_loss=", line):
                break
        else:
            pytest.fail("training ended before it logged step 3:\n" + "".join(lines))
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=SIGKILL_AFTER_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines) + rest
    assert process.returncode == 143, output
    checkpoints = sorted(p.name for p in opt_ml.paths.checkpoints.iterdir())
    assert len(checkpoints) == 1, checkpoints
    stopped_at = int(checkpoints[0].removeprefix("checkpoint-"))
    assert stopped_at >= 3
    assert f"stopped by SIGTERM at step {stopped_at}" in opt_ml.paths.failure.read_text()
    assert opt_ml.model_files() == []
    assert not opt_ml.paths.success.exists()

    # A new job on the same checkpoint location continues from that step.
    process = start(opt_ml, {**common, "max_steps": stopped_at + 3})
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert f"resuming from {opt_ml.paths.checkpoints / checkpoints[0]}" in output
    steps = [int(s) for s in re.findall(r" step=(\d+) train_loss=", output)]
    assert steps == [stopped_at + 1, stopped_at + 2, stopped_at + 3]
    metrics = json.loads((opt_ml.paths.output_data / "metrics.json").read_text())
    assert metrics["global_step"] == stopped_at + 3
    assert opt_ml.paths.success.exists()
    assert not opt_ml.paths.failure.exists()


@pytest.mark.slow
def test_sigterm_before_training_exits_at_once_without_a_checkpoint(opt_ml, tiny_model_dir):
    opt_ml.model_channel(tiny_model_dir)
    opt_ml.channel("train", {"train.csv": ROWS})
    opt_ml.channel("validation", {"validation.csv": ROWS})
    process = start(opt_ml, {"max_steps": 5})
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "channel train:" in line:  # data loaded, model not yet
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=SIGKILL_AFTER_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, "".join(lines) + rest
    assert "stopped by SIGTERM" in opt_ml.paths.failure.read_text()
    assert list(opt_ml.paths.checkpoints.iterdir()) == []
    assert opt_ml.model_files() == []
