"""Host integration: `serve` in a subprocess with each stack, real HTTP requests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from servingfixtures import LABELS, with_handler

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, stack: str, base: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ)
        env.update(
            {
                "SAGEMAKER_BASE_DIR": str(base),
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "SMNEURON_SERVER": stack,
                "SMNEURON_ACCELERATOR": "cpu",
                "SMNEURON_MAX_BATCH_DELAY_MS": "50",
                "SMNEURON_LOG_FORMAT": "json",
                "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",
            }
        )
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from smneuron.serving.entry import main; main()"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ping_statuses: list[int | str] = []

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_text()[-3000:]
            try:
                status = requests.get(self.url + "/ping", timeout=2).status_code
            except requests.ConnectionError:
                status = "refused"
            if not self.ping_statuses or self.ping_statuses[-1] != status:
                self.ping_statuses.append(status)
            if status == 200:
                return
            time.sleep(0.25)
        raise AssertionError(f"not ready in {START_TIMEOUT_S}s: {self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        return self.process.returncode


@pytest.fixture(scope="module", params=["gunicorn", "mms"])
def server(request, tmp_path_factory, classifier_dir):
    import shutil

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
    statuses = [s for s in server.ping_statuses if s != "refused"]
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
    data = requests.get(server.url + "/execution-parameters", timeout=5).json()
    assert data == {
        "MaxConcurrentTransforms": 1,
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
