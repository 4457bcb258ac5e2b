"""The `train` contract: success/failure files and exit codes, run as SageMaker runs it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from smneuron.training import entry
from smneuron.training.checkpoints import Terminated

GOOD_CSV = "text,label\nwin a free cruise now,spam\nsee you at lunch,ham\nclaim your prize,spam\n"


def run_train(opt_ml, timeout=120):
    """`python -m smneuron.training` (what the `train` script runs) against the tmp tree."""
    env = {**opt_ml.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "smneuron.training"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_client_failure(opt_ml, result, *fragments):
    assert result.returncode == 1, result.stdout + result.stderr
    failure = opt_ml.paths.failure.read_text()
    assert failure.count("\n") == 1, f"failure should be one line: {failure!r}"
    for fragment in fragments:
        assert fragment in failure
    assert not opt_ml.paths.success.exists()
    assert opt_ml.model_files() == [], "nothing may be left in /opt/ml/model"
    assert not [p for p in opt_ml.base.iterdir() if p.name.startswith(".model-staging")]


@pytest.fixture
def job(opt_ml, tiny_model_dir):
    """A valid job: tiny model channel, train and validation CSVs."""
    opt_ml.model_channel(tiny_model_dir)
    opt_ml.channel("train", {"train.csv": GOOD_CSV})
    opt_ml.channel("validation", {"validation.csv": GOOD_CSV})
    opt_ml.hyperparameters({"max_steps": 1})
    return opt_ml


def test_wrong_hyperparameter(job):
    job.hyperparameters({"epochs": "lots"})
    assert_client_failure(job, run_train(job), "epochs: expected a number, got 'lots'")


def test_unknown_hyperparameter(job):
    job.hyperparameters({"epoch": 3})
    assert_client_failure(job, run_train(job), "unknown hyperparameter(s): epoch")


def test_missing_channel(job):
    job.hyperparameters({"validation_channel": "test"})
    assert_client_failure(
        job, run_train(job), "channel 'test' not found", "model, train, validation"
    )


def test_empty_file(job):
    (job.paths.channel("train") / "train.csv").write_text("")
    assert_client_failure(job, run_train(job), "channel 'train'", "train.csv is empty")


def test_malformed_file(job):
    job.channel("train", {"train.jsonl": '{"text": "hi", "label": "ham"}\n{"text": \n'})
    (job.paths.channel("train") / "train.csv").unlink()
    assert_client_failure(job, run_train(job), "channel 'train': cannot read train.jsonl")


def test_unknown_label(job):
    job.channel("validation", {"validation.csv": GOOD_CSV + "hello there,eggs\n"})
    assert_client_failure(job, run_train(job), "label 'eggs' is not one of the labels (ham, spam)")


def test_missing_model(opt_ml):
    opt_ml.channel("train", {"train.csv": GOOD_CSV})
    opt_ml.channel("validation", {"validation.csv": GOOD_CSV})
    assert_client_failure(opt_ml, run_train(opt_ml), "no pretrained model")


def test_hub_id_without_permission(job):
    job.hyperparameters({"model_name_or_path": "bert-base-uncased"})
    assert_client_failure(job, run_train(job), "allow_hub_download=true")


# --------------------------------------------------------------------------------------------
# In-process: the exit codes of errors the subprocess cases cannot provoke cheaply


@pytest.fixture
def in_process(opt_ml, monkeypatch):
    previous = signal.getsignal(signal.SIGTERM)
    yield opt_ml
    signal.signal(signal.SIGTERM, previous)


def test_unexpected_error_writes_reason_and_traceback_and_exits_2(in_process, monkeypatch):
    from smneuron.training import trainer

    def explode(env, hps, flag, backend):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainer, "train", explode)
    assert entry.main() == 2
    failure = in_process.paths.failure.read_text()
    assert failure.startswith("RuntimeError: disk on fire\n")
    assert "Traceback (most recent call last)" in failure
    assert not in_process.paths.success.exists()


def test_sigterm_exits_143_with_the_reason(in_process, monkeypatch):
    from smneuron.training import trainer

    def stopped(env, hps, flag, backend):
        raise Terminated("stopped by SIGTERM at step 7")

    monkeypatch.setattr(trainer, "train", stopped)
    assert entry.main() == 143
    assert "stopped by SIGTERM at step 7" in in_process.paths.failure.read_text()


def test_a_new_attempt_clears_the_previous_status(in_process, monkeypatch):
    in_process.paths.failure.write_text("old failure\n")
    in_process.hyperparameters({"epochs": "x"})
    assert entry.main() == 1
    assert "old failure" not in in_process.paths.failure.read_text()


def test_model_channel_without_weights(job):
    (job.paths.channel("model") / "model.safetensors").unlink()
    assert_client_failure(job, run_train(job), "cannot load the pretrained model from")
