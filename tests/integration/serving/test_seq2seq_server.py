"""Host integration: seq2seq generation through `serve` (nginx + gunicorn), streamed too."""

from __future__ import annotations

import json

import pytest
import requests
from hostserver import Server, require_nginx
from tinygen import build_seq2seq_artifact, reference_seq2seq, tiny_seq2seq, tiny_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_nginx()
    base = tmp_path_factory.mktemp("serve-seq2seq")
    build_seq2seq_artifact(base / "model")
    running = Server("gunicorn", base, base / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


def test_greedy_answers_and_streams_equal_hugging_face_generate(server):
    tokenizer = tiny_tokenizer()
    prompt = "the cat sat on the"
    _, text = reference_seq2seq(tiny_seq2seq(tokenizer), tokenizer, prompt, 10)
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 10}})
    headers = {"Content-Type": "application/json"}
    reply = requests.post(server.url + "/invocations", data=body, headers=headers, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json() == [{"generated_text": text}]
    with requests.post(
        server.url + "/invocations",
        data=body,
        headers={**headers, "Accept": "text/event-stream"},
        timeout=60,
        stream=True,
    ) as streamed:
        events = [
            json.loads(line[len("data: ") :])
            for line in streamed.iter_lines(decode_unicode=True)
            if line.startswith("data: ")
        ]
    assert "".join(event["token"]["text"] for event in events) == text
    too_long = json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 25}})
    refused = requests.post(server.url + "/invocations", data=too_long, headers=headers, timeout=60)
    assert refused.status_code == 400
    assert "max_total_length of 24" in refused.json()["error"]
