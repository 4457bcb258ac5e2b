"""Host integration: causal-lm generation through `serve` (nginx + gunicorn), streamed too."""

from __future__ import annotations

import json
import time

import pytest
import requests
from hostserver import Server, require_nginx
from tinygen import build_causal_artifact, reference_text, tiny_causal_lm, tiny_tokenizer

pytestmark = pytest.mark.slow

TOTAL = 1000  # long enough that a stream is still running when its client goes away


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_nginx()
    base = tmp_path_factory.mktemp("serve-generation")
    build_causal_artifact(base / "model", batch_size=2, total=TOTAL, positions=1024)
    running = Server("gunicorn", base, base / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


@pytest.fixture(scope="module")
def reference():
    tokenizer = tiny_tokenizer()
    return tiny_causal_lm(tokenizer, 1024), tokenizer


def post(server, body, accept=None, **kwargs):
    headers = {"Content-Type": "application/json", **({"Accept": accept} if accept else {})}
    return requests.post(
        server.url + "/invocations", data=json.dumps(body), headers=headers, timeout=60, **kwargs
    )


def test_greedy_text_equals_hugging_face_generate(server, reference):
    for prompt in ("the cat sat on the", "hello there"):
        _, text = reference_text(*reference, prompt, 16)
        reply = post(server, {"inputs": prompt, "parameters": {"max_new_tokens": 16}})
        assert reply.status_code == 200, reply.text
        assert reply.json() == [{"generated_text": prompt + text}]


def test_a_list_of_prompts_gets_one_answer_each(server, reference):
    prompts = ["the cat", "a dog", "hello"]
    reply = post(
        server, {"inputs": prompts, "parameters": {"max_new_tokens": 5, "return_full_text": False}}
    )
    assert reply.status_code == 200, reply.text
    expected = [[{"generated_text": reference_text(*reference, p, 5)[1]}] for p in prompts]
    assert reply.json() == expected


def test_seeded_sampling_is_reproducible(server):
    params = {"max_new_tokens": 10, "do_sample": True, "seed": 3, "temperature": 1.3}
    first = post(server, {"inputs": "the cat", "parameters": params}).json()
    assert post(server, {"inputs": "the cat", "parameters": params}).json() == first


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": " ".join(["word"] * 20)}, 413, "largest prompt bucket of 16 tokens"),
        ({"inputs": "hi", "parameters": {"max_new_tokens": TOTAL}}, 400, "max_total_length"),
        ({"inputs": "hi", "parameters": {"max_length": 5}}, 400, "unknown parameter"),
        ({"inputs": "hi", "parameters": {"top_p": 0}}, 400, "top_p"),
    ],
)
def test_limits_and_bad_parameters_are_json_errors(server, body, status, message):
    reply = post(server, body)
    assert reply.status_code == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    assert message in reply.json()["error"]


def read_sse(reply) -> list[dict]:
    events = []
    for line in reply.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
    return events


def test_a_server_sent_event_stream_concatenates_to_the_greedy_text(server):
    prompt, params = "the cat sat on the", {"max_new_tokens": 24, "return_full_text": False}
    whole = post(server, {"inputs": prompt, "parameters": params}).json()[0]["generated_text"]
    with post(
        server, {"inputs": prompt, "parameters": params}, "text/event-stream", stream=True
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        assert reply.headers.get("Transfer-Encoding") == "chunked"
        events = read_sse(reply)
    assert len(events) == 24
    assert "".join(event["token"]["text"] for event in events) == whole
    assert events[-1]["generated_text"] == whole
    assert all(event["generated_text"] is None for event in events[:-1])


def test_a_json_lines_stream_has_one_event_per_line(server):
    params = {"max_new_tokens": 6}
    with post(
        server, {"inputs": "hello", "parameters": params}, "application/jsonlines", stream=True
    ) as reply:
        assert reply.status_code == 200
        lines = [json.loads(line) for line in reply.iter_lines() if line]
    assert len(lines) == 6
    assert lines[-1]["details"]["finish_reason"] in ("length", "eos")


def test_a_stream_error_before_the_first_token_is_a_json_error(server):
    reply = post(server, {"inputs": "hi", "parameters": {"seed": "x"}}, "text/event-stream")
    assert reply.status_code == 400
    assert '"seed"' in reply.json()["error"]


def test_a_client_that_goes_away_stops_its_generation(server):
    body = {"inputs": "the cat", "parameters": {"max_new_tokens": TOTAL - 10}}
    with post(server, body, "text/event-stream", stream=True) as reply:
        assert reply.status_code == 200
        next(reply.iter_lines())  # the first event arrived: generation is under way
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "'cancelled'" not in server.log_text():
        time.sleep(0.2)
    lines = [line for line in server.log_text().splitlines() if "'cancelled'" in line]
    assert lines, server.log_text()[-3000:]
    # it stopped before its max_new_tokens
    assert f"new_tokens=[{TOTAL - 10}]" not in lines[-1]


def test_smneuron_invoke_stream_prints_the_generated_text(server):
    import subprocess
    import sys

    body = {"inputs": "the cat", "parameters": {"max_new_tokens": 12, "return_full_text": False}}
    whole = post(server, body).json()[0]["generated_text"]
    for accept in ("text/event-stream", "application/jsonlines"):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from smneuron.tools.cli import main; sys.exit(main())",
                "invoke",
                "--stream",
                "--endpoint-name",
                "local",
                "--local-port",
                str(server.port),
                "--accept",
                accept,
                "--body",
                "@" + json.dumps(body),
            ],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode("utf-8") == whole + "\n"


@pytest.fixture(scope="module")
def mms_server(tmp_path_factory):
    require_nginx()
    base = tmp_path_factory.mktemp("serve-generation-mms")
    build_causal_artifact(base / "model", batch_size=2, total=64, positions=1024)
    running = Server("mms", base, base / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_mms_answers_generation_and_sends_a_stream_whole_at_its_end(mms_server, reference):
    prompt, params = "the cat sat on the", {"max_new_tokens": 10, "return_full_text": False}
    whole = post(mms_server, {"inputs": prompt, "parameters": params})
    assert whole.status_code == 200, whole.text
    text = whole.json()[0]["generated_text"]
    assert text == reference_text(*reference, prompt, 10)[1]
    reply = post(mms_server, {"inputs": prompt, "parameters": params}, "text/event-stream")
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    events = read_sse(reply)
    assert "".join(event["token"]["text"] for event in events) == text
