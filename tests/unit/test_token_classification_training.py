"""Token classification training: data formats, label alignment, entity F1, and a tiny run
on examples/ner whose artifact serves what the Hugging Face pipeline answers."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from smneuron.errors import DataError
from smneuron.training.tokens import (
    IGNORED,
    align_labels,
    entity_scores,
    entity_spans,
    load_token_splits,
)

pytest.importorskip("datasets")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ner" / "data"
ROWS = [
    {"tokens": ["John", "lives", "in", "Berlin"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
    {"tokens": ["Ana", "Lopez"], "ner_tags": ["B-PER", "I-PER"]},
]


def parquet_bytes(rows) -> bytes:
    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer)
    return buffer.getvalue()


def load(opt_ml, **overrides):
    options = {
        "train_channel": "train",
        "validation_channel": "",
        "tokens_column": "tokens",
        "tags_column": "ner_tags",
    }
    options.update(overrides)
    channels = {p.name: p for p in opt_ml.paths.data.iterdir()}
    return load_token_splits(channels, cache_dir=opt_ml.base / "cache", **options)


@pytest.mark.parametrize(
    "name, content",
    [
        ("part.jsonl", "".join(json.dumps(row) + "\n" for row in ROWS)),
        ("part.parquet", parquet_bytes(ROWS)),
        (
            "part.csv",
            'tokens,ner_tags\n"[""John"", ""lives"", ""in"", ""Berlin""]",B-PER O O B-LOC\n'
            "Ana Lopez,B-PER I-PER\n",
        ),
    ],
)
def test_each_format_gives_words_and_tag_ids_with_o_first(opt_ml, name, content):
    opt_ml.channel("train", {name: content})
    splits = load(opt_ml)
    assert splits.label_names == ("O", "B-LOC", "B-PER", "I-PER")
    assert splits.train["words"] == [row["tokens"] for row in ROWS]
    assert splits.train["tag_ids"] == [[2, 0, 0, 1], [2, 3]]


def test_tag_ids_need_the_label_names(opt_ml):
    rows = [{"tokens": ["a", "b"], "ner_tags": [0, 1]}]
    opt_ml.channel("train", {"part.jsonl": json.dumps(rows[0]) + "\n"})
    with pytest.raises(DataError, match="labels hyperparameter"):
        load(opt_ml)
    splits = load(opt_ml, labels=("O", "B-X"))
    assert splits.train["tag_ids"] == [[0, 1]]


@pytest.mark.parametrize(
    "row, words",
    [
        ({"tokens": ["a", "b"], "ner_tags": ["O"]}, ["2 words but 1 tags", "row 1"]),
        ({"tokens": ["a"], "ner_tags": ["B-NEW"]}, ["'B-NEW'", "not one of the labels"]),
        ({"tokens": "a b", "ner_tags": 3}, ["not a list"]),
        ({"tokens": [], "ner_tags": []}, ["non-empty list"]),
    ],
)
def test_bad_rows_are_data_errors_that_say_what_to_fix(opt_ml, row, words):
    opt_ml.channel("train", {"part.jsonl": json.dumps(row) + "\n"})
    with pytest.raises(DataError) as caught:
        load(opt_ml, labels=("O", "B-X"))
    assert all(word in caught.value.message for word in words), caught.value.message


def test_a_missing_column_is_named(opt_ml):
    opt_ml.channel("train", {"part.jsonl": json.dumps({"words": ["a"], "ner_tags": ["O"]})})
    with pytest.raises(DataError, match="'tokens' not found"):
        load(opt_ml)


def test_only_the_first_sub_token_of_a_word_is_labelled():
    # [CLS] john smith ##son [SEP]: words 0, 1, 1
    assert align_labels([None, 0, 1, 1, None], [3, 4]) == [IGNORED, 3, 4, IGNORED, IGNORED]


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
        (["I-PER", "I-PER"], {("PER", 0, 1)}),  # I- without B- starts an entity
        (["B-PER", "B-PER"], {("PER", 0, 0), ("PER", 1, 1)}),
        (["B-PER", "I-LOC"], {("PER", 0, 0), ("LOC", 1, 1)}),
        (["O", "O"], set()),
    ],
)
def test_entity_spans_follow_the_bio_rules(tags, spans):
    assert entity_spans(tags) == spans


def test_entity_f1_counts_whole_entities_only():
    true = [["B-PER", "I-PER", "O", "B-LOC"]]
    half = [["B-PER", "O", "O", "B-LOC"]]  # PER cut short: wrong; LOC right
    scores = entity_scores(true, half)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(0.5)
    assert scores["accuracy"] == pytest.approx(0.75)
    assert entity_scores(true, true)["f1"] == 1.0


# --------------------------------------------------------------------------------------------
# A tiny training run on examples/ner, served


@pytest.fixture
def trained(opt_ml, tiny_model_dir, caplog):
    from smneuron.job import TrainingEnv
    from smneuron.training import hyperparameters, trainer
    from smneuron.training.checkpoints import TerminationFlag

    opt_ml.model_channel(tiny_model_dir)  # a tiny BERT: its head is replaced for the tags
    opt_ml.channel("train", {"train.jsonl": (EXAMPLE / "train.jsonl").read_text()})
    opt_ml.channel("validation", {"validation.jsonl": (EXAMPLE / "validation.jsonl").read_text()})
    opt_ml.hyperparameters(
        {
            "task": "token-classification",
            "epochs": 2,
            "per_device_train_batch_size": 4,
            "logging_steps": 2,
            "learning_rate": 0.01,
            "batch_size": 2,
            "sequence_lengths": "16,32",
        }
    )
    env = TrainingEnv.from_env()
    caplog.set_level(logging.INFO, logger="smneuron.training.trainer")
    result = trainer.train(env, hyperparameters.load(env.hyperparameters), TerminationFlag(), "cpu")
    return opt_ml, result, caplog.text


def test_training_on_the_example_logs_entity_f1_and_serves_the_pipelines_answers(trained):
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.manifest import read_manifest
    from smneuron.serving.handler import Handler, WorkerInfo
    from smneuron.serving.settings import ServingSettings

    opt_ml, result, logs = trained
    assert result.labels == ("O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER")
    for key in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "train_loss"):
        assert f" {key}=" in logs, f"no {key} in the metric lines"
    assert 0.0 <= result.metrics["eval_f1"] <= 1.0
    manifest = read_manifest(opt_ml.paths.model)
    assert manifest.task == "token-classification"
    assert manifest.labels == result.labels
    assert manifest.sequence_lengths == (16, 32)

    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(opt_ml.base)})
    handler = Handler.load(opt_ml.paths.model, WorkerInfo(0, None, settings, CpuBackend()))
    model_dir = str(opt_ml.paths.model)
    model = transformers.AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    texts = ["Anna moved to Rome with Mark Lopez .", "Globex hired Sara in Oslo"]
    try:
        for strategy in ("none", "simple", "first", "average", "max"):
            pipe = transformers.pipeline(
                "token-classification",
                model=model,
                tokenizer=tokenizer,
                aggregation_strategy=strategy,
                ignore_labels=[],
            )
            body = json.dumps(
                {
                    "inputs": texts,
                    "parameters": {"aggregation_strategy": strategy, "ignore_labels": []},
                }
            )
            response = handler.invoke(body.encode(), "application/json", None)
            got, want = json.loads(response.body), pipe(texts)
            assert len(got) == len(want) == 2
            for one, other in zip(got, want, strict=True):
                assert [e.get("entity", e.get("entity_group")) for e in one] == [
                    e.get("entity", e.get("entity_group")) for e in other
                ]
                assert [(e["start"], e["end"], e["word"]) for e in one] == [
                    (e["start"], e["end"], e["word"]) for e in other
                ]
                for e, f in zip(one, other, strict=True):
                    assert e["score"] == pytest.approx(float(f["score"]), abs=1e-4)
    finally:
        handler.model.close()
