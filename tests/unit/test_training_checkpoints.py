"""Checkpoints: validation at resume, fallback to the previous complete one, SIGTERM points."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from smneuron.training import checkpoints
from smneuron.training.checkpoints import (
    EvaluationAbandoned,
    TerminationFlag,
    checkpoint_problem,
    latest_checkpoint,
)


def make_checkpoint(root: Path, step: int, **overrides: bytes | None) -> Path:
    """A checkpoint-<step> with the files a resume needs; ``name=None`` leaves one out."""
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    files: dict[str, bytes | None] = {
        "trainer_state.json": json.dumps({"global_step": step}).encode(),
        "model.safetensors": b"weights",
        "optimizer.pt": b"adam",
        "scheduler.pt": b"linear",
        "config.json": b"{}",
    }
    files.update(overrides)
    for name, data in files.items():
        if data is not None:
            (path / name).write_bytes(data)
    return path


def test_a_complete_checkpoint_has_no_problem(tmp_path):
    assert checkpoint_problem(make_checkpoint(tmp_path, 5)) is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"trainer_state.json": None}, "trainer_state.json is missing"),
        ({"trainer_state.json": b'{"global_st'}, "trainer_state.json is not valid JSON"),
        ({"trainer_state.json": b"{}"}, "holds no global_step"),
        ({"model.safetensors": b""}, "no model weights"),
        ({"model.safetensors": None}, "no model weights"),
        ({"optimizer.pt": None}, "optimizer.pt is missing or empty"),
        ({"scheduler.pt": b""}, "scheduler.pt is missing or empty"),
    ],
)
def test_a_broken_checkpoint_says_why(tmp_path, overrides, reason):
    problem = checkpoint_problem(make_checkpoint(tmp_path, 5, **overrides))
    assert problem is not None and reason in problem


def test_sharded_weights_need_every_shard(tmp_path):
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    path = make_checkpoint(
        tmp_path,
        5,
        **{
            "model.safetensors": None,
            "model.safetensors.index.json": json.dumps(index).encode(),
            "model-00001-of-00002.safetensors": b"w",
        },
    )
    assert "model-00002-of-00002.safetensors" in (checkpoint_problem(path) or "")
    (path / "model-00002-of-00002.safetensors").write_bytes(b"w")
    assert checkpoint_problem(path) is None


def test_resume_falls_back_to_the_previous_complete_checkpoint(tmp_path, caplog):
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 6, **{"optimizer.pt": None})  # a partial restore from S3
    (tmp_path / ".staging" / "checkpoint-8").mkdir(parents=True)  # a save cut short
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert "checkpoint-6 is incomplete: optimizer.pt is missing or empty" in caplog.text
    assert "resuming from checkpoint-4 instead of checkpoint-6" in caplog.text
    # Set aside: neither the next resume nor the Trainer's rotation sees it again.
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["broken-checkpoint-6", "checkpoint-2", "checkpoint-4"]


def test_resume_starts_over_when_no_checkpoint_is_complete(tmp_path, caplog):
    make_checkpoint(tmp_path, 3, **{"trainer_state.json": b"not json"})
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) is None
    assert "starting over" in caplog.text
    assert latest_checkpoint(tmp_path / "missing") is None


def fake(**values):
    return SimpleNamespace(**values)


def callback(flag: TerminationFlag):
    pytest.importorskip("transformers")
    return checkpoints.checkpoint_callback(flag)


def control():
    return fake(should_save=False, should_training_stop=False, should_evaluate=True)


def test_sigterm_during_a_save_stops_training_after_it():
    flag = TerminationFlag()
    cb = callback(flag)
    args, state = fake(output_dir="/ckpt"), fake(global_step=3, max_steps=100)
    assert cb.on_save(args, state, control()).should_training_stop is False
    flag.requested = True
    after = cb.on_save(args, state, control())
    assert after.should_training_stop is True and cb.stopped_at == 3


def test_sigterm_during_evaluation_abandons_it():
    flag = TerminationFlag()
    cb = callback(flag)
    state = fake(global_step=6, max_steps=100)
    cb.on_prediction_step(None, state, control())  # no signal: evaluation goes on
    flag.requested = True
    with pytest.raises(EvaluationAbandoned):
        cb.on_prediction_step(None, state, control())


def test_sigterm_at_a_step_end_saves_and_stops():
    flag = TerminationFlag()
    cb = callback(flag)
    flag.requested = True
    after = cb.on_step_end(None, fake(global_step=2, max_steps=100), control())
    assert after.should_save and after.should_training_stop and cb.stopped_at == 2
