"""SIGTERM and checkpoints: stop cleanly with a checkpoint, and resume from the latest good one.

SageMaker sends SIGTERM (spot interruption, StopTrainingJob) and SIGKILL 30 s later. Inside
the training loop the handler only sets a flag; a Trainer callback sees it at the end of the
current step (or during an evaluation, which it abandons, or at the end of a save), saves a
checkpoint to /opt/ml/checkpoints and stops. Outside the loop there is nothing worth saving,
so the handler raises ``Terminated`` at once.

Checkpoints are written under ``.staging/`` and renamed to ``checkpoint-<N>`` only when
complete; at resume each candidate is validated and a broken one is set aside.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from smneuron.errors import SmneuronError
from smneuron.job import Terminated

log = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Checkpoints are written here first, then renamed into place (same file system).
STAGING_DIR = ".staging"
# A checkpoint found broken at resume is renamed to this prefix + its name (kept, not used).
BROKEN_PREFIX = "broken-"
TRAINER_STATE = "trainer_state.json"
# Model weights: one of these files, or an index whose shards must all be there.
# A LoRA run (lora_r > 0) saves its adapters only: adapter_model.*.
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Needed to continue the optimisation where it stopped (not just the weights).
RESUME_FILES = ("optimizer.pt", "scheduler.pt")


class CheckpointSaveError(SmneuronError):
    """A checkpoint could not be written (disk full, ...); the previous ones are intact."""


class EvaluationAbandoned(Exception):
    """Raised inside an evaluation loop on SIGTERM: the checkpoint matters more than metrics."""


class TerminationFlag:
    """Records SIGTERM; raises ``Terminated`` unless a ``deferring()`` block is running."""

    def __init__(self) -> None:
        self.requested = False
        self._deferred = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._deferred:
            log.warning("SIGTERM received: saving a checkpoint at the end of this step")
            return
        raise Terminated("stopped by SIGTERM before training started or after it ended")

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Inside this block SIGTERM only sets the flag (the caller checks it)."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False


def checkpoint_step(path: Path) -> int | None:
    match = CHECKPOINT_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be resumed from, or None when it is complete.

    Complete: trainer_state.json parses and names its step; the model weights (a file, or an
    index and every shard it lists) and the optimizer and scheduler states are there and not
    empty.
    """
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        return f"{TRAINER_STATE} is missing"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{TRAINER_STATE} is not valid JSON ({err})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{TRAINER_STATE} holds no global_step"
    weights = _weight_problem(path)
    if weights:
        return weights
    for name in RESUME_FILES:
        if _empty(path / name):
            return f"{name} is missing or empty"
    return None


def _empty(path: Path) -> bool:
    return not path.is_file() or path.stat().st_size == 0


def _weight_problem(path: Path) -> str | None:
    if any(not _empty(path / name) for name in WEIGHT_FILES):
        return None
    for index in WEIGHT_INDEXES:
        if (path / index).is_file():
            try:
                shards = set(json.loads((path / index).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                return f"{index} is unreadable ({err})"
            missing = sorted(shard for shard in shards if _empty(path / shard))
            return f"weight shard(s) missing or empty: {', '.join(missing)}" if missing else None
    return f"no model weights ({' or '.join(WEIGHT_FILES)}) or they are empty"


def latest_checkpoint(directory: Path) -> Path | None:
    """The complete ``checkpoint-N`` with the highest N; broken ones are set aside, logged.

    A broken checkpoint (a partial save from an older version, a partial restore from S3) is
    renamed ``broken-checkpoint-N`` so that neither the resume nor the Trainer's rotation
    sees it; the log says which one was skipped, why, and which one is used instead.
    """
    if not directory.is_dir():
        return None
    shutil.rmtree(directory / STAGING_DIR, ignore_errors=True)  # a save cut short
    found = sorted(
        (
            (step, path)
            for path in directory.iterdir()
            if (step := checkpoint_step(path)) is not None and path.is_dir()
        ),
        reverse=True,
    )
    skipped: list[str] = []
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            if skipped:
                log.warning("resuming from %s instead of %s", path.name, ", ".join(skipped))
            return path
        log.warning("checkpoint %s is incomplete: %s; setting it aside", path, problem)
        skipped.append(path.name)
        _set_aside(path)
    if skipped:
        log.warning("no complete checkpoint (%s incomplete): starting over", ", ".join(skipped))
    return None


def _set_aside(path: Path) -> None:
    target = path.with_name(BROKEN_PREFIX + path.name)
    try:
        if target.exists():
            shutil.rmtree(target)
        path.rename(target)
    except OSError as err:
        log.warning("cannot rename %s aside (%s): it stays but is not used", path, err)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _vote_group() -> Any:
    """The process group for the SIGTERM vote (a CPU tensor, every step).

    The default group when it is gloo (CPU); else a gloo group over the same ranks: Neuron's
    ``xla`` group reduces device tensors only, and reading one back every step would cost a
    graph execution.
    """
    import torch.distributed as dist

    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def _any_rank(flag: bool, group: Any = None) -> bool:
    """True when any process of a distributed job got SIGTERM (all must stop at one step)."""
    import torch
    import torch.distributed as dist

    if not _distributed():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return bool(value.item())


def checkpoint_callback(flag: TerminationFlag) -> Any:
    """A TrainerCallback: checkpoint and stop on SIGTERM; always checkpoint the last step.

    SIGTERM is looked at the end of every optimizer step, at every evaluation batch (the
    evaluation is abandoned, see ``trainer_class``) and at the end of every save (a save that
    was running when the signal came is the checkpoint: training stops right after it).
    """
    from transformers import TrainerCallback

    class CheckpointOnTerminate(TrainerCallback):
        def __init__(self) -> None:
            self.stopped_at: int | None = None
            self.save_started = time.monotonic()
            self.group: Any = None
            self.group_ready = False

        def _stop_requested(self) -> bool:
            """Whether any process got SIGTERM (every process asks at the same points)."""
            if not self.group_ready and _distributed():
                # Every rank reaches its first step end: a safe point to create a group.
                self.group = _vote_group()
                self.group_ready = True
            if _any_rank(flag.requested, self.group):
                flag.requested = True
            return flag.requested

        def on_step_end(self, args, state, control, **kwargs):
            self.save_started = time.monotonic()
            if self._stop_requested():
                self.stopped_at = state.global_step
                control.should_save = True
                control.should_training_stop = True
            elif state.max_steps and state.global_step >= state.max_steps:
                # A job killed during evaluation or compile resumes past training.
                control.should_save = True
            return control

        def on_prediction_step(self, args, state, control, **kwargs):
            # Only while training (``trainer_class`` catches it); an evaluation after
            # training runs outside ``deferring()``, where SIGTERM raises at once.
            if self.group_ready or not _distributed():
                if self._stop_requested():
                    raise EvaluationAbandoned
            return control

        def on_epoch_end(self, args, state, control, **kwargs):
            if flag.requested:
                # Stopping mid-epoch still ends the epoch: skip its evaluation and save, the
                # checkpoint is already written and the 30 s until SIGKILL are running.
                control.should_evaluate = False
                control.should_save = False
            return control

        def on_save(self, args, state, control, **kwargs):
            log.info(
                "checkpoint-%d saved to %s in %.1fs",
                state.global_step,
                args.output_dir,
                time.monotonic() - self.save_started,
            )
            if self._stop_requested():
                # SIGTERM came during this save (or the evaluation before it): it is the
                # checkpoint; no further step.
                self.stopped_at = state.global_step
                control.should_training_stop = True
            return control

    return CheckpointOnTerminate()


def trainer_class() -> type:
    """The transformers ``Trainer`` with atomic checkpoints and an abandonable evaluation.

    - A checkpoint is written to ``<output_dir>/.staging/checkpoint-N`` and renamed to
      ``<output_dir>/checkpoint-N`` once every process has finished writing it, so a save cut
      short (SIGKILL, a full disk) never leaves a ``checkpoint-N`` that looks resumable; the
      older checkpoints are rotated only after the rename. A failed save removes the staging
      copy and raises ``CheckpointSaveError`` naming the checkpoint still intact.
    - ``EvaluationAbandoned`` (SIGTERM during an evaluation in training) ends the
      evaluation; the Trainer then saves a checkpoint and stops.
    """
    from transformers import Trainer

    class AtomicCheckpointTrainer(Trainer):
        _staging_root: str | None = None

        def _get_output_dir(self, trial):
            return self._staging_root or super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            final_root = Path(super()._get_output_dir(trial))
            staging_root = final_root / STAGING_DIR
            name = f"checkpoint-{self.state.global_step}"
            staging = staging_root / name
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            self._staging_root = str(staging_root)
            try:
                super()._save_checkpoint(model, trial)  # its rotation sees only .staging/
                self.accelerator.wait_for_everyone()
            except OSError as err:
                if self.args.should_save:
                    shutil.rmtree(staging, ignore_errors=True)
                    _remove_if_empty(staging_root)
                previous = _latest_name(final_root)
                raise CheckpointSaveError(
                    f"saving {name} to {final_root} failed: {err}; "
                    + (
                        f"{previous} is intact and a new job resumes from it"
                        if previous
                        else "no earlier checkpoint exists"
                    )
                ) from err
            finally:
                self._staging_root = None
            if self.args.should_save:
                _move_into_place(staging, final_root / name)
                self._rotate_checkpoints(use_mtime=False, output_dir=str(final_root))
            self.accelerator.wait_for_everyone()

        def _evaluate(self, trial, ignore_keys_for_eval, skip_scheduler=False):
            try:
                return super()._evaluate(trial, ignore_keys_for_eval, skip_scheduler)
            except EvaluationAbandoned:
                log.warning("SIGTERM during evaluation: evaluation abandoned, saving a checkpoint")
                self.control.should_save = True
                self.control.should_training_stop = True
                return {}

    return AtomicCheckpointTrainer


def _latest_name(directory: Path) -> str | None:
    steps = [
        (step, path.name)
        for path in (directory.iterdir() if directory.is_dir() else [])
        if (step := checkpoint_step(path)) is not None
    ]
    return max(steps)[1] if steps else None


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished checkpoint into place (replacing one of the same step)."""
    old = None
    if target.exists():
        old = target.with_name(f"{STAGING_DIR}-old-{target.name}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _remove_if_empty(staging.parent)


def _remove_if_empty(directory: Path) -> None:
    """Leave /opt/ml/checkpoints holding checkpoints only."""
    try:
        directory.rmdir()
    except OSError:
        pass
