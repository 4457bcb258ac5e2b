"""Fine-tuning: data -> tokenized splits -> transformers Trainer -> checkpoint + serving artifact.

Heavy imports (torch, transformers, datasets) happen inside the functions, so ``train --help``
and the hyperparameter checks stay fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smneuron.artifact import MANIFEST
from smneuron.errors import ConfigurationError
from smneuron.settings import ENV, Paths, TrainingEnv
from smneuron.training.checkpoints import (
    Terminated,
    TerminationFlag,
    checkpoint_callback,
    latest_checkpoint,
)
from smneuron.training.data import Splits, load_splits
from smneuron.training.hyperparameters import TrainingHyperparameters

log = logging.getLogger(__name__)

MODEL_CHANNEL = "model"
METRICS_FILE = "metrics.json"
# Trainer log keys renamed in the key=value lines (metric_definitions regexes rely on them).
RENAMED = {"loss": "train_loss"}


@dataclass(frozen=True)
class TrainResult:
    metrics: Mapping[str, float]
    global_step: int
    labels: tuple[str, ...]
    resumed_from: Path | None
    artifact: Path | None  # None on ranks other than 0


# --------------------------------------------------------------------------------------------
# Pieces (small and testable on their own)


def _checkpoint_dir(directory: Path) -> Path | None:
    """``directory`` itself when it holds config.json, else its single child that does."""
    if (directory / "config.json").is_file():
        return directory
    nested = [p for p in directory.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    return nested[0] if len(nested) == 1 else None


def resolve_model_source(hps: TrainingHyperparameters, channels: Mapping[str, Path]) -> str:
    """Where the pretrained model comes from: model_name_or_path, else the `model` channel."""
    if hps.model_name_or_path:
        path = Path(hps.model_name_or_path)
        if path.is_dir():
            found = _checkpoint_dir(path)
            if found is None:
                raise ConfigurationError(
                    f"model_name_or_path: {path} holds no config.json (not a model directory)"
                )
            return str(found)
        if hps.allow_hub_download:
            return hps.model_name_or_path
        raise ConfigurationError(
            f"model_name_or_path: {hps.model_name_or_path!r} is not a local directory; give a "
            "`model` channel or a directory, or set allow_hub_download=true to download it"
        )
    channel = channels.get(MODEL_CHANNEL)
    if channel is not None and channel.is_dir():
        found = _checkpoint_dir(channel)
        if found is None:
            raise ConfigurationError(
                f"channel {MODEL_CHANNEL!r} ({channel}) holds no config.json: put the pretrained "
                "Hugging Face model (config, weights, tokenizer) in it"
            )
        return str(found)
    raise ConfigurationError(
        "no pretrained model: give a `model` channel or set model_name_or_path to a local "
        "directory (or to a hub id with allow_hub_download=true)"
    )


def format_metrics(logs: Mapping[str, Any], epoch: float | None, step: int) -> str:
    """One ``key=value`` line: ``epoch=1.0 step=50 train_loss=0.312``."""
    parts = [f"epoch={epoch:.2f}" if epoch is not None else None, f"step={step}"]
    for key, value in logs.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        parts.append(f"{RENAMED.get(key, key)}={value:.6g}")
    return " ".join(part for part in parts if part)


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and macro F1 from (logits, label ids)."""
    import numpy as np

    logits, label_ids = eval_pred
    predictions = np.asarray(logits).argmax(axis=-1)
    label_ids = np.asarray(label_ids)
    scores = []
    for label in np.unique(np.concatenate([label_ids, predictions])):
        tp = float(np.sum((predictions == label) & (label_ids == label)))
        fp = float(np.sum((predictions == label) & (label_ids != label)))
        fn = float(np.sum((predictions != label) & (label_ids == label)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return {
        "accuracy": float(np.mean(predictions == label_ids)),
        "f1": float(np.mean(scores)),
    }


def metrics_callback() -> Any:
    from transformers import TrainerCallback

    class KeyValueMetrics(TrainerCallback):
        """Log every Trainer log event as one key=value line (rank 0 only)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                log.info("%s", format_metrics(logs, state.epoch, state.global_step))

    return KeyValueMetrics()


def _quiet_datasets() -> None:
    import datasets

    datasets.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()


def _quiet_transformers() -> None:
    """Route transformers logs through our handler (timestamps), warnings and up only."""
    import transformers

    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()


def tokenize(splits: Splits, tokenizer: Any, hps: TrainingHyperparameters) -> dict[str, Any]:
    """Tokenized train/validation datasets with only the model's columns left."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[hps.text_pair_column] if hps.text_pair_column else None
        return tokenizer(
            batch[hps.text_column], pairs, truncation=True, max_length=hps.max_seq_length
        )

    out = {}
    for name, dataset in (("train", splits.train), ("validation", splits.validation)):
        if dataset is None:
            continue
        drop = [c for c in dataset.column_names if c != "labels"]
        out[name] = dataset.map(encode, batched=True, remove_columns=drop)
    return out


def publish(staging: Path, model_dir: Path) -> None:
    """Move the finished artifact into /opt/ml/model, manifest last (it marks completeness).

    /opt/ml/model may be a mount point, so its entries move one by one instead of the
    directory being renamed.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    entries = sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST)
    for entry in entries:
        target = model_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        shutil.move(str(entry), str(target))


def write_artifact(
    model: Any,
    tokenizer: Any,
    hps: TrainingHyperparameters,
    labels: tuple[str, ...],
    paths: Paths,
    flag: TerminationFlag,
) -> Path:
    """Checkpoint + compiled graphs + manifest, built in a staging dir next to /opt/ml/model."""
    from smneuron.accelerator import detect_backend
    from smneuron.compile import compile_artifact, get_backend

    paths.base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-staging-", dir=paths.base))
    try:
        model = model.to("cpu").eval()
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if hps.compile:
            backend = get_backend(detect_backend())
            started = time.monotonic()
            compile_artifact(
                staging,
                model,
                task=hps.task,
                labels=labels,
                batch_size=hps.batch_size,
                sequence_lengths=hps.sequence_lengths,
                backend=backend,
                cores_per_model=hps.cores_per_model,
                compiler_args=hps.compiler_arg_list,
            )
            log.info("compiled artifact (%s) in %.1fs", backend.name, time.monotonic() - started)
        with flag.deferring():  # never leave /opt/ml/model half-moved
            publish(staging, paths.model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths.model


def _check_buckets(hps: TrainingHyperparameters, config: Any) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if hps.compile and limit and max(hps.sequence_lengths) > limit:
        raise ConfigurationError(
            f"sequence_lengths: bucket {max(hps.sequence_lengths)} is longer than the model's "
            f"max_position_embeddings {limit}; use buckets ≤ {limit}"
        )


# --------------------------------------------------------------------------------------------
# The whole job


def train(env: TrainingEnv, hps: TrainingHyperparameters, flag: TerminationFlag) -> TrainResult:
    """Fine-tune, evaluate and (on rank 0) write the serving artifact to /opt/ml/model."""
    source = resolve_model_source(hps, env.channels)
    _quiet_datasets()
    with tempfile.TemporaryDirectory(prefix="smneuron-data-") as cache:
        splits = load_splits(
            env.channels,
            train_channel=hps.train_channel,
            validation_channel=hps.validation_channel,
            text_column=hps.text_column,
            text_pair_column=hps.text_pair_column,
            label_column=hps.label_column,
            labels=hps.labels,
            data_format=hps.data_format,
            cache_dir=Path(cache),
        )
        return _fit(env, hps, flag, source, splits)


def _fit(
    env: TrainingEnv,
    hps: TrainingHyperparameters,
    flag: TerminationFlag,
    source: str,
    splits: Splits,
) -> TrainResult:
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    _quiet_transformers()
    paths = env.paths
    labels = splits.label_names
    local_only = not hps.allow_hub_download
    log.info("pretrained model: %s; labels: %s", source, ", ".join(labels))
    transformers.set_seed(hps.seed)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        ignore_mismatched_sizes=True,
        local_files_only=local_only,
    )
    _check_buckets(hps, model.config)
    if hps.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    tokenized = tokenize(splits, tokenizer, hps)
    distributed = int(os.environ.get(ENV.WORLD_SIZE, "1")) > 1
    on_cpu = _backend() == "cpu"
    args = TrainingArguments(
        output_dir=str(paths.checkpoints),
        num_train_epochs=hps.epochs,
        max_steps=hps.max_steps,
        learning_rate=hps.learning_rate,
        weight_decay=hps.weight_decay,
        warmup_ratio=hps.warmup_ratio,
        per_device_train_batch_size=hps.per_device_train_batch_size,
        per_device_eval_batch_size=hps.per_device_eval_batch_size,
        gradient_accumulation_steps=hps.gradient_accumulation_steps,
        seed=hps.seed,
        bf16=hps.bf16,
        logging_strategy="steps",
        logging_steps=hps.logging_steps,
        save_strategy="steps",
        save_steps=hps.save_steps,
        save_total_limit=hps.save_total_limit,
        save_on_each_node=True,  # every host keeps its own /opt/ml/checkpoints to resume from
        eval_strategy="epoch" if "validation" in tokenized else "no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=on_cpu,
        ddp_backend="gloo" if distributed and on_cpu else None,
        ddp_find_unused_parameters=False if distributed else None,
        dataloader_num_workers=0,
        group_by_length=hps.group_by_length,
    )
    stopper = checkpoint_callback(flag)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[metrics_callback(), stopper],
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts; we log key=value lines
    resume = latest_checkpoint(paths.checkpoints)
    if resume is not None:
        log.info("resuming from %s", resume)
    started = time.monotonic()
    with flag.deferring():
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    step = trainer.state.global_step
    if flag.requested:
        saved = paths.checkpoints / f"checkpoint-{step}"
        raise Terminated(
            f"stopped by SIGTERM at step {step}; checkpoint saved to {saved}; a job with the "
            "same checkpoint location resumes from it"
        )
    log.info("training took %.1fs (%d steps)", time.monotonic() - started, step)
    metrics = _final_metrics(trainer) if "validation" in tokenized else {}
    artifact = None
    if trainer.is_world_process_zero():
        _write_metrics(paths, metrics, step)
        artifact = write_artifact(trainer.model, tokenizer, hps, labels, paths, flag)
        log.info("artifact written to %s", artifact)
    return TrainResult(metrics, step, labels, resume, artifact)


def _final_metrics(trainer: Any) -> dict[str, float]:
    """The evaluation at the last step: the one the Trainer already ran, else a new one."""
    step = trainer.state.global_step
    done = [e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == step]
    metrics = done[-1] if done else trainer.evaluate()
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "step"}


def _backend() -> str:
    from smneuron.accelerator import detect_backend

    return detect_backend()


def _write_metrics(paths: Paths, metrics: Mapping[str, float], step: int) -> None:
    paths.output_data.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
    payload = {"global_step": step, **clean}
    (paths.output_data / METRICS_FILE).write_text(json.dumps(payload, indent=2) + "\n")
