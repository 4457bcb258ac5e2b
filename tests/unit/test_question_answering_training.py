"""Question answering training: SQuAD rows in every format, answer positions in windows of a
long context, exact match and F1, and a tiny run on examples/qa whose artifact serves what the
Hugging Face pipeline answers (a context longer than the largest bucket included)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from smneuron.errors import DataError
from smneuron.training.qa import (
    exact_match,
    f1_score,
    load_qa_splits,
    normalize_answer,
    positions,
    tokenize_qa,
)

pytest.importorskip("datasets")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qa" / "data"
ROWS = [
    {
        "question": "Where does Anna live?",
        "context": "Anna lives in Madrid.",
        "answers": {"text": ["Madrid"], "answer_start": [14]},
    },
    {
        "question": "Who cooks?",
        "context": "Kenji cooks on Fridays.",
        "answers": {"text": ["Kenji"], "answer_start": [0]},
    },
]


def parquet_bytes(rows) -> bytes:
    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer)
    return buffer.getvalue()


def csv_text(rows) -> str:
    import csv

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "context", "answers"])
    for row in rows:
        writer.writerow([row["question"], row["context"], json.dumps(row["answers"])])
    return out.getvalue()


def load(opt_ml, **overrides):
    options = {"train_channel": "train", "validation_channel": ""}
    options.update(overrides)
    channels = {p.name: p for p in opt_ml.paths.data.iterdir()}
    return load_qa_splits(channels, cache_dir=opt_ml.base / "cache", **options)


@pytest.mark.parametrize(
    "name, content",
    [
        ("part.jsonl", "".join(json.dumps(row) + "\n" for row in ROWS)),
        ("part.parquet", parquet_bytes(ROWS)),
        ("part.csv", csv_text(ROWS)),
    ],
)
def test_each_format_gives_questions_contexts_and_squad_answers(opt_ml, name, content):
    opt_ml.channel("train", {name: content})
    splits = load(opt_ml)
    assert splits.label_names == ()
    assert splits.train["question"] == [row["question"] for row in ROWS]
    assert splits.train["context"] == [row["context"] for row in ROWS]
    assert splits.train["answers"] == [row["answers"] for row in ROWS]


@pytest.mark.parametrize(
    "answers, words",
    [
        ({"text": ["Madrid"], "answer_start": [3]}, ["not at answer_start 3", "it is at 14"]),
        ({"text": ["Rome"], "answer_start": [0]}, ["the context does not hold it"]),
        ({"text": ["Madrid", "in"], "answer_start": [14]}, ["2 answer texts but 1"]),
        ({"answer": "Madrid"}, ["SQuAD form", '"answer_start"']),
        ("{not json", ["is not JSON"]),
    ],
)
def test_bad_answers_are_data_errors_that_say_what_to_fix(opt_ml, answers, words):
    row = {"question": "Where?", "context": "Anna lives in Madrid.", "answers": answers}
    opt_ml.channel("train", {"part.jsonl": json.dumps(row) + "\n"})
    with pytest.raises(DataError) as caught:
        load(opt_ml)
    assert "row 1" in caught.value.message
    assert all(word in caught.value.message for word in words), caught.value.message


def test_renamed_columns_and_a_missing_one(opt_ml):
    row = {"q": "Where?", "c": "Anna lives in Madrid.", "a": ROWS[0]["answers"]}
    opt_ml.channel("train", {"part.jsonl": json.dumps(row) + "\n"})
    splits = load(opt_ml, question_column="q", context_column="c", answers_column="a")
    assert splits.train["question"] == ["Where?"]
    with pytest.raises(DataError, match="'question' not found"):
        load(opt_ml)


def test_positions_point_at_the_answer_tokens_or_cls():
    # [CLS] q [SEP] anna lives in madrid [SEP], context characters 0-4, 5-10, 11-13, 14-20
    offsets = [(0, 0), (0, 1), (0, 0), (0, 4), (5, 10), (11, 13), (14, 20), (0, 0)]
    sequence_ids = [None, 0, None, 1, 1, 1, 1, None]
    assert positions(offsets, sequence_ids, (14, 20), 0) == (6, 6)
    assert positions(offsets, sequence_ids, (5, 13), 0) == (4, 5)
    assert positions(offsets, sequence_ids, (30, 35), 0) == (0, 0)  # not in this window
    assert positions(offsets, sequence_ids, None, 0) == (0, 0)  # no answer


def test_a_long_context_becomes_windows_each_labelled(opt_ml):
    import transformers

    from tinymodels import minilm_dir

    opt_ml.channel("train", {"train.jsonl": (EXAMPLE / "train.jsonl").read_text()})
    splits = load(opt_ml)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    tokenized, _ = tokenize_qa(splits, tokenizer, 32, 8)
    train = tokenized["train"]
    assert len(train) > len(splits.train)  # long contexts gave several windows
    for ids, start, end in zip(
        train["input_ids"], train["start_positions"], train["end_positions"], strict=True
    ):
        assert len(ids) <= 32
        assert 0 <= start <= end < len(ids)
    # Every answer is labelled in at least one window, and spans decode to the answer.
    decoded = {
        tokenizer.decode(ids[start : end + 1])
        for ids, start, end in zip(
            train["input_ids"], train["start_positions"], train["end_positions"], strict=True
        )
        if start > 0
    }
    for answers in splits.train["answers"]:
        assert answers["text"][0].lower() in decoded


def test_squad_normalisation_exact_match_and_f1():
    assert normalize_answer("The  Elbe!") == "elbe"
    assert exact_match("the Elbe.", ["Elbe", "river"]) == 1.0
    assert exact_match("Elbe river", ["Elbe"]) == 0.0
    assert f1_score("Elbe river", ["the Elbe"]) == pytest.approx(2 / 3)
    assert f1_score("lemon cake", ["lemon cake and mint tea", "cake"]) == pytest.approx(2 / 3)
    assert f1_score("", []) == 1.0  # no answer, predicted none
    assert f1_score("Madrid", []) == 0.0


# --------------------------------------------------------------------------------------------
# A tiny training run on examples/qa, served


@pytest.fixture
def trained(opt_ml, tiny_model_factory, caplog):
    from smneuron.job import TrainingEnv
    from smneuron.training import hyperparameters, trainer
    from smneuron.training.checkpoints import TerminationFlag

    opt_ml.model_channel(tiny_model_factory("question-answering"))
    opt_ml.channel("train", {"train.jsonl": (EXAMPLE / "train.jsonl").read_text()})
    opt_ml.channel("validation", {"validation.jsonl": (EXAMPLE / "validation.jsonl").read_text()})
    opt_ml.hyperparameters(
        {
            "task": "question-answering",
            "epochs": 2,
            "per_device_train_batch_size": 4,
            "logging_steps": 2,
            "learning_rate": 0.01,
            "max_seq_length": 48,
            "doc_stride": 16,
            "batch_size": 2,
            "sequence_lengths": "32,48",
        }
    )
    env = TrainingEnv.from_env()
    caplog.set_level(logging.INFO, logger="smneuron.training.trainer")
    result = trainer.train(env, hyperparameters.load(env.hyperparameters), TerminationFlag(), "cpu")
    return opt_ml, result, caplog.text


def test_training_on_the_example_logs_exact_match_and_f1_and_serves_the_pipelines_answers(
    trained,
):
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.manifest import read_manifest
    from smneuron.serving.handler import Handler, WorkerInfo
    from smneuron.serving.settings import ServingSettings

    opt_ml, result, logs = trained
    for key in ("eval_exact_match", "eval_f1", "eval_loss", "train_loss"):
        assert f" {key}=" in logs, f"no {key} in the metric lines"
    assert 0.0 <= result.metrics["eval_exact_match"] <= 100.0
    assert 0.0 <= result.metrics["eval_f1"] <= 100.0
    manifest = read_manifest(opt_ml.paths.model)
    assert manifest.task == "question-answering"
    assert manifest.task_parameters == {"doc_stride": 16}
    assert manifest.sequence_lengths == (32, 48)

    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(opt_ml.base)})
    handler = Handler.load(opt_ml.paths.model, WorkerInfo(0, None, settings, CpuBackend()))
    model_dir = str(opt_ml.paths.model)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    pipe = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer)
    rows = [json.loads(line) for line in (EXAMPLE / "validation.jsonl").read_text().splitlines()]
    inputs = [{"question": row["question"], "context": row["context"]} for row in rows]
    assert max(len(tokenizer(q["question"], q["context"])["input_ids"]) for q in inputs) > 48
    try:
        body = json.dumps({"inputs": inputs, "parameters": {"top_k": 2}})
        got = json.loads(handler.invoke(body.encode(), "application/json", None).body)
        for answer, question in zip(got, inputs, strict=True):
            want = pipe(**question, top_k=2, max_seq_len=48, doc_stride=16)
            assert [(a["answer"], a["start"], a["end"]) for a in answer] == [
                (a["answer"], a["start"], a["end"]) for a in want
            ]
            for one, other in zip(answer, want, strict=True):
                assert one["score"] == pytest.approx(float(other["score"]), rel=1e-3, abs=1e-5)
    finally:
        handler.model.close()
