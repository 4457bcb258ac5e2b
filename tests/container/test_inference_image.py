"""`docker run IMAGE serve` with each server stack: the SageMaker hosting contract, nginx in
front, health, faults and signals."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from dockerjobs import start_server, wait_ready
from hostserver import HOSTILE, PING, assert_json_error, raw_exchange, request_bytes

HANDLERS = Path(__file__).resolve().parents[1] / "resources" / "handlers"

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


# ---- nginx in front, health and faults, in the built image


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(("method", "path"), [("HEAD", "/ping"), ("PUT", "/invocations")])
def test_wrong_methods_are_405_json(server, method, path):
    payload = request_bytes(method, path, {"Content-Length": "0"})
    reply = raw_exchange(port_of(server), payload, head=method == "HEAD")[0]
    assert reply["status"] == 405
    if method != "HEAD":
        assert_json_error(reply, 405)


def test_payload_limit_is_a_json_413_with_length_and_chunked(server):
    big = b"x" * (7 * 1024 * 1024)
    response = requests.post(
        server.url + "/invocations", data=big, headers={"Content-Type": "text/plain"}, timeout=60
    )
    assert response.status_code == 413 and "6 MB" in response.json()["error"]
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(7 * 16))
    head = request_bytes(
        "POST", "/invocations", {"Content-Type": "text/plain", "Transfer-Encoding": "chunked"}
    )
    reply = raw_exchange(port_of(server), head + chunks + b"0\r\n\r\n")[0]
    assert "6 MB" in assert_json_error(reply, 413)["error"]


@pytest.mark.parametrize("case", HOSTILE)
def test_smuggling_style_headers_are_4xx_json(server, case):
    headers, body = HOSTILE[case]
    payload = request_bytes("POST", "/invocations", {"Content-Type": "text/plain", **headers})
    replies = raw_exchange(port_of(server), payload + body + PING, replies=2)
    assert replies, case
    assert_json_error(replies[0], (400, 413))
    if len(replies) == 1:
        assert replies[0]["headers"].get("connection") == "close"
    else:
        assert replies[1]["status"] == 200
    assert requests.get(server.url + "/ping", timeout=2).status_code == 200


def test_the_hostile_battery_is_4xx_json_and_the_server_stays_up(server):
    """All of tests/hostile.py (body, header and framing cases) through nginx in the image."""
    from hostile import CASES, problems, send

    found = {}
    for case in CASES:
        reply = send(case, "127.0.0.1", port_of(server))
        wrong = problems(case, reply.status, reply.body)
        ping = requests.get(server.url + "/ping", timeout=2).status_code
        if ping != 200:
            wrong.append(f"/ping {ping} afterwards")
        if wrong:
            found[case.name] = wrong
    assert len(CASES) >= 40
    assert found == {}
    server.container.reload()
    assert server.container.status == "running"


def test_ping_holds_with_500_slow_header_connections(server):
    slow = []
    try:
        for _ in range(500):
            conn = socket.create_connection(("127.0.0.1", port_of(server)), timeout=5)
            conn.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Ty")
            slow.append(conn)
        assert requests.get(server.url + "/ping", timeout=2).status_code == 200
        reply = requests.post(server.url + "/invocations", json={"inputs": "hi"}, timeout=30)
        assert reply.status_code == 200, reply.text
    finally:
        for conn in slow:
            conn.close()


def model_with_handler(tmp_path, model_dir, handler: str):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    (target / "code").mkdir(exist_ok=True)
    shutil.copy(HANDLERS / f"{handler}.py", target / "code" / "inference.py")
    return target


def worker_pid(running, slot: int) -> int | None:
    result = running.container.exec_run(
        ["sh", "-c", f"cat /tmp/smneuron-serve-*/ready-{slot}.json"]
    )
    try:
        return json.loads(result.output)["pid"] if result.exit_code == 0 else None
    except ValueError:
        return None


@pytest.mark.parametrize("stack", ["mms", "gunicorn"])
def test_health_kill_and_sigterm_in_the_image(
    docker_client, cpu_images, trained_job, tmp_path, stack
):
    """/ping 503 -> 200; kill -9 of one of two workers under load; SIGTERM with a request in
    flight: it is answered and the container exits 0 within 30 s."""
    model = model_with_handler(tmp_path, trained_job.opt_ml / "model", "faults")
    running = start_server(
        docker_client,
        cpu_images["inference"],
        model,
        stack,
        env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
    )
    try:
        seen: list[int | str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (not seen or seen[-1] != 200):
            try:
                status: int | str = requests.get(running.url + "/ping", timeout=2).status_code
            except requests.RequestException:
                status = "refused"
            if not seen or seen[-1] != status:
                seen.append(status)
            time.sleep(0.25)
        assert seen[-1] == 200, running.logs()[-3000:]
        assert 503 in seen and seen.index(503) < seen.index(200), seen

        victim = worker_pid(running, 0)
        assert victim
        stop = threading.Event()
        failures: list[tuple[float, int | str]] = []
        pings: list[tuple[float, int | str]] = []

        def client() -> None:
            session = requests.Session()
            while not stop.is_set():
                began = time.monotonic()
                try:
                    code = session.post(
                        running.url + "/invocations", json={"inputs": "hi"}, timeout=60
                    ).status_code
                except requests.RequestException as err:
                    code = type(err).__name__
                if code != 200:
                    failures.append((began, code))

        def prober() -> None:
            while not stop.is_set():
                try:
                    code = requests.get(running.url + "/ping", timeout=2).status_code
                except requests.RequestException as err:
                    code = type(err).__name__
                pings.append((time.monotonic(), code))
                time.sleep(0.1)

        with ThreadPoolExecutor(5) as pool:
            for _ in range(4):
                pool.submit(client)
            pool.submit(prober)
            time.sleep(3)
            killed_at = time.monotonic()
            running.container.exec_run(["kill", "-9", str(victim)])
            deadline = killed_at + 10
            while time.monotonic() < deadline and not (
                pings and pings[-1][0] > killed_at + 0.5 and pings[-1][1] == 200
            ):
                time.sleep(0.1)
            time.sleep(2)
            stop.set()
        after = [code for t, code in pings if t > killed_at]
        print(f"{stack}: failures {failures}; /ping after kill {sorted(set(map(str, after)))}")
        assert after and after[-1] == 200
        # In flight on the killed worker: started before the kill, or in the few ms before
        # the server sees the death.
        assert len(failures) <= 4 and all(t <= killed_at + 0.5 for t, _ in failures), failures

        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(
                requests.post,
                running.url + "/invocations",
                json={"inputs": "hi", "parameters": {"sleep": 4}},
                timeout=60,
            )
            time.sleep(1.5)
            began = time.monotonic()
            running.container.stop(timeout=30)
            reply = in_flight.result(timeout=60)
        stopped_after = time.monotonic() - began
        running.container.reload()
        code = running.container.attrs["State"]["ExitCode"]
        print(f"{stack}: stopped {stopped_after:.1f}s after SIGTERM, exit code {code}")
        assert reply.status_code == 200, reply.text
        assert code == 0, running.logs()[-3000:]
    finally:
        running.container.remove(force=True)


@pytest.mark.parametrize("stack", ["mms", "gunicorn"])
def test_a_corrupt_artifact_is_never_healthy(
    docker_client, cpu_images, trained_job, tmp_path, stack
):
    model = tmp_path / "model"
    shutil.copytree(trained_job.opt_ml / "model", model)
    for graph in (model / "compiled").iterdir():
        graph.write_bytes(b"not a TorchScript archive")
    running = start_server(docker_client, cpu_images["inference"], model, stack)
    try:
        seen, reason = set(), ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "failed to load" not in reason:
            try:
                reply = requests.get(running.url + "/ping", timeout=2)
                seen.add(reply.status_code)
                reason = reply.json()["error"]
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert seen == {503}, (seen, running.logs()[-3000:])
        assert "failed to load" in reason
    finally:
        running.container.remove(force=True)


def test_mms_runs_with_our_reply_decoder_and_no_jdk_in_the_image(docker_client, cpu_images, server):
    if server.stack == "mms":
        assert "MMS runs with smneuron's reply decoder from /opt/smneuron/mms-classes" in (
            server.logs()
        )
    probe = (
        "import shutil; from smneuron.serving.stacks import mms_decoder as d; "
        "print(d.is_current(d.PREBUILT), shutil.which('javac'))"
    )
    out = docker_client.containers.run(
        cpu_images["inference"], ["python", "-c", probe], entrypoint=[], remove=True
    )
    assert out.decode().split() == ["True", "None"]  # compiled at build time, JDK left behind
