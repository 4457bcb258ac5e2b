"""Text classification answers equal the Hugging Face pipeline's (what the Hugging Face
inference toolkit returns): the same checkpoint, the same requests, served through our handler
and run by an in-process ``transformers.pipeline("text-classification")``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smneuron.serving.handler import Handler, WorkerInfo
from smneuron.serving.settings import ServingSettings
from tinymodels import label_config, minilm_dir, tiny_config

# Each request: (inputs, parameters). Covers every input form and parameter.
REQUESTS = [
    ("win a free cruise now", {}),
    (["see you at lunch", "claim your prize", "ok"], {}),
    ("win a free cruise now", {"top_k": 2}),
    ("win a free cruise now", {"top_k": None}),
    (["see you at lunch", "claim your prize"], {"top_k": 1}),
    (["see you at lunch", "claim your prize"], {"top_k": None}),
    ({"text": "is it raining?", "text_pair": "the sun is out"}, {}),
    ({"text": "is it raining?", "text_pair": "the sun is out"}, {"top_k": 2}),
    ({"text": "just one text"}, {}),
    (
        [
            {"text": "is it raining?", "text_pair": "the sun is out"},
            {"text": "a cat", "text_pair": "an animal"},
        ],
        {},
    ),
    ([{"text": "a cat", "text_pair": "an animal"}], {"top_k": None}),
    (["a plain text", {"text": "a cat", "text_pair": "an animal"}], {"top_k": 2}),
    ("win a free cruise now", {"function_to_apply": "sigmoid"}),
    (["see you at lunch", "claim"], {"function_to_apply": "none", "top_k": 2}),
    ({"text": "a", "text_pair": "b"}, {"function_to_apply": "SOFTMAX"}),
    ("win " * 100, {}),  # longer than the largest bucket: both truncate (to 64 and 128)
    (["a plain text", "win " * 100], {"truncation": True, "top_k": 1}),
]

# (labels, problem_type): softmax by default; sigmoid by default for multi-label.
HEADS = {
    "single-label": (("neg", "neu", "pos"), None),
    "multi-label": (("billing", "spam"), "multi_label_classification"),
}


def _checkpoint(target: Path, labels: tuple[str, ...], problem_type: str | None) -> Path:
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    extra = {"problem_type": problem_type} if problem_type else {}
    # A wide initialisation spreads the scores, so that ranks do not hinge on float noise.
    config = tiny_config(
        vocab_size=tokenizer.vocab_size,
        max_positions=128,
        initializer_range=0.5,
        **label_config(labels),
        **extra,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="module", params=sorted(HEADS))
def served(request, tmp_path_factory):
    """(handler, pipeline) for one checkpoint, compiled with buckets 16 and 64."""
    import torch
    import transformers

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact

    torch.set_num_threads(1)
    labels, problem_type = HEADS[request.param]
    base = tmp_path_factory.mktemp(f"parity-{request.param}")
    model_dir = _checkpoint(base / "model", labels, problem_type)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    compile_artifact(
        model_dir,
        model,
        task="text-classification",
        labels=labels,
        batch_size=2,
        sequence_lengths=(16, 64),
        backend=CpuBackend(),
    )
    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(base)})
    handler = Handler.load(model_dir, WorkerInfo(0, None, settings, CpuBackend()))
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)
    yield handler, pipe
    handler.model.close()


def assert_same(got, want, path="answer"):
    """Same nesting, same labels, scores within 1e-4."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: {got!r} is not an object like {want!r}"
        assert sorted(got) == sorted(want), path
        assert got["label"] == want["label"], path
        assert got["score"] == pytest.approx(want["score"], abs=1e-4), path
        return
    assert isinstance(got, list) and isinstance(want, list), f"{path}: {got!r} vs {want!r}"
    assert len(got) == len(want), f"{path}: {len(got)} entries, the pipeline has {len(want)}"
    for index, (one, other) in enumerate(zip(got, want, strict=True)):
        assert_same(one, other, f"{path}[{index}]")


def served_answer(handler, inputs, parameters):
    payload = {"inputs": inputs, **({"parameters": parameters} if parameters else {})}
    response = handler.invoke(json.dumps(payload).encode(), "application/json", None)
    assert response.status == 200, response.body
    return json.loads(response.body)


def refused(handler, body: bytes) -> tuple[int, str]:
    """The status and message the error boundary answers for ``body``."""
    from smneuron.errors import SmneuronError

    with pytest.raises(SmneuronError) as caught:
        handler.invoke(body, "application/json", None)
    return caught.value.status_code, str(caught.value)


@pytest.mark.parametrize("inputs, parameters", REQUESTS)
def test_served_answers_equal_the_pipeline(served, inputs, parameters):
    handler, pipe = served
    # The pipeline truncates only when told; the server truncates to its largest bucket.
    want = pipe(inputs, **{"truncation": True, **parameters}, max_length=64)
    assert_same(served_answer(handler, inputs, parameters), want)


@pytest.mark.parametrize(
    "parameters, words",
    [
        ({"topk": 2}, ["topk", "top_k, function_to_apply, truncation"]),
        ({"truncation": "yes"}, ["truncation"]),
        ({"function_to_apply": "tanh"}, ["sigmoid, softmax, none"]),
        ({"top_k": 0}, ["top_k"]),
        ({"top_k": "2"}, ["top_k"]),
    ],
)
def test_bad_parameters_are_400s_that_say_what_is_accepted(served, parameters, words):
    handler, _ = served
    body = json.dumps({"inputs": "hello", "parameters": parameters}).encode()
    status, message = refused(handler, body)
    assert status == 400
    assert all(word in message for word in words), message


@pytest.mark.parametrize(
    "inputs",
    [
        {"text": "a", "pair": "b"},
        {"text_pair": "b"},
        {"text": "a", "text_pair": 3},
        ["a", ["b", "c"]],
        [{"text": 1}],
    ],
)
def test_malformed_text_pairs_are_400s(served, inputs):
    handler, _ = served
    status, message = refused(handler, json.dumps({"inputs": inputs}).encode())
    assert status == 400 and "text" in message


def test_pairs_to_a_task_without_pairs_are_400s(tmp_path, embedder_dir):
    import shutil

    from smneuron.artifact.backends import CpuBackend

    shutil.copytree(embedder_dir, tmp_path / "model")
    settings = ServingSettings.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    handler = Handler.load(tmp_path / "model", WorkerInfo(0, None, settings, CpuBackend()))
    try:
        status, message = refused(handler, b'{"inputs": {"text": "a", "text_pair": "b"}}')
        assert status == 400 and "text_pair" in message
        status, message = refused(handler, b'{"inputs": "a", "parameters": {"top_k": 1}}')
        assert status == 400 and "accepted parameters: none" in message
    finally:
        handler.model.close()
