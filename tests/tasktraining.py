"""Train a tiny model on an example data set and load its artifact in-process (unit tier).

Shared by the per-task tests (fill-mask, multiple-choice, next-sentence-prediction): one
training run per test module, its metric lines captured, its artifact served by our handler.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Trained:
    opt_ml: Any
    result: Any
    logs: str

    @property
    def model_dir(self) -> Path:
        return self.opt_ml.paths.model

    def handler(self) -> Any:
        from smneuron.artifact.backends import CpuBackend
        from smneuron.serving.handler import Handler, WorkerInfo
        from smneuron.serving.settings import ServingSettings

        settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(self.opt_ml.base)})
        return Handler.load(self.model_dir, WorkerInfo(0, None, settings, CpuBackend()))


def train_example(
    opt_ml: Any, model_dir: Path, example: str, hyperparameters: Mapping[str, Any]
) -> Trained:
    """Train on ``examples/<example>/data`` (train and validation files) from ``model_dir``."""
    import torch

    from smneuron.job import TrainingEnv
    from smneuron.training import hyperparameters as hp
    from smneuron.training import trainer
    from smneuron.training.checkpoints import TerminationFlag

    torch.set_num_threads(1)
    data = EXAMPLES / example / "data"
    opt_ml.model_channel(model_dir)
    for split in ("train", "validation"):
        files = {path.name: path.read_text() for path in data.glob(f"{split}.*")}
        opt_ml.channel(split, files)
    opt_ml.hyperparameters(
        {
            "epochs": 2,
            "per_device_train_batch_size": 4,
            "logging_steps": 2,
            "learning_rate": 0.01,
            "batch_size": 2,
            "sequence_lengths": "16,32",
            **hyperparameters,
        }
    )
    env = TrainingEnv.from_env(opt_ml.environ)
    lines = _Lines()
    logger = logging.getLogger("smneuron.training.trainer")
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        result = trainer.train(env, hp.load(env.hyperparameters), TerminationFlag(), "cpu")
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    return Trained(opt_ml, result, "\n".join(lines.lines))
