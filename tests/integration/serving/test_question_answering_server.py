"""Host integration: question answering through `serve` (nginx + gunicorn) answers as the
in-process Hugging Face pipeline on the same checkpoint, long contexts included."""

from __future__ import annotations

import json

import pytest
import requests
from hostserver import Server, require_nginx

from servingfixtures import BUCKETS, build_artifact

pytestmark = pytest.mark.slow

CONTEXT = (
    "Kenji teaches Portuguese at the evening school. Before that he spent ten years as a "
    "ship's cook on cargo vessels crossing the Atlantic, and he still cooks for his students on "
    "Fridays. The school stands at the end of Harbour Street, next to the old customs house, "
    "and its library keeps letters written by sailors since 1701."
)
QUESTIONS = [
    {"question": "What does Kenji teach?", "context": CONTEXT},  # windows of the largest bucket
    {"question": "Where does Anna live?", "context": "Anna Lopez lives in Madrid."},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_nginx()
    base = tmp_path_factory.mktemp("serve-qa")
    build_artifact(base / "model", "question-answering")
    running = Server("gunicorn", base, base / "server.log")
    try:
        running.wait_ready()
        yield running, base / "model"
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


@pytest.fixture(scope="module")
def pipe(server):
    import transformers

    _, model_dir = server
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    assert (
        len(tokenizer(**{"text": QUESTIONS[0]["question"], "text_pair": CONTEXT})["input_ids"])
        > (BUCKETS[-1])
    )
    qa = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer)
    stride = json.loads((model_dir / "manifest.json").read_text())["task_parameters"]["doc_stride"]
    return lambda question, **parameters: qa(
        **question, max_seq_len=BUCKETS[-1], doc_stride=stride, **parameters
    )


def post(server, body):
    running, _ = server
    return requests.post(
        running.url + "/invocations",
        data=json.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )


def same(got, want):
    assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
    assert got["score"] == pytest.approx(float(want["score"]), rel=1e-3, abs=1e-5)


def test_a_lone_question_and_a_batch_answer_as_the_pipeline(server, pipe):
    reply = post(server, {"inputs": QUESTIONS[0]})
    assert reply.status_code == 200, reply.text
    same(reply.json(), pipe(QUESTIONS[0]))
    reply = post(server, {"inputs": QUESTIONS, "parameters": {"top_k": 2}})
    assert reply.status_code == 200, reply.text
    for answers, question in zip(reply.json(), QUESTIONS, strict=True):
        for got, want in zip(answers, pipe(question, top_k=2), strict=True):
            same(got, want)


def test_a_question_without_context_is_a_json_400(server):
    reply = post(server, {"inputs": {"question": "Who?"}})
    assert reply.status_code == 400
    assert reply.headers["Content-Type"].startswith("application/json")
    assert '"context" must be a non-empty string' in reply.json()["error"]
