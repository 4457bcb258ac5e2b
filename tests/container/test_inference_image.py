"""`docker run IMAGE serve` with each server stack: the SageMaker hosting contract."""

from __future__ import annotations

import time

import pytest
import requests
from dockerjobs import start_server, wait_ready

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_ping_is_200_once_loaded(server):
    assert requests.get(server.url + "/ping", timeout=2).status_code == 200


def test_invocations_classify_each_input(server):
    response = requests.post(
        server.url + "/invocations",
        json={"inputs": ["win a free prize now", "see you at lunch"]},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    predictions = response.json()
    assert len(predictions) == 2
    assert all(p["label"] in ("ham", "spam") and 0 <= p["score"] <= 1 for p in predictions)


def test_csv_in_and_out(server):
    response = requests.post(
        server.url + "/invocations",
        data="text\nhello there\n",
        headers={"Content-Type": "text/csv", "Accept": "text/csv"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.text.strip().split(",")[0] in ("ham", "spam")


@pytest.mark.parametrize(
    ("status", "body", "content_type", "accept"),
    [
        (400, b"{not json", "application/json", "application/json"),
        (415, b"hello", "application/x-unknown", "application/json"),
        (406, b'{"inputs": "hello"}', "application/json", "image/png"),
    ],
)
def test_errors_are_json_with_the_right_status(server, status, body, content_type, accept):
    response = requests.post(
        server.url + "/invocations",
        data=body,
        headers={"Content-Type": content_type, "Accept": accept},
        timeout=60,
    )
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == status and error["error"]
    assert "Traceback" not in response.text


def test_execution_parameters(server):
    data = requests.get(server.url + "/execution-parameters", timeout=5).json()
    assert data["BatchStrategy"] in ("MULTI_RECORD", "SINGLE_RECORD")
    assert data["MaxPayloadInMB"] == 6
    assert data["MaxConcurrentTransforms"] >= 1


def test_image_declares_bind_to_port(docker_client, cpu_images):
    labels = docker_client.images.get(cpu_images["inference"]).labels
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"


@pytest.mark.parametrize("stack", ["mms", "gunicorn"])
def test_sigterm_stops_the_server_cleanly(docker_client, cpu_images, trained_job, stack):
    running = start_server(
        docker_client, cpu_images["inference"], trained_job.opt_ml / "model", stack
    )
    try:
        wait_ready(running)
        began = time.monotonic()
        running.container.stop(timeout=30)  # SIGTERM, then SIGKILL after 30 s
        stopped_after = time.monotonic() - began
        running.container.reload()
        code = running.container.attrs["State"]["ExitCode"]
        print(f"{stack}: stopped {stopped_after:.1f}s after SIGTERM, exit code {code}")
        # 137 would mean docker had to SIGKILL it after the 30 s grace period.
        assert code != 137, running.logs()[-3000:]
    finally:
        running.container.remove(force=True)
