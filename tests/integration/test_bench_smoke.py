"""`make bench` smoke on this host (seconds, no docker): the load generator against a real
loopback server, and the in-process part on the tiny test artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import loadgen  # noqa: E402

from servingfixtures import build_artifact  # noqa: E402

pytestmark = pytest.mark.slow


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections: set[int] = set()
    bodies: list[dict] = []

    def do_POST(self) -> None:
        Echo.connections.add(id(self.connection))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Echo.bodies.append(body)
        status = 500 if body["inputs"].startswith("X") else 200
        reply = b'[{"label": "ham"}]'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    Echo.connections, Echo.bodies = set(), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_a_level_keeps_connections_alive_and_counts_server_errors(server):
    payloads = loadgen.bodies(["hello there", "Xfail", "win a prize"])
    result = loadgen.run_level(server, payloads, 4, max_requests=60, max_seconds=20, warm_up_s=0.2)
    assert result.requests + result.errors == 60
    assert result.errors == pytest.approx(20, abs=4)  # one body in three answers 500
    assert result.error_samples[0].startswith("500")
    assert len(Echo.connections) <= 4  # one keep-alive connection per client
    assert {body["inputs"] for body in Echo.bodies} == {"hello there", "Xfail", "win a prize"}


def in_process(tmp_path: Path, levels: str) -> dict:
    artifact = build_artifact(tmp_path / "model", "text-classification")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inprocess.py"), str(artifact)]
        + ["--concurrency", levels, "--seconds", "0.5", "--warm-up", "0.2"]
        + ["--graph-seconds", "0.05"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    figures["manifest"] = json.loads((artifact / "manifest.json").read_text())
    return figures


def test_the_in_process_part_times_every_graph_and_the_handler(tmp_path):
    figures = in_process(tmp_path, "1")
    manifest = figures["manifest"]
    sizes = manifest.get("batch_sizes") or [manifest["batch_size"]]
    shapes = {(row["batch"], row["bucket"]) for row in figures["graphs"]}
    assert shapes == {(b, n) for b in sizes for n in manifest["sequence_lengths"]}
    assert all(row["forward_ms"] > 0 for row in figures["graphs"])
    (level,) = figures["handler"]
    assert level["concurrency"] == 1 and level["requests"] > 0 and level["errors"] == 0


def test_concurrent_in_process_invocations_all_succeed(tmp_path):
    figures = in_process(tmp_path, "8")
    (level,) = figures["handler"]
    assert level["requests"] > 0 and level["errors"] == 0, level["error_samples"]


def test_make_profile_samples_a_serving_worker_and_splits_its_time(tmp_path):
    """benchmarks/hotpath.py with real py-spy over the tiny artifact: profile.md names each
    category, the shares add up, and the compiled graph's forward is among them."""
    import hotpath  # benchmarks/ is on sys.path (above)

    artifact = build_artifact(tmp_path / "model", "text-classification")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hotpath.py"), "--artifact", str(artifact)]
        + ["--seconds", "2", "--concurrency", "4", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stacks = hotpath.read_collapsed((out / "profile.txt").read_text())
    summary = hotpath.summarise(stacks)
    assert summary["samples"] > 20
    shares = {name: share for name, _, share in summary["shares"]}
    assert abs(sum(shares.values()) - 1.0) < 1e-9  # of the samples at work
    assert summary["waiting"] > 0  # the load threads wait on the batcher
    assert shares["forward"] > 0.05  # the graphs ran while sampled (tiny model: 19-90 %)
    report = (out / "profile.md").read_text()
    for name in ("forward", "tokenize", "codecs", "batcher", "other"):
        assert f"| {name} |" in report
