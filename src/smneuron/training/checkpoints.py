"""SIGTERM and checkpoints: stop cleanly with a checkpoint, and resume from the latest one.

SageMaker sends SIGTERM (spot interruption, StopTrainingJob) and SIGKILL 30 s later. Inside
the training loop the handler only sets a flag; a Trainer callback sees it at the end of the
current step, saves a checkpoint to /opt/ml/checkpoints and stops. Outside the loop there is
nothing worth saving, so the handler raises ``Terminated`` at once.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# 128 + SIGTERM, what a shell reports for a process ended by SIGTERM.
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """The job got SIGTERM and stops (after saving a checkpoint when it was training).

    A BaseException, like KeyboardInterrupt, so that library code catching Exception (a data
    reader, a retry loop) cannot turn it into another error.
    """


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


def latest_checkpoint(directory: Path) -> Path | None:
    """The ``checkpoint-N`` directory with the highest N that holds a trainer state."""
    if not directory.is_dir():
        return None
    found = [
        (step, path)
        for path in directory.iterdir()
        if path.is_dir()
        and (step := checkpoint_step(path)) is not None
        and (path / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


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
    """A TrainerCallback: checkpoint and stop on SIGTERM; always checkpoint the last step."""
    from transformers import TrainerCallback

    class CheckpointOnTerminate(TrainerCallback):
        def __init__(self) -> None:
            self.stopped_at: int | None = None
            self.save_started = time.monotonic()
            self.group: Any = None
            self.group_ready = False

        def on_step_end(self, args, state, control, **kwargs):
            self.save_started = time.monotonic()
            if not self.group_ready and _distributed():
                # Every rank reaches its first step end: a safe point to create a group.
                self.group = _vote_group()
                self.group_ready = True
            if _any_rank(flag.requested, self.group):
                flag.requested = True
                self.stopped_at = state.global_step
                control.should_save = True
                control.should_training_stop = True
            elif state.max_steps and state.global_step >= state.max_steps:
                # A job killed during evaluation or compile resumes past training.
                control.should_save = True
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

    return CheckpointOnTerminate()
