"""The training baseline of `make bench`: a plain transformers ``Trainer`` script, no smneuron.

What a user would write by hand for the spam demo: read the CSV, tokenize (truncation at
``--max-length``), ``AutoModelForSequenceClassification`` with two labels, ``Trainer`` with its
defaults except the figures both runs share (epochs, batch size, learning rate, seed). Prints
one JSON line with the Trainer's own ``train_samples_per_second``.

    python benchmarks/plain_trainer.py --model DIR --data examples/spam/data/train.csv
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    data = datasets.load_dataset("csv", data_files={"train": str(args.data)})["train"]
    names = sorted(set(data["label"]))
    data = data.map(lambda row: {"labels": names.index(row["label"])})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data = data.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=args.max_length),
        batched=True,
        remove_columns=["text", "label"],
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names))
    )
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=True,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=data,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        metrics = trainer.train().metrics
    print(json.dumps({"train_samples_per_second": metrics["train_samples_per_second"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
