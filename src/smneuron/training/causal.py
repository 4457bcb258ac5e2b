"""Causal-LM fine-tuning (``task=causal-lm``): a text column -> a generation artifact.

Each text is tokenized and ended with the EOS token; then either padded (one example per
text, cut at ``max_seq_length``) or, with ``packing=true``, concatenated and cut into blocks of
exactly ``max_seq_length`` tokens (no padding at all; a last partial block is dropped unless it
is the only one). The loss is the next-token loss on every real token; perplexity
(``exp(loss)``) joins the key=value log lines as ``train_perplexity`` / ``eval_perplexity``.

The artifact is the fine-tuned checkpoint plus a manifest with the static generation limits
(``smneuron.artifact.generation``): ``batch_size`` sequences, ``sequence_lengths`` as prompt
buckets, ``max_total_length`` tokens per sequence.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smneuron.env import remote_code_hint
from smneuron.errors import ConfigurationError, DataError
from smneuron.job import TrainingEnv
from smneuron.training.checkpoints import (
    TerminationFlag,
    checkpoint_callback,
    latest_checkpoint,
    trainer_class,
)
from smneuron.training.data import channel_files, check_columns, check_text, load_channel
from smneuron.training.hyperparameters import TrainingHyperparameters
from smneuron.training.output import publish, write_metrics

log = logging.getLogger(__name__)


def perplexity(loss: float) -> float:
    """``exp(loss)``, infinite past what a float holds."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def with_perplexity(logs: Mapping[str, Any]) -> dict[str, Any]:
    """``logs`` plus ``train_perplexity`` (from ``loss``) and ``eval_perplexity``."""
    out = dict(logs)
    if isinstance(logs.get("loss"), int | float):
        out["train_perplexity"] = perplexity(float(logs["loss"]))
    if isinstance(logs.get("eval_loss"), int | float):
        out["eval_perplexity"] = perplexity(float(logs["eval_loss"]))
    return out


def load_texts(
    channels: Mapping[str, Path], hps: TrainingHyperparameters, cache_dir: Path
) -> dict[str, Any]:
    """The train (and validation) datasets with their text column checked."""
    names = [("train", hps.train_channel)]
    if hps.validation_channel:
        names.append(("validation", hps.validation_channel))
    out = {}
    for split, channel in names:
        dataset = load_channel(channel_files(channel, channels, hps.data_format), cache_dir)
        check_columns(dataset, channel, [hps.text_column])
        check_text(dataset, channel, hps.text_column)
        out[split] = dataset.select_columns([hps.text_column])
    return out


def tokenize_texts(dataset: Any, tokenizer: Any, hps: TrainingHyperparameters) -> Any:
    """input_ids per example: each text + EOS, padded later or packed into full blocks."""
    length = hps.max_seq_length
    eos = tokenizer.eos_token_id

    def encode(batch: dict[str, list]) -> dict[str, list]:
        ids = tokenizer(batch[hps.text_column], add_special_tokens=False)["input_ids"]
        ids = [row + [eos] if eos is not None else row for row in ids]
        if not hps.packing:
            rows = [row[:length] for row in ids if row]
            return {"input_ids": rows, "attention_mask": [[1] * len(row) for row in rows]}
        flat = [token for row in ids for token in row]
        blocks = [flat[i : i + length] for i in range(0, len(flat), length)]
        if len(blocks) > 1 and len(blocks[-1]) < length:
            blocks.pop()  # a short tail would need padding: drop it
        return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]}

    # Packing joins texts across the whole split: one batch for the map.
    size = len(dataset) if hps.packing else 1000
    encoded = dataset.map(
        encode, batched=True, batch_size=max(size, 1), remove_columns=dataset.column_names
    )
    if len(encoded) == 0:
        raise DataError("no training text left after tokenizing: the text column is empty")
    return encoded


def load_pretrained(
    source: str,
    hps: TrainingHyperparameters,
    auto_class: str,
    what: str,
    *,
    trust_remote_code: bool,
) -> tuple:
    """Tokenizer and ``transformers.<auto_class>`` model from ``source`` (local files unless
    hub downloads are allowed), seeded, embeddings frozen when asked; a load failure is a
    ConfigurationError naming ``what`` was loaded."""
    import transformers

    transformers.set_seed(hps.seed)
    local_only = not hps.allow_hub_download
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=trust_remote_code
        )
        model = getattr(transformers, auto_class).from_pretrained(
            source, local_files_only=local_only, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ConfigurationError(
            f"cannot load the pretrained {what} from {source}: {remote_code_hint(err)}"
        ) from err
    if hps.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return tokenizer, model


def load_causal(source: str, hps: TrainingHyperparameters, *, trust_remote_code: bool) -> tuple:
    """Tokenizer (with a pad token: EOS when it has none) and the causal LM."""
    tokenizer, model = load_pretrained(
        source, hps, "AutoModelForCausalLM", "causal LM", trust_remote_code=trust_remote_code
    )
    if tokenizer.eos_token_id is None and model.config.eos_token_id is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ConfigurationError(
                f"the tokenizer of {source} has neither a pad nor an EOS token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def collator(tokenizer: Any, hps: TrainingHyperparameters, *, static_shapes: bool) -> Any:
    """Pads (to ``max_seq_length`` for static shapes) and sets labels = input ids, padding
    ignored (-100)."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(
        tokenizer, mlm=False, pad_to_multiple_of=hps.max_seq_length if static_shapes else None
    )


def perplexity_callback() -> Any:
    from transformers import TrainerCallback

    class Perplexity(TrainerCallback):
        """Adds perplexity to each log event before the key=value line is written."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None:
                logs.update(with_perplexity(logs))

    return Perplexity()


def train_causal(
    env: TrainingEnv, hps: TrainingHyperparameters, flag: TerminationFlag, backend: str
) -> Any:
    """Fine-tune a causal LM and (on rank 0) publish its generation artifact."""
    from smneuron.training import trainer as encoder

    source = encoder.resolve_model_source(hps, env.channels)
    if backend == "neuron" and hps.compile:  # before training, not after it
        raise ConfigurationError(
            "causal-lm on Neuron: train with compile=false, then export the checkpoint with "
            "`smneuron compile --backend neuron` (optimum-neuron)"
        )
    encoder._quiet_datasets()
    encoder._quiet_transformers()
    on_neuron = backend == "neuron"
    precompile_run = encoder._start_neuron_process() if on_neuron else False
    tokenizer, model = load_causal(source, hps, trust_remote_code=env.trust_remote_code)
    model, lora = with_lora(model, hps)
    with tempfile.TemporaryDirectory(prefix="smneuron-data-") as cache:
        texts = load_texts(env.channels, hps, Path(cache))
        tokenized = {name: tokenize_texts(ds, tokenizer, hps) for name, ds in texts.items()}
    log.info(
        "causal-lm: %d training examples of ≤ %d tokens (%s)",
        len(tokenized["train"]),
        hps.max_seq_length,
        "packed" if hps.packing else "padded",
    )
    with contextlib.ExitStack() as stack:
        output_dir = env.paths.checkpoints
        if precompile_run:
            scratch = tempfile.TemporaryDirectory(prefix="smneuron-precompile-")
            output_dir = Path(stack.enter_context(scratch))
        trainer = make_trainer(
            model, tokenizer, tokenized, hps, flag, output_dir, on_neuron, precompile_run
        )
        resume = None if precompile_run else latest_checkpoint(env.paths.checkpoints)
        seconds = encoder._run(trainer, resume, flag)
    step = trainer.state.global_step
    encoder._raise_if_stopped(flag, step, env.paths.checkpoints, precompile_run)
    log.info("training took %.1fs (%d steps)", seconds, step)
    if precompile_run:
        return encoder.TrainResult({}, step, (), None, None, precompile_run=True)
    metrics = {}
    if "validation" in tokenized:
        metrics = with_perplexity(encoder._final_metrics(trainer))
        metrics.pop("loss", None)
        metrics.pop("train_perplexity", None)
    artifact = None
    if trainer.is_world_process_zero():
        write_metrics(env.paths, metrics, step)
        artifact = write_generation_artifact(
            trainer.model, tokenizer, hps, env, flag, backend, lora=lora
        )
        log.info("artifact written to %s", artifact)
    return encoder.TrainResult(metrics, step, (), resume, artifact)


def with_lora(model: Any, hps: TrainingHyperparameters) -> tuple[Any, dict | None]:
    """``model`` with LoRA adapters when ``lora_r > 0`` (and the settings the manifest
    records), else ``model`` as it is and None."""
    if not hps.lora_r:
        return model, None
    from smneuron.training.lora import apply_lora, lora_settings

    model, targets = apply_lora(model, hps)
    return model, lora_settings(hps, targets)


def make_trainer(
    model: Any,
    tokenizer: Any,
    tokenized: Mapping[str, Any],
    hps: TrainingHyperparameters,
    flag: TerminationFlag,
    output_dir: Path,
    on_neuron: bool,
    precompile_run: bool,
) -> Any:
    import os

    from transformers import PrinterCallback

    from smneuron.env import ENV
    from smneuron.training import trainer as encoder

    evaluate = "validation" in tokenized and not precompile_run
    args = encoder.training_arguments(
        hps,
        output_dir,
        validation=evaluate,
        distributed=int(os.environ.get(ENV.WORLD_SIZE, "1")) > 1,
        on_cpu=not on_neuron,
        max_steps=encoder.precompile_steps(hps) if precompile_run else None,
    )
    trainer = trainer_class()(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("validation") if evaluate else None,
        processing_class=tokenizer,
        data_collator=collator(tokenizer, hps, static_shapes=on_neuron),
        callbacks=[perplexity_callback(), encoder.metrics_callback(), checkpoint_callback(flag)],
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def write_generation_artifact(
    model: Any,
    tokenizer: Any,
    hps: TrainingHyperparameters,
    env: TrainingEnv,
    flag: TerminationFlag,
    backend: str,
    task: str = "causal-lm",
    lora: Mapping[str, Any] | None = None,
) -> Path:
    """Checkpoint + generation manifest, staged next to /opt/ml/model and moved in whole.

    A LoRA model (``lora``: its settings) is merged into its weights first, so the
    checkpoint is a plain one; the manifest records ``lora`` in its task parameters.
    """
    from smneuron.artifact.generation import write_generation_manifest
    from smneuron.training.lora import merged

    paths = env.paths
    paths.base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".model-staging-", dir=paths.base))
    try:
        model = merged(model.to("cpu")).eval()
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if hps.compile:
            write_generation_manifest(
                staging,
                task=task,
                config=model.config.to_dict(),
                batch_size=hps.batch_size,
                prompt_lengths=hps.sequence_lengths,
                max_total_length=hps.max_total_length or None,
                extra={"lora": dict(lora)} if lora else None,
            )
        with flag.deferring():
            publish(staging, paths.model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths.model
