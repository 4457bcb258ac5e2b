"""Fill-mask end to end: masked-LM training on examples/fill-mask (perplexity in the metric
lines), a graph that returns the vocabulary scores at the mask positions only, and served
answers equal to the in-process ``transformers.pipeline("fill-mask")``'s on the same checkpoint,
nesting included; the 400s for inputs without a mask, with too many, and bad parameters."""

from __future__ import annotations

import json
import math

import pytest
from tasktraining import train_example

from smneuron.errors import ClientError, DataError

pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def trained(opt_ml_factory, tiny_model_dir):
    opt_ml = opt_ml_factory("fill-mask")
    return train_example(opt_ml, tiny_model_dir, "fill-mask", {"task": "fill-mask", "max_masks": 2})


@pytest.fixture(scope="module")
def served(trained):
    import transformers

    handler = trained.handler()
    model_dir = str(trained.model_dir)
    model = transformers.AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    pipe = transformers.pipeline("fill-mask", model=model, tokenizer=tokenizer)
    try:
        yield handler, pipe
    finally:
        handler.model.close()


def ask(handler, body):
    response = handler.invoke(json.dumps(body).encode(), "application/json", None)
    assert response.status == 200
    return json.loads(response.body)


def assert_same(got, want):
    """The same nesting, tokens, strings and sequences; scores to float32 precision."""
    if isinstance(want, dict):
        assert set(got) == {"score", "token", "token_str", "sequence"}
        assert (got["token"], got["token_str"], got["sequence"]) == (
            int(want["token"]),
            want["token_str"],
            want["sequence"],
        )
        assert got["score"] == pytest.approx(float(want["score"]), rel=1e-4, abs=1e-7)
        return
    assert isinstance(got, list) and len(got) == len(want)
    for one, other in zip(got, want, strict=True):
        assert_same(one, other)


def test_training_logs_the_perplexity_and_writes_a_fill_mask_artifact(trained):
    from smneuron.artifact.manifest import read_manifest

    for key in ("train_loss", "train_perplexity", "eval_loss", "eval_perplexity"):
        assert f" {key}=" in trained.logs, f"no {key} in the metric lines"
    metrics = trained.result.metrics
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    saved = json.loads((trained.opt_ml.paths.output_data / "metrics.json").read_text())
    assert saved["eval_perplexity"] == pytest.approx(metrics["eval_perplexity"])
    manifest = read_manifest(trained.model_dir)
    assert manifest.task == "fill-mask"
    assert manifest.max_masks == 2
    assert manifest.input_names == ("input_ids", "attention_mask", "mask_positions")
    config = json.loads((trained.model_dir / "config.json").read_text())
    assert config["architectures"] == ["BertForMaskedLM"]


def test_the_graph_returns_the_vocabulary_scores_at_the_mask_positions_only(trained):
    import torch

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.manifest import read_manifest

    manifest = read_manifest(trained.model_dir)
    # The CPU backend puts the shared weights (compiled/weights.safetensors) back in.
    graph = CpuBackend().load(manifest.graph_path(trained.model_dir, 32, 2))
    ones = torch.ones((2, 32), dtype=torch.long)
    scores = graph(ones, ones, torch.tensor([[1, 3], [0, 0]]))
    assert tuple(scores.shape) == (2, 2, config_vocab(trained))
    assert scores.sum(-1).flatten().tolist() == pytest.approx([1.0] * 4, abs=1e-4)


def config_vocab(trained) -> int:
    return json.loads((trained.model_dir / "config.json").read_text())["vocab_size"]


def test_smneuron_compile_takes_the_number_of_masks(trained, tmp_path):
    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.job import CompileHyperparameters, compile_checkpoint
    from smneuron.typed import parse_hyperparameters

    settings = parse_hyperparameters(
        CompileHyperparameters, {"batch_size": "1", "sequence_lengths": "16", "max_masks": "3"}
    )
    manifest = compile_checkpoint(trained.model_dir, tmp_path / "a", settings, backend=CpuBackend())
    assert (manifest.task, manifest.max_masks) == ("fill-mask", 3)


@pytest.mark.parametrize(
    "inputs, parameters",
    [
        ("Paris is the [MASK] of France.", {}),
        ("Paris is the [MASK] of France.", {"top_k": 3}),
        (["The cat sat on the [MASK].", "She drinks [MASK] every morning."], {}),
        (["The [MASK] sat on the [MASK].", "It rained all [MASK]."], {"top_k": 2}),
        ("The [MASK] to London leaves at [MASK].", {}),
        (["Rome is the [MASK] of Italy."], {}),  # a list of one: the pipeline unwraps it
        ("The [MASK] slept.", {"targets": ["dog", "cat", "capital"]}),
        ("The [MASK] slept.", {"targets": "dog", "top_k": 4}),
        ("The [MASK] slept.", {"targets": ["dogsled"], "top_k": 2}),  # not one token
    ],
)
def test_served_answers_equal_the_pipelines(served, inputs, parameters):
    handler, pipe = served
    assert_same(
        ask(handler, {"inputs": inputs, "parameters": parameters}), pipe(inputs, **parameters)
    )


def test_one_mask_answers_a_list_several_masks_a_list_per_mask(served):
    handler, _ = served
    one = ask(handler, {"inputs": "Paris is the [MASK] of France."})
    assert len(one) == 5 and all(isinstance(entry, dict) for entry in one)
    assert [entry["score"] for entry in one] == sorted((e["score"] for e in one), reverse=True)
    two = ask(handler, {"inputs": "The [MASK] sat on the [MASK].", "parameters": {"top_k": 2}})
    assert [len(row) for row in two] == [2, 2]
    several = ask(handler, {"inputs": ["a [MASK] day", "the [MASK] [MASK]", "[MASK] it is"]})
    assert [type(answer[0]) for answer in several] == [dict, list, dict]


def test_a_batch_of_inputs_runs_in_batched_graphs(served):
    handler, pipe = served
    texts = [f"Number {n} is the [MASK] one." for n in range(5)]
    got = ask(handler, {"inputs": texts})
    assert_same(got, pipe(texts))


@pytest.mark.parametrize(
    "body, words",
    [
        ({"inputs": "no mask in here"}, ["no mask token [MASK]", "input 0"]),
        ({"inputs": ["a [MASK]", "none"]}, ["input 1", "no mask token [MASK]"]),
        ({"inputs": "[MASK] [MASK] [MASK]"}, ["3 mask tokens", "at most 2", "max_masks"]),
        ({"inputs": "a [MASK]", "parameters": {"top_k": 0}}, ['"top_k"', "positive integer"]),
        ({"inputs": "a [MASK]", "parameters": {"targets": 3}}, ['"targets"', "list of strings"]),
        ({"inputs": "a [MASK]", "parameters": {"targets": [""]}}, ['"targets"', "no token"]),
        (
            {"inputs": "a [MASK]", "parameters": {"aggregation_strategy": "simple"}},
            ["unknown parameter(s) aggregation_strategy", "top_k, targets"],
        ),
        ({"inputs": {"text": "a [MASK]", "text_pair": "b"}}, ["single texts"]),
    ],
)
def test_bad_requests_are_400s_that_say_what_is_expected(served, body, words):
    handler, _ = served
    with pytest.raises(ClientError) as caught:
        handler.invoke(json.dumps(body).encode(), "application/json", None)
    assert caught.value.status_code == 400
    assert all(word in caught.value.message for word in words), caught.value.message


def test_a_text_column_that_is_missing_is_named(opt_ml):
    from smneuron.training.masked import load_text_splits

    opt_ml.channel("train", {"part.csv": "sentence\nhello there\n"})
    channels = {p.name: p for p in opt_ml.paths.data.iterdir()}
    with pytest.raises(DataError, match="'text' not found"):
        load_text_splits(channels, train_channel="train", validation_channel="", text_column="text")


@pytest.mark.parametrize("architecture", ["BertForMaskedLM", "DistilBertForMaskedLM"])
def test_the_graph_scores_equal_the_eager_models_softmax_at_the_masks(architecture):
    """BERT's head runs on the gathered positions only; DistilBERT's (no single head module)
    on every position, then the masks are gathered: both equal the eager model's softmax."""
    import torch
    import transformers

    from smneuron.artifact.build import masked_scores

    torch.manual_seed(0)
    if architecture == "BertForMaskedLM":
        config = transformers.BertConfig(
            vocab_size=99,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    else:
        config = transformers.DistilBertConfig(
            vocab_size=99,
            dim=16,
            n_layers=1,
            n_heads=2,
            hidden_dim=32,
            max_position_embeddings=32,
        )
    model = getattr(transformers, architecture)(config).eval()
    ids = torch.randint(5, 99, (2, 12))
    mask = torch.ones_like(ids)
    positions = torch.tensor([[3, 7], [0, 11]])
    with torch.no_grad():
        got = masked_scores(model)(ids, mask, positions)
        logits = model(input_ids=ids, attention_mask=mask).logits
    want = torch.stack([logits[row, positions[row]] for row in range(2)]).softmax(-1)
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize(
    "inputs", ["a [MASK] b", ["a [MASK]", "b [MASK] [MASK]"], "[MASK] and [MASK]"]
)
def test_csv_cannot_carry_the_nesting_and_is_a_406(served, inputs):
    from smneuron.errors import NotAcceptable

    handler, _ = served
    body = json.dumps({"inputs": inputs}).encode()
    with pytest.raises(NotAcceptable, match="application/json"):
        handler.invoke(body, "application/json", "text/csv")
