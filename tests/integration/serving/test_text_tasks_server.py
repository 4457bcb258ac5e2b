"""Host integration: fill-mask, multiple choice and next-sentence prediction through `serve`
(nginx + gunicorn), answers equal to the in-process Hugging Face model's, and their 400s."""

from __future__ import annotations

import json

import pytest
import requests
from hostserver import Server, require_nginx

from tinymodels import minilm_dir, tiny_model

pytestmark = pytest.mark.slow

SHAPES = {"fill-mask": {"max_masks": 2}, "multiple-choice": {"choices": 3}}


def start(tmp_path_factory, task):
    import torch
    from transformers import AutoTokenizer

    from smneuron.artifact.backends import CpuBackend
    from smneuron.artifact.build import compile_artifact

    require_nginx()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp(f"serve-{task}")
    model_dir = base / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    model = tiny_model(task, (), max_positions=64, vocab_size=tokenizer.vocab_size)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    compile_artifact(
        model_dir,
        model,
        task=task,
        labels=(),
        batch_sizes=(1, 2),
        sequence_lengths=(16, 32),
        backend=CpuBackend(),
        **SHAPES.get(task, {}),
    )
    return Server("gunicorn", base, base / "server.log"), model, tokenizer


@pytest.fixture(
    scope="module", params=sorted(["fill-mask", "multiple-choice", "next-sentence-prediction"])
)
def served(request, tmp_path_factory):
    running, model, tokenizer = start(tmp_path_factory, request.param)
    try:
        running.wait_ready()
        yield request.param, running, model, tokenizer
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


def post(server, body):
    return requests.post(
        server.url + "/invocations",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )


def test_served_answers_equal_the_in_process_models(served):
    import torch
    import transformers

    task, server, model, tokenizer = served
    if task == "fill-mask":
        pipe = transformers.pipeline("fill-mask", model=model, tokenizer=tokenizer)
        texts = ["Paris is the [MASK] of France.", "The [MASK] sat on the [MASK]."]
        reply = post(server, {"inputs": texts, "parameters": {"top_k": 3}})
        assert reply.status_code == 200, reply.text
        want = pipe(texts, top_k=3)
        got = reply.json()
        assert [e["token"] for e in got[0]] == [e["token"] for e in want[0]]
        assert [[e["token"] for e in row] for row in got[1]] == [
            [e["token"] for e in row] for row in want[1]
        ]
        assert [e["sequence"] for e in got[0]] == [e["sequence"] for e in want[0]]
        assert [e["score"] for e in got[0]] == pytest.approx(
            [e["score"] for e in want[0]], rel=1e-4
        )
    elif task == "multiple-choice":
        context, choices = "What do bees make?", ["bread", "glass", "honey"]
        reply = post(server, {"inputs": [{"question": context, "choices": choices}] * 2})
        assert reply.status_code == 200, reply.text
        encoded = tokenizer([context] * 3, choices, padding=True, return_tensors="pt")
        with torch.no_grad():
            want = model(**{k: v.unsqueeze(0) for k, v in encoded.items()}).logits.softmax(-1)
        for answer in reply.json():
            assert answer["scores"] == pytest.approx(want[0].tolist(), abs=1e-5)
            assert answer["label"] == int(want[0].argmax())
    else:
        pairs = [("I put the kettle on.", "The water boiled."), ("The phone rang.", "Mars is red.")]
        reply = post(server, {"inputs": [{"text": a, "text_pair": b} for a, b in pairs]})
        assert reply.status_code == 200, reply.text
        for answer, (a, b) in zip(reply.json(), pairs, strict=True):
            with torch.no_grad():
                logits = model(**tokenizer(a, b, return_tensors="pt")).logits
            score = float(logits.softmax(-1)[0, 0])
            assert answer == {"is_next": score >= 0.5, "score": pytest.approx(score, abs=1e-5)}


BAD = {
    "fill-mask": ({"inputs": "no mask here"}, "no mask token [MASK]"),
    "multiple-choice": (
        {"inputs": {"context": "q", "choices": ["a", "b"]}},
        "compiled for exactly 3",
    ),
    "next-sentence-prediction": ({"inputs": "one text"}, "no second text"),
}


def test_the_tasks_bad_input_is_a_json_400(served):
    task, server, _, _ = served
    body, words = BAD[task]
    reply = post(server, body)
    assert reply.status_code == 400
    assert reply.headers["Content-Type"].startswith("application/json")
    assert words in reply.json()["error"]
