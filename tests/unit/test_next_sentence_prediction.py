"""Next-sentence prediction end to end: training on examples/next-sentence-prediction (text,
text_pair, is_next; accuracy in the metric lines), a graph on the pair's token types, and
served ``{"is_next", "score"}`` answers equal to the in-process
``BertForNextSentencePrediction``'s; the 400s (no second text, parameters)."""

from __future__ import annotations

import json

import pytest
from tasktraining import train_example

from smneuron.errors import ClientError, DataError

pytest.importorskip("datasets")

PAIRS = [
    ("I put the kettle on.", "A few minutes later the water was boiling."),
    ("The phone rang.", "Mars has two small moons."),
    (
        "It started to snow, and the wind rose over the hills all night long.",
        "Soon the streets were white.",
    ),
]


@pytest.fixture(scope="module")
def trained(opt_ml_factory, tiny_model_dir):
    opt_ml = opt_ml_factory("nsp")
    return train_example(
        opt_ml, tiny_model_dir, "next-sentence-prediction", {"task": "next-sentence-prediction"}
    )


@pytest.fixture(scope="module")
def served(trained):
    import transformers

    handler = trained.handler()
    model_dir = str(trained.model_dir)
    model = transformers.BertForNextSentencePrediction.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    try:
        yield handler, model, tokenizer
    finally:
        handler.model.close()


def eager(model, tokenizer, text, pair) -> float:
    """The in-process model's probability that ``pair`` follows ``text`` (class 0)."""
    import torch

    with torch.no_grad():
        logits = model(**tokenizer(text, pair, return_tensors="pt")).logits
    return float(logits.softmax(-1)[0, 0])


def ask(handler, body):
    response = handler.invoke(json.dumps(body).encode(), "application/json", None)
    assert response.status == 200
    return json.loads(response.body)


def test_training_logs_accuracy_and_compiles_a_graph_on_token_types(trained):
    from smneuron.artifact.manifest import read_manifest

    for key in ("train_loss", "eval_loss", "eval_accuracy"):
        assert f" {key}=" in trained.logs, f"no {key} in the metric lines"
    assert 0.0 <= trained.result.metrics["eval_accuracy"] <= 1.0
    manifest = read_manifest(trained.model_dir)
    assert manifest.task == "next-sentence-prediction"
    assert manifest.input_names == ("input_ids", "attention_mask", "token_type_ids")
    config = json.loads((trained.model_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForNextSentencePrediction"]


def test_a_lone_pair_answers_is_next_and_its_probability(served):
    handler, model, tokenizer = served
    text, pair = PAIRS[0]
    got = ask(handler, {"inputs": {"text": text, "text_pair": pair}})
    want = eager(model, tokenizer, text, pair)
    assert got == {"is_next": want >= 0.5, "score": pytest.approx(want, abs=1e-5)}


def test_a_list_of_pairs_answers_one_object_each_as_the_model_does(served):
    handler, model, tokenizer = served
    got = ask(handler, {"inputs": [{"text": text, "text_pair": pair} for text, pair in PAIRS]})
    assert len(got) == len(PAIRS)
    for answer, (text, pair) in zip(got, PAIRS, strict=True):
        want = eager(model, tokenizer, text, pair)
        assert answer["score"] == pytest.approx(want, abs=1e-5)
        assert answer["is_next"] is (want >= 0.5)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"inputs": "one text only"}, ["text pairs", '"text_pair"', "no second text"]),
        ({"inputs": {"text": "a"}}, ["no second text"]),
        ({"inputs": [{"text": "a", "text_pair": "b"}, "c"]}, ["no second text"]),
        (
            {"inputs": {"text": "a", "text_pair": "b"}, "parameters": {"top_k": 1}},
            ["unknown parameter(s) top_k"],
        ),
    ],
)
def test_bad_requests_are_400s_that_say_what_is_expected(served, body, words):
    handler, _, _ = served
    with pytest.raises(ClientError) as caught:
        handler.invoke(json.dumps(body).encode(), "application/json", None)
    assert caught.value.status_code == 400
    assert all(word in caught.value.message for word in words), caught.value.message


def load(opt_ml, **overrides):
    from smneuron.training.nextsentence import load_pair_splits

    options = {
        "train_channel": "train",
        "validation_channel": "",
        "text_column": "text",
        "text_pair_column": "",
        "is_next_column": "is_next",
    }
    options.update(overrides)
    channels = {p.name: p for p in opt_ml.paths.data.iterdir()}
    return load_pair_splits(channels, cache_dir=opt_ml.base / "cache", **options)


def test_is_next_true_is_the_heads_class_0(opt_ml):
    rows = [
        {"text": "a", "text_pair": "b", "is_next": True},
        {"text": "a", "text_pair": "c", "is_next": False},
        {"text": "a", "text_pair": "d", "is_next": "yes"},
        {"text": "a", "text_pair": "e", "is_next": 0},
    ]
    opt_ml.channel("train", {"part.jsonl": "".join(json.dumps(row) + "\n" for row in rows)})
    assert load(opt_ml).train["labels"] == [0, 1, 0, 1]


def test_a_bad_is_next_value_is_named(opt_ml):
    opt_ml.channel("train", {"part.csv": "first,second,is_next\na,b,maybe\n"})
    with pytest.raises(DataError, match="'maybe'; use true/false"):
        load(opt_ml, text_column="first", text_pair_column="second")
