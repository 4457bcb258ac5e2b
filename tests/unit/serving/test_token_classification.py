"""Token classification answers equal the Hugging Face pipeline's for every aggregation
strategy: the same tiny checkpoint served through our handler and run by an in-process
``transformers.pipeline("token-classification", aggregation_strategy=...)``."""

from __future__ import annotations

import json

import pytest

from smneuron.serving.handler import Handler, WorkerInfo
from smneuron.serving.settings import ServingSettings
from tinymodels import label_config, minilm_dir, tiny_config

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
TEXTS = [
    "John Smith flew from Johannesburg to Reykjavik.",
    "nothing much here",
    "Ünïcode naïve café, 東京 and emoji 🙂 too",
    "hyphen-ated words, (brackets) & 3.14 numbers",
    "  leading and   inner spaces  ",
]
STRATEGIES = ("none", "simple", "first", "average", "max")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(handler, model, tokenizer) for a tiny BERT token classifier, buckets 16 and 32."""
    import torch
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("ner")
    model_dir = base / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    config = tiny_config(
        vocab_size=tokenizer.vocab_size,
        max_positions=64,
        initializer_range=0.5,  # spread scores: tags differ from token to token
        **label_config(LABELS),
    )
    torch.manual_seed(3)
    model = transformers.BertForTokenClassification(config).eval()
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    compile_artifact(
        model_dir,
        model,
        task="token-classification",
        labels=LABELS,
        batch_size=2,
        sequence_lengths=(16, 32),
        backend=CpuBackend(),
    )
    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(base)})
    handler = Handler.load(model_dir, WorkerInfo(0, None, settings, CpuBackend()))
    yield handler, model, tokenizer
    handler.model.close()


def post(handler, payload) -> object:
    response = handler.invoke(json.dumps(payload).encode(), "application/json", None)
    assert response.status == 200, response.body
    return json.loads(response.body)


def assert_same(got, want, path="answer"):
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: {got!r}"
        assert sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for key, value in want.items():
            if key == "score":
                assert got[key] == pytest.approx(float(value), abs=1e-4), path
            else:
                assert got[key] == value, f"{path}.{key}: {got[key]!r} != {value!r}"
        return
    assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r} vs {want!r}"
    for index, (one, other) in enumerate(zip(got, want, strict=True)):
        assert_same(one, other, f"{path}[{index}]")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_served_entities_equal_the_pipeline(served, strategy):
    import transformers

    handler, model, tokenizer = served
    pipe = transformers.pipeline(
        "token-classification", model=model, tokenizer=tokenizer, aggregation_strategy=strategy
    )
    parameters = {"aggregation_strategy": strategy}
    want = pipe(TEXTS)
    assert any(answer for answer in want), "the tiny model tags nothing: the test proves little"
    assert_same(post(handler, {"inputs": TEXTS, "parameters": parameters}), want)
    # A lone string answers its list of entities itself, as the pipeline does.
    assert_same(post(handler, {"inputs": TEXTS[0], "parameters": parameters}), pipe(TEXTS[0]))


def test_default_is_the_pipelines_and_ignore_labels_is_honoured(served):
    import transformers

    handler, model, tokenizer = served
    pipe = transformers.pipeline("token-classification", model=model, tokenizer=tokenizer)
    assert_same(post(handler, {"inputs": TEXTS}), pipe(TEXTS))
    everything = post(handler, {"inputs": TEXTS[1], "parameters": {"ignore_labels": []}})
    assert_same(everything, pipe(TEXTS[1], ignore_labels=[]))
    assert len(everything) == 3  # nothing | much | here: every token answered
    spans = [TEXTS[1][entry["start"] : entry["end"]] for entry in everything]
    assert spans == ["nothing", "much", "here"]


@pytest.mark.parametrize(
    "payload, words",
    [
        ({"inputs": "x", "parameters": {"aggregation_strategy": "longest"}}, ["none, simple"]),
        ({"inputs": "x", "parameters": {"grouped_entities": True}}, ["aggregation_strategy"]),
        ({"inputs": "x", "parameters": {"ignore_labels": "O"}}, ["ignore_labels"]),
        ({"inputs": {"text": "a", "text_pair": "b"}}, ["text_pair"]),
    ],
)
def test_bad_requests_are_400s_that_say_what_is_expected(served, payload, words):
    from smneuron.errors import SmneuronError

    handler, _, _ = served
    with pytest.raises(SmneuronError) as caught:
        handler.invoke(json.dumps(payload).encode(), "application/json", None)
    assert caught.value.status_code == 400
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_jsonlines_carries_one_answer_per_line_and_csv_is_a_406(served):
    from smneuron.errors import NotAcceptable

    handler, model, tokenizer = served
    body = json.dumps({"inputs": TEXTS[:2], "parameters": {"ignore_labels": []}}).encode()
    response = handler.invoke(body, "application/json", "application/jsonlines")
    lines = [json.loads(line) for line in response.body.decode().splitlines()]
    assert len(lines) == 2 and all(isinstance(line, list) and line for line in lines)
    with pytest.raises(NotAcceptable, match="application/json"):
        handler.invoke(body, "application/json", "text/csv")
