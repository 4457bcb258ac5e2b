"""Fine-tuning: data -> tokenized splits -> transformers Trainer -> checkpoint + serving artifact.

Heavy imports (torch, transformers, datasets) happen inside the functions, so ``train --help``
and the hyperparameter checks stay fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smneuron.artifact.manifest import MEDIA_TASKS
from smneuron.env import ENV, remote_code_hint
from smneuron.errors import ConfigurationError
from smneuron.job import TrainingEnv
from smneuron.training import choices, masked, nextsentence, qa, tokens
from smneuron.training.checkpoints import (
    Terminated,
    TerminationFlag,
    checkpoint_callback,
    latest_checkpoint,
    trainer_class,
)
from smneuron.training.data import Splits, load_splits
from smneuron.training.hyperparameters import TrainingHyperparameters
from smneuron.training.output import write_artifact, write_metrics

log = logging.getLogger(__name__)

MODEL_CHANNEL = "model"
# Neuron precompile pass (neuron_parallel_compile): optimizer steps it runs at least. Enough
# for the first steps (no optimizer state yet) and a steady one; it also reaches the first
# logging step, whose graph differs (the loss is read back).
PRECOMPILE_MIN_STEPS = 3
# The auto class that puts the task's head on the pretrained encoder.
MODEL_CLASSES = {
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "fill-mask": "AutoModelForMaskedLM",
    "multiple-choice": "AutoModelForMultipleChoice",
    "next-sentence-prediction": "AutoModelForNextSentencePrediction",
}
# Tasks whose head has no label names to size (the vocabulary, one score per choice, is-next).
UNLABELLED_TASKS = ("fill-mask", "multiple-choice", "next-sentence-prediction")
# Trainer log keys renamed in the key=value lines (metric_definitions regexes rely on them).
RENAMED = {"loss": "train_loss"}


@dataclass(frozen=True)
class TrainResult:
    metrics: Mapping[str, float]
    global_step: int
    labels: tuple[str, ...]
    resumed_from: Path | None
    artifact: Path | None  # None on ranks other than 0
    precompile_run: bool = False  # a neuron_parallel_compile pass: nothing was saved


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
    # On XLA eval_do_concat_batches=False hands over one array per evaluation batch.
    if isinstance(logits, list | tuple):
        logits = np.concatenate([np.asarray(part) for part in logits])
    if isinstance(label_ids, list | tuple):
        label_ids = np.concatenate([np.asarray(part) for part in label_ids])
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


def metrics_function(hps: TrainingHyperparameters, labels: tuple[str, ...]) -> Any:
    """The task's metrics: accuracy and macro F1 (multiple choice and NSP too), entity-level
    P/R/F1 for NER; none for fill-mask (its perplexity comes from the loss)."""
    if hps.task == "token-classification":
        return tokens.metrics_for(labels)
    if hps.task == "fill-mask":
        return None
    return compute_metrics


def metrics_callback(task: str = "text-classification") -> Any:
    from transformers import TrainerCallback

    class KeyValueMetrics(TrainerCallback):
        """Log every Trainer log event as one key=value line (rank 0 only)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                if task == "fill-mask":
                    logs = masked.with_perplexity(logs)
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


def precompile_steps(hps: TrainingHyperparameters) -> int:
    """Optimizer steps of the Neuron precompile pass (graphs only; outputs are zeros)."""
    steps = max(PRECOMPILE_MIN_STEPS, hps.logging_steps + 1)
    return min(steps, hps.max_steps) if hps.max_steps > 0 else steps


def data_collator(tokenizer: Any, hps: TrainingHyperparameters, *, static_shapes: bool) -> Any:
    """Pad each batch to its longest example, or to ``max_seq_length`` for static shapes.

    On Neuron every new input shape is a new graph to compile, so batches are padded to one
    length; on CPU the shortest padding is the fastest.
    """
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    if hps.task == "fill-mask":
        return masked.collator(
            tokenizer, hps.mlm_probability, hps.max_seq_length if static_shapes else None
        )
    if hps.task == "multiple-choice":
        return choices.collator(tokenizer, hps.max_seq_length if static_shapes else None)
    if hps.task == "token-classification":  # pads the labels too, with -100
        if static_shapes:
            return DataCollatorForTokenClassification(
                tokenizer, padding="max_length", max_length=hps.max_seq_length
            )
        return DataCollatorForTokenClassification(tokenizer)
    if static_shapes:
        return DataCollatorWithPadding(
            tokenizer, padding="max_length", max_length=hps.max_seq_length
        )
    return DataCollatorWithPadding(tokenizer)


def _check_buckets(hps: TrainingHyperparameters, config: Any) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if hps.compile and limit and max(hps.sequence_lengths) > limit:
        raise ConfigurationError(
            f"sequence_lengths: bucket {max(hps.sequence_lengths)} is longer than the model's "
            f"max_position_embeddings {limit}; use buckets ≤ {limit}"
        )


# --------------------------------------------------------------------------------------------
# The whole job


def train(
    env: TrainingEnv, hps: TrainingHyperparameters, flag: TerminationFlag, backend: str
) -> TrainResult:
    """Fine-tune, evaluate and (on rank 0) write the serving artifact to /opt/ml/model.

    ``backend`` (``cpu`` or ``neuron``) is decided once by ``train``'s entry point.
    """
    if hps.task == "causal-lm":  # generation: its own data, trainer and artifact
        from smneuron.training.causal import train_causal

        return train_causal(env, hps, flag, backend)
    if hps.task == "seq2seq":
        from smneuron.training.seq2seq import train_seq2seq

        return train_seq2seq(env, hps, flag, backend)
    if hps.task in MEDIA_TASKS:  # image and audio files, not text columns
        from smneuron.training import media

        return media.train(env, hps, flag, backend)
    source = resolve_model_source(hps, env.channels)
    _quiet_datasets()
    count = None  # multiple-choice: choices per row
    with tempfile.TemporaryDirectory(prefix="smneuron-data-") as cache:
        common: dict[str, Any] = {
            "train_channel": hps.train_channel,
            "validation_channel": hps.validation_channel,
            "data_format": hps.data_format,
            "cache_dir": Path(cache),
        }
        if hps.task == "question-answering":
            splits = qa.load_qa_splits(
                env.channels,
                question_column=hps.question_column,
                context_column=hps.context_column,
                answers_column=hps.answers_column,
                **common,
            )
        elif hps.task == "fill-mask":
            splits = masked.load_text_splits(env.channels, text_column=hps.text_column, **common)
        elif hps.task == "multiple-choice":
            splits, count = choices.load_choice_splits(
                env.channels,
                text_column=hps.text_column,
                choices_column=hps.choices_column,
                label_column=hps.label_column,
                **common,
            )
        elif hps.task == "next-sentence-prediction":
            splits = nextsentence.load_pair_splits(
                env.channels,
                text_column=hps.text_column,
                text_pair_column=hps.text_pair_column,
                is_next_column=hps.is_next_column,
                **common,
            )
        elif hps.task == "token-classification":
            splits = tokens.load_token_splits(
                env.channels,
                train_channel=hps.train_channel,
                validation_channel=hps.validation_channel,
                tokens_column=hps.tokens_column,
                tags_column=hps.tags_column,
                labels=hps.labels,
                data_format=hps.data_format,
                cache_dir=Path(cache),
            )
        else:
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
        return _fit(env, hps, flag, source, splits, backend, count)


def _fit(
    env: TrainingEnv,
    hps: TrainingHyperparameters,
    flag: TerminationFlag,
    source: str,
    splits: Splits,
    backend: str,
    num_choices: int | None = None,
) -> TrainResult:
    """Load, train (resuming from the latest checkpoint), then publish on rank 0."""
    _quiet_transformers()
    paths = env.paths
    labels = splits.label_names
    on_neuron = backend == "neuron"  # else cpu
    precompile_run = _start_neuron_process() if on_neuron else False
    log.info("pretrained model: %s; labels: %s", source, ", ".join(labels))
    tokenizer, model = load_pretrained(source, labels, hps, trust_remote_code=env.trust_remote_code)
    if num_choices is not None:  # saved in config.json: `smneuron compile` reads it back
        model.config.num_choices = num_choices
    metrics_fn = None
    if hps.task == "question-answering":  # windows of the context; EM/F1 read their offsets
        tokenized, windows = qa.tokenize_qa(splits, tokenizer, hps.max_seq_length, hps.doc_stride)
        metrics_fn = qa.metrics_for(windows) if windows is not None else None
    elif hps.task == "fill-mask":
        tokenized = masked.tokenize(splits, tokenizer, hps.max_seq_length)
    elif hps.task == "multiple-choice":
        tokenized = choices.tokenize(splits, tokenizer, hps.max_seq_length)
    elif hps.task == "next-sentence-prediction":
        tokenized = nextsentence.tokenize(splits, tokenizer, hps.max_seq_length)
    elif hps.task == "token-classification":
        tokenized = tokens.tokenize_words(splits, tokenizer, hps.max_seq_length)
    else:
        tokenized = tokenize(splits, tokenizer, hps)
    with contextlib.ExitStack() as stack:
        output_dir = paths.checkpoints
        if precompile_run:
            # The precompile pass trains on zeros: its checkpoints go to scratch, never to
            # /opt/ml/checkpoints, where the real run would resume from them.
            scratch = tempfile.TemporaryDirectory(prefix="smneuron-precompile-")
            output_dir = Path(stack.enter_context(scratch))
        trainer = _make_trainer(
            model,
            tokenizer,
            tokenized,
            hps,
            flag,
            output_dir,
            on_neuron,
            precompile_run,
            labels,
            metrics_fn,
        )
        resume = None if precompile_run else latest_checkpoint(paths.checkpoints)
        seconds = _run(trainer, resume, flag)
    step = trainer.state.global_step
    _raise_if_stopped(flag, step, paths.checkpoints, precompile_run)
    log.info("training took %.1fs (%d steps)", seconds, step)
    if precompile_run:
        return TrainResult({}, step, labels, None, None, precompile_run=True)
    metrics = _final_metrics(trainer) if "validation" in tokenized else {}
    if hps.task == "fill-mask":
        metrics = masked.with_perplexity(metrics)
    artifact = None
    if trainer.is_world_process_zero():
        write_metrics(paths, metrics, step)
        artifact = write_artifact(trainer.model, tokenizer, hps, labels, paths, flag, backend)
        log.info("artifact written to %s", artifact)
    return TrainResult(metrics, step, labels, resume, artifact)


def _start_neuron_process() -> bool:
    """Join the XLA process group; True in a ``neuron_parallel_compile`` precompile pass."""
    from smneuron.neuron import training as neuron

    # Before TrainingArguments: the Trainer then finds torch-xla and the xla group.
    device = neuron.init_training_process()
    precompile_run = neuron.is_precompile_run()
    log.info("Neuron training on %s%s", device, " (precompile pass)" if precompile_run else "")
    return precompile_run


def _make_trainer(
    model: Any,
    tokenizer: Any,
    tokenized: Mapping[str, Any],
    hps: TrainingHyperparameters,
    flag: TerminationFlag,
    output_dir: Path,
    on_neuron: bool,
    precompile_run: bool,
    labels: tuple[str, ...] = (),
    metrics_fn: Any = None,
) -> Any:
    """The Trainer with our callbacks (key=value metrics, SIGTERM checkpoint), atomic
    checkpoints and evaluation abandoned on SIGTERM (``trainer_class``)."""
    from transformers import PrinterCallback

    Trainer = trainer_class()
    # The precompile pass runs no evaluation and no compute_metrics: its graphs return
    # zeros, and accelerate's pad_across_processes crashes on them (Neuron SDK known
    # issue "Input dimension should be either 1 or equal to the output dimension").
    evaluate = "validation" in tokenized and not precompile_run
    args = training_arguments(
        hps,
        output_dir,
        validation=evaluate,
        distributed=int(os.environ.get(ENV.WORLD_SIZE, "1")) > 1,
        on_cpu=not on_neuron,
        max_steps=precompile_steps(hps) if precompile_run else None,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("validation") if evaluate else None,
        processing_class=tokenizer,
        data_collator=data_collator(tokenizer, hps, static_shapes=on_neuron),
        compute_metrics=(metrics_fn or metrics_function(hps, labels)) if evaluate else None,
        callbacks=[metrics_callback(hps.task), checkpoint_callback(flag)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts; we log key=value lines
    return trainer


def _run(trainer: Any, resume: Path | None, flag: TerminationFlag) -> float:
    """Train (from ``resume`` when given); the seconds it took."""
    if resume is not None:
        log.info("resuming from %s", resume)
    started = time.monotonic()
    with flag.deferring():
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return time.monotonic() - started


def _raise_if_stopped(
    flag: TerminationFlag, step: int, checkpoints: Path, precompile_run: bool
) -> None:
    """Terminated when SIGTERM stopped the training (the checkpoint callback saved it)."""
    if flag.requested and precompile_run:
        raise Terminated(f"stopped by SIGTERM during the precompile pass at step {step}")
    if flag.requested:
        saved = checkpoints / f"checkpoint-{step}"
        raise Terminated(
            f"stopped by SIGTERM at step {step}; checkpoint saved to {saved}; a job with the "
            "same checkpoint location resumes from it"
        )


def load_pretrained(
    source: str,
    labels: tuple[str, ...],
    hps: TrainingHyperparameters,
    *,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Tokenizer and classification model; a head sized for ``labels`` replaces any other.

    The checkpoint's own code runs only with ``trust_remote_code`` (SMNEURON_TRUST_REMOTE_CODE).
    """
    import transformers

    transformers.set_seed(hps.seed)
    local_only = not hps.allow_hub_download
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=trust_remote_code
        )
        auto = MODEL_CLASSES[hps.task]
        # Only label tasks size their head from label names: question answering has start and
        # end logits, fill-mask the vocabulary, multiple choice one score per choice, NSP two.
        sized = (
            {
                "num_labels": len(labels),
                "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)},
            }
            if labels and hps.task not in UNLABELLED_TASKS
            else {}
        )
        model = getattr(transformers, auto).from_pretrained(
            source,
            **sized,
            ignore_mismatched_sizes=True,
            local_files_only=local_only,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as err:  # what transformers raises for a missing/broken model
        raise ConfigurationError(
            f"cannot load the pretrained model from {source}: {remote_code_hint(err)}"
        ) from err
    _check_buckets(hps, model.config)
    if hps.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return tokenizer, model


def training_arguments(
    hps: TrainingHyperparameters,
    output_dir: Path,
    *,
    validation: bool,
    distributed: bool,
    on_cpu: bool,
    max_steps: int | None = None,
) -> Any:
    """The Trainer's arguments; its output_dir is /opt/ml/checkpoints so that resume works.

    ``max_steps`` overrides the hyperparameter (the Neuron precompile pass runs a few steps).
    """
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=hps.epochs,
        max_steps=hps.max_steps if max_steps is None else max_steps,
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
        eval_strategy="epoch" if validation else "no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=on_cpu,
        ddp_backend="gloo" if distributed and on_cpu else None,
        ddp_find_unused_parameters=False if distributed else None,
        dataloader_num_workers=0,
        group_by_length=hps.group_by_length,
        # XLA: concatenating evaluation batches on the device compiles a new graph at every
        # step (Neuron SDK known issue for the HF Trainer; transformers issue 37593).
        eval_do_concat_batches=on_cpu,
        # fill-mask: no metric reads the [batch, sequence, vocabulary] logits; keep the loss.
        prediction_loss_only=hps.task == "fill-mask",
    )


def _final_metrics(trainer: Any) -> dict[str, float]:
    """The evaluation at the last step: the one the Trainer already ran, else a new one."""
    step = trainer.state.global_step
    done = [e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == step]
    metrics = done[-1] if done else trainer.evaluate()
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "step"}
