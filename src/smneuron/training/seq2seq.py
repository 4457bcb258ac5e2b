"""Sequence-to-sequence fine-tuning (``task=seq2seq``): source/target columns -> an artifact.

An encoder-decoder (T5, BART, ...) learns to write ``target_column`` from ``source_column``
(both cut at ``max_seq_length`` tokens, padded per batch; on Neuron to ``max_seq_length``).
The metric lines carry ``train_loss`` and, with a validation channel, ``eval_loss`` after each
epoch and, at the end, ``eval_rougeL``: the ROUGE-L F1 (longest common subsequence of
lower-cased words) of greedy generations against the targets. The artifact is the checkpoint
plus a generation manifest (``smneuron.artifact.generation``, task ``seq2seq``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smneuron.errors import ConfigurationError
from smneuron.job import TrainingEnv
from smneuron.training.causal import load_pretrained, with_lora, write_generation_artifact
from smneuron.training.checkpoints import (
    TerminationFlag,
    checkpoint_callback,
    latest_checkpoint,
    trainer_class,
)
from smneuron.training.data import channel_files, check_columns, check_text, load_channel
from smneuron.training.hyperparameters import TrainingHyperparameters
from smneuron.training.output import write_metrics

log = logging.getLogger(__name__)

ROUGE_BATCH = 8


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of two texts over lower-cased whitespace words (0.0 when either is empty)."""
    a, b = prediction.lower().split(), reference.lower().split()
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if word == other else max(previous[j], current[-1]))
        previous = current
    common = previous[-1]
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


def load_pairs(
    channels: Mapping[str, Path], hps: TrainingHyperparameters, cache_dir: Path
) -> dict[str, Any]:
    names = [("train", hps.train_channel)]
    if hps.validation_channel:
        names.append(("validation", hps.validation_channel))
    columns = [hps.source_column, hps.target_column]
    out = {}
    for split, channel in names:
        dataset = load_channel(channel_files(channel, channels, hps.data_format), cache_dir)
        check_columns(dataset, channel, columns)
        for column in columns:
            check_text(dataset, channel, column)
        out[split] = dataset.select_columns(columns)
    return out


def tokenize_pairs(dataset: Any, tokenizer: Any, hps: TrainingHyperparameters) -> Any:
    def encode(batch: dict[str, list]) -> dict[str, list]:
        inputs = tokenizer(
            batch[hps.source_column],
            truncation=True,
            max_length=hps.max_seq_length,
            return_token_type_ids=False,
        )
        targets = tokenizer(
            text_target=batch[hps.target_column],
            truncation=True,
            max_length=hps.max_seq_length,
            return_token_type_ids=False,
        )
        return {**inputs, "labels": targets["input_ids"]}

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


def load_seq2seq(source: str, hps: TrainingHyperparameters, *, trust_remote_code: bool) -> tuple:
    return load_pretrained(
        source, hps, "AutoModelForSeq2SeqLM", "seq2seq model", trust_remote_code=trust_remote_code
    )


def greedy_rouge_l(
    model: Any, tokenizer: Any, sources: Sequence[str], targets: Sequence[str], length: int
) -> float:
    """Mean ROUGE-L F1 of greedy generations for ``sources`` against ``targets``."""
    import torch

    model = model.to("cpu").eval()
    scores = []
    for start in range(0, len(sources), ROUGE_BATCH):
        batch = tokenizer(
            list(sources[start : start + ROUGE_BATCH]),
            truncation=True,
            max_length=length,
            padding=True,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=length, do_sample=False)
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        scores += [
            rouge_l(text, target)
            for text, target in zip(texts, targets[start : start + ROUGE_BATCH], strict=True)
        ]
    return sum(scores) / len(scores) if scores else 0.0


def train_seq2seq(
    env: TrainingEnv, hps: TrainingHyperparameters, flag: TerminationFlag, backend: str
) -> Any:
    """Fine-tune an encoder-decoder and (on rank 0) publish its generation artifact."""
    import os

    from transformers import DataCollatorForSeq2Seq, PrinterCallback

    from smneuron.env import ENV
    from smneuron.training import trainer as encoder

    source = encoder.resolve_model_source(hps, env.channels)
    if backend == "neuron" and hps.compile:
        raise ConfigurationError(
            "seq2seq on Neuron: train with compile=false, then export the checkpoint with "
            "`smneuron compile --backend neuron` (optimum-neuron)"
        )
    encoder._quiet_datasets()
    encoder._quiet_transformers()
    on_neuron = backend == "neuron"
    precompile_run = encoder._start_neuron_process() if on_neuron else False
    tokenizer, model = load_seq2seq(source, hps, trust_remote_code=env.trust_remote_code)
    model, lora = with_lora(model, hps)
    with tempfile.TemporaryDirectory(prefix="smneuron-data-") as cache:
        pairs = load_pairs(env.channels, hps, Path(cache))
        tokenized = {name: tokenize_pairs(ds, tokenizer, hps) for name, ds in pairs.items()}
        held_out = (
            (
                list(pairs["validation"][hps.source_column]),
                list(pairs["validation"][hps.target_column]),
            )
            if "validation" in pairs
            else None
        )
    evaluate = "validation" in tokenized and not precompile_run
    with contextlib.ExitStack() as stack:
        output_dir = env.paths.checkpoints
        if precompile_run:
            scratch = tempfile.TemporaryDirectory(prefix="smneuron-precompile-")
            output_dir = Path(stack.enter_context(scratch))
        args = encoder.training_arguments(
            hps,
            output_dir,
            validation=evaluate,
            distributed=int(os.environ.get(ENV.WORLD_SIZE, "1")) > 1,
            on_cpu=not on_neuron,
            max_steps=encoder.precompile_steps(hps) if precompile_run else None,
        )
        padding: dict[str, Any] = (
            {"padding": "max_length", "max_length": hps.max_seq_length} if on_neuron else {}
        )
        trainer = trainer_class()(
            model=model,
            args=args,
            train_dataset=tokenized["train"],
            eval_dataset=tokenized.get("validation") if evaluate else None,
            processing_class=tokenizer,
            data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, **padding),
            callbacks=[encoder.metrics_callback(), checkpoint_callback(flag)],
        )
        trainer.remove_callback(PrinterCallback)
        resume = None if precompile_run else latest_checkpoint(env.paths.checkpoints)
        seconds = encoder._run(trainer, resume, flag)
    step = trainer.state.global_step
    encoder._raise_if_stopped(flag, step, env.paths.checkpoints, precompile_run)
    log.info("training took %.1fs (%d steps)", seconds, step)
    if precompile_run:
        return encoder.TrainResult({}, step, (), None, None, precompile_run=True)
    metrics: dict[str, float] = {}
    artifact = None
    if trainer.is_world_process_zero():
        if evaluate and held_out is not None:
            metrics = dict(encoder._final_metrics(trainer))
            metrics["eval_rougeL"] = greedy_rouge_l(
                trainer.model, tokenizer, held_out[0], held_out[1], hps.max_seq_length
            )
            log.info(
                "%s",
                encoder.format_metrics(
                    {"eval_rougeL": metrics["eval_rougeL"]}, trainer.state.epoch, step
                ),
            )
        write_metrics(env.paths, metrics, step)
        artifact = write_generation_artifact(
            trainer.model, tokenizer, hps, env, flag, backend, task="seq2seq", lora=lora
        )
        log.info("artifact written to %s", artifact)
    return encoder.TrainResult(metrics, step, (), resume, artifact)
