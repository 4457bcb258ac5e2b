"""Host integration: `serve` (nginx + each stack) in a subprocess, real HTTP requests."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hostserver import (
    HOSTILE,
    PING,
    Server,
    assert_json_error,
    raw_exchange,
    request_bytes,
    require_nginx,
)

from servingfixtures import LABELS, with_handler

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["gunicorn", "mms"])
def server(request, tmp_path_factory, classifier_dir):
    import shutil

    require_nginx()
    base = tmp_path_factory.mktemp(f"serve-{request.param}")
    shutil.copytree(classifier_dir, base / "model")
    with_handler(base, "integration")
    running = Server(request.param, base, base / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log_text()[-2000:]


def post(server, body, content_type="application/json", accept=None, timeout=60):
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    return requests.post(server.url + "/invocations", data=body, headers=headers, timeout=timeout)


def test_ping_is_503_while_loading_then_200(server):
    statuses = [s for s in server.ping_statuses if isinstance(s, int)]  # not "refused"
    assert statuses[0] == 503 and statuses[-1] == 200, server.ping_statuses
    assert server.ping_statuses.index(503) < server.ping_statuses.index(200)


def test_predictions_equal_the_eager_model(server, eager_classifier):
    texts = ["claim your free prize now", "meeting moved to 3pm", "ok"]
    reply = post(server, json.dumps({"inputs": texts}))
    assert reply.status_code == 200, reply.text
    got = reply.json()
    for g, w in zip(got, eager_classifier(texts), strict=True):
        assert g["label"] == w["label"]
        assert g["score"] == pytest.approx(w["score"], abs=1e-4)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "accept"),
    [
        (400, b'{"inputs": ', "application/json", None),
        (406, b'"hello"', "application/json", "image/png"),
        (415, b"<x/>", "application/xml", None),
        (500, b'{"inputs": "x", "parameters": {"raise": true}}', "application/json", None),
    ],
)
def test_error_statuses_are_json_without_traces(server, status, body, content_type, accept):
    reply = post(server, body, content_type, accept)
    assert reply.status_code == status
    data = reply.json()
    assert data["code"] == status and data["type"] and data["error"]
    assert "Traceback" not in reply.text and "secret" not in reply.text


def test_request_over_the_limit_is_413(server):
    reply = post(server, b"x" * (7 * 1024 * 1024), "text/plain")
    assert reply.status_code == 413
    assert "6 MB" in reply.json()["error"]


def test_large_response_is_not_cut_off(server):
    reply = post(server, json.dumps({"inputs": "x", "parameters": {"large": True}}), timeout=120)
    assert reply.status_code == 200
    assert len(reply.content) > 7 * 1024 * 1024
    assert len(reply.json()) == 7 * 1024


def test_execution_parameters_follow_settings(server):
    from smneuron.cpus import available_cpus

    data = requests.get(server.url + "/execution-parameters", timeout=5).json()
    assert data == {
        "MaxConcurrentTransforms": available_cpus(),  # the workers: one per CPU by default
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


def test_64_concurrent_requests_are_batched_and_correct(server, eager_classifier):
    texts = [f"message number {i} " + "free " * (i % 5) for i in range(64)]
    want = eager_classifier(texts)

    def one(text):
        return post(server, json.dumps({"inputs": text}), timeout=120)

    with ThreadPoolExecutor(64) as pool:
        replies = list(pool.map(one, texts))
    assert [r.status_code for r in replies] == [200] * 64
    for reply, expected in zip(replies, want, strict=True):
        got = reply.json()[0]
        assert got["label"] == expected["label"] and got["label"] in LABELS
        assert got["score"] == pytest.approx(expected["score"], abs=1e-4)
    time.sleep(0.5)
    sizes = []
    for line in server.log_text().splitlines():
        if '"message": "invocation"' in line:
            sizes.extend(json.loads(line).get("batch_sizes", []))
    assert max(sizes) > 1, "no request shared a batch"


def test_ping_is_not_in_the_access_log(server):
    for _ in range(3):
        requests.get(server.url + "/ping", timeout=2)
    requests.get(server.url + "/execution-parameters", timeout=2)
    time.sleep(0.3)
    text = server.log_text()
    assert "/execution-parameters" in text
    assert "/ping" not in text


# ---- the front (nginx): methods, limits, hostile framing, slow clients


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("HEAD", "/ping"),
        ("PUT", "/invocations"),
        ("DELETE", "/ping"),
        ("PATCH", "/invocations"),
        ("GET", "/invocations"),
        ("POST", "/execution-parameters"),
        ("BREW", "/invocations"),
    ],
)
def test_wrong_methods_are_405_json(server, method, path):
    payload = request_bytes(method, path, {"Content-Length": "0"})
    replies = raw_exchange(server.port, payload, head=method == "HEAD")
    assert replies and replies[0]["status"] == 405, replies
    assert replies[0]["headers"]["allow"] in ("GET", "POST")
    if method != "HEAD":  # a HEAD answer has no body by definition
        assert_json_error(replies[0], 405)


def test_unknown_route_is_404_json(server):
    assert_json_error(raw_exchange(server.port, request_bytes("GET", "/nothing", {}))[0], 404)


def test_chunked_body_over_the_limit_is_refused_not_truncated(server):
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(7 * 16))  # 7 MB
    payload = request_bytes(
        "POST", "/invocations", {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"}
    )
    data = assert_json_error(raw_exchange(server.port, payload + chunks + b"0\r\n\r\n")[0], 413)
    assert "6 MB" in data["error"]


def test_chunked_body_under_the_limit_is_de_chunked(server):
    body = json.dumps({"inputs": ["free prize", "lunch?"]}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    payload = request_bytes(
        "POST", "/invocations", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    reply = raw_exchange(server.port, payload + chunked)[0]
    assert reply["status"] == 200, reply
    assert len(json.loads(reply["body"])) == 2


@pytest.mark.parametrize("case", HOSTILE)
def test_smuggling_style_headers_are_4xx_json_and_the_server_stays_up(server, case):
    headers, body = HOSTILE[case]
    payload = request_bytes("POST", "/invocations", {"Content-Type": "text/plain", **headers})
    replies = raw_exchange(server.port, payload + body + PING, replies=2)
    assert replies, f"{case}: no answer at all"
    data = assert_json_error(replies[0], (400, 413))
    assert "Traceback" not in data["error"]
    # Either nginx closed the connection after its 4xx (and said so) or it answered the next
    # request on it: the pipelined /ping is never silently swallowed into the bad body.
    if len(replies) == 1:
        assert replies[0]["headers"].get("connection") == "close", replies[0]
    else:
        assert replies[1]["status"] == 200
    assert server.ping() == 200


def test_chunk_trailers_are_consumed_and_the_next_request_is_answered(server):
    body = b'"free prize"'
    chunked = b"%x\r\n%s\r\n0\r\nX-Checksum: abc\r\n\r\n" % (len(body), body)
    payload = request_bytes(
        "POST", "/invocations", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    )
    replies = raw_exchange(server.port, payload + chunked + PING, replies=2)
    assert [r["status"] for r in replies] == [200, 200], replies
    assert json.loads(replies[1]["body"])["status"] == "ready"


def test_ping_and_a_request_are_answered_while_500_slow_clients_hang(server):
    slow = []
    try:
        for _ in range(500):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            conn.sendall(b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
            slow.append(conn)
        began = time.monotonic()
        assert requests.get(server.url + "/ping", timeout=2).status_code == 200
        print(
            f"{server.stack}: /ping in {1000 * (time.monotonic() - began):.1f} ms "
            "with 500 slow-header connections open"
        )
        reply = post(server, json.dumps({"inputs": "free prize"}), timeout=30)
        assert reply.status_code == 200, reply.text
    finally:
        for conn in slow:
            conn.close()


def test_a_predict_fn_that_raises_is_500_and_the_worker_stays(server):
    before = server.worker_pids()
    reply = post(server, b'{"inputs": "x", "parameters": {"raise": true}}')
    assert reply.status_code == 500 and reply.json()["code"] == 500
    assert post(server, b'"hello"').status_code == 200
    assert server.worker_pids() == before
    assert server.ping() == 200


def test_soak_smoke(server):
    """`make soak` for ~20 s at concurrency 8: no errors, figures printed."""
    from hostserver import run_load

    figures = run_load(server.url, duration_s=20, concurrency=8, pids=server.worker_pids)
    print(f"{server.stack}: {figures.summary()}")
    assert figures.requests > 0
    assert figures.errors == 0, figures.error_samples
