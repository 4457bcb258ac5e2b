"""Text-pair classification training (``text_pair_column``, NLI): the pair columns in each
data format, the hyperparameter checks, and a tiny run on examples/nli whose artifact serves
what the Hugging Face pipeline answers for ``{"text", "text_pair"}`` inputs."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from smneuron.errors import ConfigurationError, DataError
from smneuron.training import hyperparameters
from smneuron.training.data import load_splits

pytest.importorskip("datasets")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nli" / "data"
ROWS = [
    {"premise": "a dog runs", "hypothesis": "an animal moves", "label": "entailment"},
    {"premise": "a dog runs", "hypothesis": "the dog sleeps", "label": "contradiction"},
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
        "text_column": "premise",
        "text_pair_column": "hypothesis",
        "label_column": "label",
    }
    options.update(overrides)
    channels = {p.name: p for p in opt_ml.paths.data.iterdir()}
    return load_splits(channels, cache_dir=opt_ml.base / "cache", **options)


@pytest.mark.parametrize(
    "name, content",
    [
        ("part.jsonl", "".join(json.dumps(row) + "\n" for row in ROWS)),
        ("part.parquet", parquet_bytes(ROWS)),
        (
            "part.csv",
            "premise,hypothesis,label\na dog runs,an animal moves,entailment\n"
            "a dog runs,the dog sleeps,contradiction\n",
        ),
    ],
)
def test_each_format_keeps_both_texts_of_a_pair(opt_ml, name, content):
    opt_ml.channel("train", {name: content})
    splits = load(opt_ml)
    assert splits.label_names == ("contradiction", "entailment")
    assert splits.train["premise"] == ["a dog runs", "a dog runs"]
    assert splits.train["hypothesis"] == ["an animal moves", "the dog sleeps"]
    assert splits.train["labels"] == [1, 0]


def test_a_missing_pair_column_is_named(opt_ml):
    opt_ml.channel("train", {"part.jsonl": json.dumps({"premise": "a", "label": "x"}) + "\n"})
    with pytest.raises(DataError, match="'hypothesis' not found"):
        load(opt_ml)


def test_a_non_text_second_text_names_its_row(opt_ml):
    rows = [ROWS[0], {"premise": "a", "hypothesis": 3, "label": "entailment"}]
    opt_ml.channel("train", {"part.jsonl": "".join(json.dumps(r) + "\n" for r in rows)})
    with pytest.raises(DataError, match="row 2: column 'hypothesis'"):
        load(opt_ml)


def test_training_encodes_a_row_as_the_server_encodes_its_pair(opt_ml, tiny_model_dir):
    import transformers

    from smneuron.training.trainer import tokenize

    opt_ml.channel("train", {"part.jsonl": "".join(json.dumps(row) + "\n" for row in ROWS)})
    splits = load(opt_ml)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    raw = {"text_column": "premise", "text_pair_column": "hypothesis", "max_seq_length": 64}
    hps = hyperparameters.load({key: json.dumps(value) for key, value in raw.items()})
    encoded = tokenize(splits, tokenizer, hps)["train"]
    want = tokenizer("a dog runs", "an animal moves")
    assert encoded[0]["input_ids"] == want["input_ids"]
    assert encoded[0]["token_type_ids"] == want["token_type_ids"]
    assert 1 in encoded[0]["token_type_ids"]  # the second text is segment 1


@pytest.mark.parametrize(
    "values, words",
    [
        ({"task": "token-classification", "text_pair_column": "b"}, "text-classification"),
        ({"text_column": "a", "text_pair_column": "a"}, "also the text_column"),
    ],
)
def test_pair_column_misuse_is_a_configuration_error(values, words):
    raw = {key: json.dumps(value) for key, value in values.items()}
    with pytest.raises(ConfigurationError, match=words):
        hyperparameters.load(raw)


# --------------------------------------------------------------------------------------------
# A tiny training run on examples/nli, served


@pytest.fixture
def trained(opt_ml, tiny_model_dir, caplog):
    from smneuron.job import TrainingEnv
    from smneuron.training import trainer
    from smneuron.training.checkpoints import TerminationFlag

    opt_ml.model_channel(tiny_model_dir)  # a tiny BERT: its 2-label head is replaced for 3
    opt_ml.channel("train", {"train.csv": (EXAMPLE / "train.csv").read_text()})
    opt_ml.channel("validation", {"validation.csv": (EXAMPLE / "validation.csv").read_text()})
    opt_ml.hyperparameters(
        {
            "text_column": "premise",
            "text_pair_column": "hypothesis",
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


def test_training_on_pairs_serves_the_pipelines_answers_for_pairs(trained):
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.manifest import read_manifest
    from smneuron.serving.handler import Handler, WorkerInfo
    from smneuron.serving.settings import ServingSettings

    opt_ml, result, logs = trained
    assert result.labels == ("contradiction", "entailment", "neutral")
    assert " eval_accuracy=" in logs
    manifest = read_manifest(opt_ml.paths.model)
    assert manifest.task == "text-classification"
    assert "token_type_ids" in manifest.input_names  # the pair's second text has type 1

    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(opt_ml.base)})
    handler = Handler.load(opt_ml.paths.model, WorkerInfo(0, None, settings, CpuBackend()))
    model_dir = str(opt_ml.paths.model)
    pipe = transformers.pipeline(
        "text-classification",
        model=transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval(),
        tokenizer=transformers.AutoTokenizer.from_pretrained(model_dir),
    )
    pairs = [
        {"text": "A chef is cooking pasta in a kitchen.", "text_pair": "The kitchen is empty."},
        {"text": "A cyclist rides up a steep hill.", "text_pair": "A person is on a bicycle."},
    ]
    requests = [
        (pairs[0], {}),
        (pairs[0], {"top_k": None}),
        (pairs, {}),
        (pairs, {"top_k": 2}),
    ]
    try:
        for inputs, parameters in requests:
            body = json.dumps({"inputs": inputs, "parameters": parameters}).encode()
            got = json.loads(handler.invoke(body, "application/json", None).body)
            want = pipe(inputs, **parameters)
            assert_same_answer(got, want)
    finally:
        handler.model.close()


def assert_same_answer(got, want) -> None:
    """Same nesting and labels; scores within 1e-4."""
    if isinstance(want, dict):
        assert isinstance(got, dict), got
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(float(want["score"]), abs=1e-4)
        return
    assert isinstance(got, list) and len(got) == len(want), (got, want)
    for one, other in zip(got, want, strict=True):
        assert_same_answer(one, other)
