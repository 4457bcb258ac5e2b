"""The built-in trainer under SIGTERM in each phase (step, evaluation, save) and a full disk."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from smneuron.training.checkpoints import checkpoint_problem

pytest.importorskip("transformers")

PHASE_TRAIN = Path(__file__).resolve().parents[1] / "resources" / "phase_train.py"
ROWS = "text,label\n" + "".join(
    f"free prize number {i} call now,spam\nlunch at {i} tomorrow?,ham\n" for i in range(24)
)  # 48 rows: 6 steps an epoch at batch 8
SIGKILL_AFTER_S = 30
COMMON = {
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 2,
    "logging_steps": 1,
    "sequence_lengths": [16],
    "batch_size": 1,
    "compile": False,
}


@pytest.fixture
def job(opt_ml, tiny_model_dir):
    opt_ml.model_channel(tiny_model_dir)
    opt_ml.channel("train", {"train.csv": ROWS})
    opt_ml.channel("validation", {"validation.csv": ROWS})
    return opt_ml


def start(opt_ml, phase: str, hyperparameters) -> subprocess.Popen:
    opt_ml.hyperparameters({**COMMON, **hyperparameters})
    return subprocess.Popen(
        [sys.executable, str(PHASE_TRAIN)],
        env={**opt_ml.environ, "OMP_NUM_THREADS": "1", "SMNEURON_TEST_PHASE": phase},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def signal_on(process: subprocess.Popen, marker: str) -> str:
    """SIGTERM at the first line holding ``marker``; the whole output once the process ends."""
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                break
        else:
            pytest.fail(f"{marker!r} never came:\n" + "".join(lines))
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=SIGKILL_AFTER_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return "".join(lines) + rest


def checkpoints(opt_ml) -> list[str]:
    return sorted(p.name for p in opt_ml.paths.checkpoints.iterdir())


@pytest.mark.slow
def test_sigterm_during_evaluation_abandons_it_and_saves_a_checkpoint(job):
    process = start(job, "evaluation", {"epochs": 2, "save_steps": 100000})
    output = signal_on(process, "PHASE evaluation")
    assert process.returncode == 143, output
    assert "evaluation abandoned" in output
    # Only the first epoch's 6 steps ran; its evaluation was cut short, not finished.
    assert checkpoints(job) == ["checkpoint-6"], output
    assert checkpoint_problem(job.paths.checkpoints / "checkpoint-6") is None
    assert "eval_accuracy=" not in output
    assert "stopped by SIGTERM at step 6" in job.paths.failure.read_text()
    assert job.model_files() == []


@pytest.mark.slow
def test_sigterm_during_a_save_stops_right_after_it(job):
    process = start(job, "save", {"max_steps": 100000, "save_steps": 3})
    output = signal_on(process, "PHASE save")
    assert process.returncode == 143, output
    # The save running when the signal came is the checkpoint: no step after it.
    assert checkpoints(job) == ["checkpoint-3"], output
    assert checkpoint_problem(job.paths.checkpoints / "checkpoint-3") is None
    assert not re.search(r" step=4 train_loss=", output)
    assert "stopped by SIGTERM at step 3" in job.paths.failure.read_text()


@pytest.mark.slow
def test_sigterm_during_a_step_saves_that_step(job):
    process = start(job, "save", {"max_steps": 100000, "save_steps": 100000})
    output = signal_on(process, " step=2 train_loss=")
    assert process.returncode == 143, output
    (name,) = checkpoints(job)
    step = int(name.removeprefix("checkpoint-"))
    assert step >= 2 and checkpoint_problem(job.paths.checkpoints / name) is None
    assert f"stopped by SIGTERM at step {step}" in job.paths.failure.read_text()


@pytest.mark.slow
def test_a_full_disk_keeps_the_previous_checkpoint_and_fails_the_job(job):
    process = start(job, "enospc", {"max_steps": 6, "save_steps": 2})
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 2, output
    assert checkpoints(job) == ["checkpoint-2"], output
    assert checkpoint_problem(job.paths.checkpoints / "checkpoint-2") is None
    failure = job.paths.failure.read_text()
    assert failure.startswith("CheckpointSaveError: saving checkpoint-4 to "), failure
    assert "No space left on device" in failure.partition("\n")[0]
    assert "checkpoint-2 is intact" in failure.partition("\n")[0]
    assert job.model_files() == []

    # The next job resumes from the checkpoint that survived.
    job.hyperparameters({**COMMON, "max_steps": 4, "save_steps": 100000})
    done = subprocess.run(
        [sys.executable, "-m", "smneuron.training"],
        env={**job.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming from {job.paths.checkpoints / 'checkpoint-2'}" in done.stdout
