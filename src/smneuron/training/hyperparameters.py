"""The training hyperparameters: one typed, validated, frozen dataclass.

SageMaker passes hyperparameters as JSON-encoded strings in hyperparameters.json;
``settings.parse_hyperparameters`` decodes and type-checks each field declared here with
``settings.hp``. ``smneuron hyperparameters`` prints this table; docs/configuration.md
documents it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from smneuron.errors import ConfigurationError
from smneuron.typed import (
    hp,
    hyperparameter_markdown,
    hyperparameter_table,
    parse_hyperparameters,
)

TASKS = (
    "text-classification",
    "token-classification",
    "question-answering",
    "fill-mask",
    "multiple-choice",
    "next-sentence-prediction",
    "causal-lm",
    "seq2seq",
    "image-classification",
    "audio-classification",
    "masked-image-modeling",
)
# Tasks that read text_pair_column (next-sentence-prediction: default "text_pair").
PAIR_TASKS = ("text-classification", "next-sentence-prediction")
DATA_FORMATS = ("auto", "csv", "jsonl", "parquet")
LORA_TASKS = ("causal-lm", "seq2seq")  # the tasks that may train LoRA adapters (peft)


@dataclass(frozen=True)
class TrainingHyperparameters:
    """Everything a training job can be told through hyperparameters.json."""

    # What to train
    task: str = hp("text-classification", "str", "what to fine-tune the encoder for", choices=TASKS)
    model_name_or_path: str = hp(
        "",
        "str",
        "pretrained model: a local directory, or a hub id when allow_hub_download is true; "
        "empty: the `model` channel",
    )
    allow_hub_download: bool = hp(
        False, "bool", "allow model_name_or_path to be downloaded from a model hub"
    )
    # Data
    train_channel: str = hp("train", "str", "channel holding the training data")
    validation_channel: str = hp(
        "validation", "str", "channel holding the validation data; empty: no validation"
    )
    data_format: str = hp(
        "auto", "str", "data file format; auto: from the file extensions", choices=DATA_FORMATS
    )
    text_column: str = hp("text", "str", "column with the input text")
    text_pair_column: str = hp(
        "",
        "str",
        "column with the second text of a pair (e.g. NLI); empty: none "
        "(next-sentence-prediction: text_pair)",
    )
    label_column: str = hp("label", "str", "column with the label name (or number)")
    source_column: str = hp("source", "str", "seq2seq: column with the input text")
    target_column: str = hp("target", "str", "seq2seq: column with the text to generate")
    tokens_column: str = hp(
        "tokens", "str", "token-classification: column with each row's list of words"
    )
    tags_column: str = hp(
        "ner_tags",
        "str",
        "token-classification: column with one tag per word (BIO names, or ids into labels)",
    )
    choices_column: str = hp(
        "choices", "str", "multiple-choice: column with each row's list of choices"
    )
    is_next_column: str = hp(
        "is_next",
        "str",
        "next-sentence-prediction: column saying whether text_pair follows text (true/false)",
    )
    mlm_probability: float = hp(
        0.15,
        "float",
        "fill-mask: fraction of the tokens masked at random in each batch",
        minimum=0.01,
        maximum=1.0,
    )
    question_column: str = hp("question", "str", "question-answering: column with the question")
    context_column: str = hp(
        "context", "str", "question-answering: column with the text that holds the answer"
    )
    answers_column: str = hp(
        "answers",
        "str",
        'question-answering: column with the answers in SQuAD form, {"text": [...], '
        '"answer_start": [...]} (CSV: as JSON)',
    )
    doc_stride: int = hp(
        128,
        "int",
        "question-answering: tokens two windows of a long context share, in training and "
        "when served (at most half of max_seq_length / of the largest bucket)",
        minimum=0,
    )
    file_column: str = hp(
        "",
        "str",
        "image/audio manifests (CSV, JSON Lines): column with each file's path, relative to "
        "the manifest; empty: the first of file_name, file, path, image, audio",
    )
    labels: tuple[str, ...] = hp(
        (),
        "str_list",
        "label names in logit order; empty: the sorted distinct values of the training labels "
        "(token-classification: O first, then the other tags sorted)",
    )
    max_seq_length: int = hp(
        128, "int", "tokens per training example (longer ones are truncated)", minimum=8
    )
    packing: bool = hp(
        False,
        "bool",
        "causal-lm: concatenate the texts and cut them into blocks of max_seq_length tokens "
        "instead of padding one text per example",
    )
    # Optimisation
    epochs: float = hp(3.0, "float", "passes over the training data", minimum=0.0)
    max_steps: int = hp(
        -1, "int", "optimizer steps to run; overrides epochs when > 0; -1: use epochs", minimum=-1
    )
    learning_rate: float = hp(1e-4, "float", "peak learning rate (AdamW)", minimum=0.0, maximum=1.0)
    weight_decay: float = hp(0.01, "float", "AdamW weight decay", minimum=0.0, maximum=1.0)
    warmup_ratio: float = hp(
        0.1, "float", "fraction of steps with a linear warm-up", minimum=0.0, maximum=1.0
    )
    per_device_train_batch_size: int = hp(32, "int", "training batch size per process", minimum=1)
    per_device_eval_batch_size: int = hp(64, "int", "evaluation batch size per process", minimum=1)
    gradient_accumulation_steps: int = hp(
        1, "int", "batches accumulated per optimizer step", minimum=1
    )
    seed: int = hp(42, "int", "random seed (data order, classifier head initialisation)")
    bf16: bool = hp(False, "bool", "train in bfloat16 mixed precision")
    freeze_embeddings: bool = hp(
        False,
        "bool",
        "keep the word embeddings fixed (much faster on CPU: no gradient or optimizer state "
        "for the vocabulary matrix)",
    )
    group_by_length: bool = hp(
        True, "bool", "batch examples of similar length together (less padding, faster)"
    )
    lora_r: int = hp(
        0,
        "int",
        "causal-lm, seq2seq: rank of the LoRA adapters trained through peft instead of all "
        "the weights (merged into the weights before the artifact is written); 0: no LoRA",
        minimum=0,
        maximum=1024,
    )
    lora_alpha: int = hp(
        16,
        "int",
        "LoRA scaling: the adapters' output is multiplied by lora_alpha / lora_r",
        minimum=1,
    )
    lora_dropout: float = hp(
        0.05, "float", "dropout on the LoRA adapters' input in training", minimum=0.0, maximum=0.9
    )
    lora_target_modules: tuple[str, ...] = hp(
        (),
        "str_list",
        "layers that get LoRA adapters, by the last part of their name (e.g. c_attn for GPT-2, "
        "q,v for T5); empty: peft's default for the model type",
    )
    # Logging and checkpoints
    logging_steps: int = hp(10, "int", "log train metrics every N steps", minimum=1)
    save_steps: int = hp(
        200, "int", "save a checkpoint to /opt/ml/checkpoints every N steps", minimum=1
    )
    save_total_limit: int = hp(2, "int", "checkpoints kept in /opt/ml/checkpoints", minimum=1)
    # Serving artifact
    compile: bool = hp(
        True, "bool", "trace static-shape graphs into compiled/ and write manifest.json"
    )
    batch_size: int = hp(8, "int", "largest batch size of the compiled graphs", minimum=1)
    batch_sizes: tuple[int, ...] = hp(
        (1, 2, 4, 8),
        "int_list",
        "the smaller batch sizes also compiled (those above batch_size are dropped): one more "
        "graph per bucket each, so a lone request runs at batch 1",
        minimum=1,
        maximum=1024,
    )
    sequence_lengths: tuple[int, ...] = hp(
        (32, 64, 128),
        "int_list",
        "sequence-length buckets: one compiled graph each per batch size",
        minimum=1,
        maximum=8192,
    )
    max_masks: int = hp(
        1,
        "int",
        "fill-mask: mask tokens one served input may hold (the graph returns the vocabulary "
        "scores at this many positions)",
        minimum=1,
        maximum=64,
    )
    max_total_length: int = hp(
        0,
        "int",
        "causal-lm: prompt + new tokens one sequence may hold when served (sequence_lengths "
        "are the prompt buckets, batch_size the sequences per loop); 0: twice the largest "
        "bucket, capped by the model's positions. seq2seq: the most new tokens; 0: the "
        "largest bucket",
        minimum=0,
    )
    audio_durations: tuple[float, ...] = hp(
        (1.0, 2.0, 4.0),
        "float_list",
        "audio-classification: duration buckets in seconds (one compiled graph each per batch "
        "size); training clips are cut to the largest",
        minimum=0.01,
        maximum=600.0,
    )
    mask_ratio: float = hp(
        0.6,
        "float",
        "masked-image-modeling: fraction of the image patches masked in each training example",
        minimum=0.0,
        maximum=1.0,
    )
    cores_per_model: int = hp(
        1,
        "int",
        "NeuronCores one served model copy uses: 1 (a traced encoder runs on one NeuronCore)",
        minimum=1,
    )
    precompile: bool = hp(
        False, "bool", "Neuron: compile the training graphs ahead of time (neuron_parallel_compile)"
    )
    compiler_args: str = hp(
        "",
        "str",
        "neuronx-cc flags for the artifact, replacing the defaults "
        "(empty: --auto-cast matmult --auto-cast-type bf16)",
    )

    @property
    def compiler_arg_list(self) -> tuple[str, ...]:
        return tuple(self.compiler_args.split())


def load(raw: Mapping[str, Any]) -> TrainingHyperparameters:
    """Parse hyperparameters.json content; any problem is a ConfigurationError naming the field."""
    hps = parse_hyperparameters(TrainingHyperparameters, raw)
    if hps.epochs <= 0 and hps.max_steps <= 0:
        raise ConfigurationError(
            f"epochs: {hps.epochs} with max_steps {hps.max_steps} trains nothing; "
            "set epochs > 0 or max_steps > 0"
        )
    if hps.text_pair_column and hps.task not in PAIR_TASKS:
        raise ConfigurationError(
            f"text_pair_column: pairs are for tasks {', '.join(PAIR_TASKS)}, not {hps.task}; "
            "leave text_pair_column empty"
        )
    if hps.text_pair_column and hps.text_pair_column == hps.text_column:
        raise ConfigurationError(
            f"text_pair_column: {hps.text_pair_column!r} is also the text_column; "
            "name the column with the second text"
        )
    if len(set(hps.labels)) != len(hps.labels):
        raise ConfigurationError(f"labels: names repeat in {list(hps.labels)}")
    if hps.labels and len(hps.labels) < 2:
        raise ConfigurationError(f"labels: need at least 2 label names, got {list(hps.labels)}")
    if hps.lora_r and hps.task not in LORA_TASKS:
        raise ConfigurationError(
            f"lora_r: LoRA is for tasks {', '.join(LORA_TASKS)}, not {hps.task}; set lora_r=0"
        )
    if hps.lora_target_modules and not hps.lora_r:
        raise ConfigurationError(
            "lora_target_modules: set but lora_r is 0 (no LoRA); set lora_r > 0 to train "
            "adapters, or leave lora_target_modules empty"
        )
    from smneuron.accelerator import check_cores_per_model

    check_cores_per_model(hps.cores_per_model)  # before training, not after it
    return hps


# --------------------------------------------------------------------------------------------
# `smneuron hyperparameters`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("table", "markdown", "json"),
        default="table",
        help="output format (markdown: the table in docs/configuration.md)",
    )


def markdown_table() -> str:
    return hyperparameter_markdown(TrainingHyperparameters)


def run(args: argparse.Namespace) -> int:
    if args.format == "json":
        defaults = asdict(TrainingHyperparameters())
        print(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}))
    elif args.format == "markdown":
        print(markdown_table())
    else:
        rows = hyperparameter_table(TrainingHyperparameters)
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for name, kind, default, text in rows:
            print(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {default:<{widths[2]}}  {text}")
    return 0
