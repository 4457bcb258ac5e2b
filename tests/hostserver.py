"""`serve` as a host subprocess on 127.0.0.1 (nginx + a stack), for integration tests and soak."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from netutil import free_port, wait_ready

START_TIMEOUT_S = 240


def require_nginx() -> None:
    """Skip without nginx on a developer box; fail in CI, which installs it
    (scripts/host-packages.sh)."""
    if shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK):
        return
    message = "nginx is not installed (apt-get install nginx, or scripts/host-packages.sh)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


class Server:
    """One `serve` process; its log goes to ``log_path``."""

    def __init__(
        self, stack: str, base: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.stack = stack
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environ = dict(os.environ)
        environ.update(
            {
                "SAGEMAKER_BASE_DIR": str(base),
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "SMNEURON_SERVER": stack,
                "SMNEURON_ACCELERATOR": "cpu",
                "SMNEURON_MAX_BATCH_DELAY_MS": "50",
                "SMNEURON_LOG_FORMAT": "json",
                "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": "1",
                **(env or {}),
            }
        )
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from smneuron.serving.entry import main; sys.exit(main())",
            ],
            env=environ,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ping_statuses: list[int | str] = []

    def ping(self, timeout: float = 2.0) -> int | str:
        try:
            return requests.get(self.url + "/ping", timeout=timeout).status_code
        except requests.ConnectionError:
            return "refused"
        except requests.Timeout:
            return "timeout"

    def wait_ready(self, limit_s: float = START_TIMEOUT_S) -> None:
        def record(answer: int | str) -> None:
            if not self.ping_statuses or self.ping_statuses[-1] != answer:
                self.ping_statuses.append(answer)

        def exited() -> str | None:
            code = self.process.poll()
            return None if code is None else f"exit code {code}"

        wait_ready(
            self.url, limit_s, exited=exited, logs=self.log_text, on_answer=record, interval_s=0.25
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def runtime_dir(self) -> Path:
        found = re.search(r"runtime_dir=(\S+?)[\"\s]", self.log_text())
        assert found, "serve did not log its runtime_dir"
        return Path(found.group(1))

    def worker_pids(self) -> dict[int, int]:
        """slot -> pid of each worker that marked itself ready."""
        pids = {}
        for marker in self.runtime_dir.glob("ready-*.json"):
            try:
                pids[int(marker.stem.split("-")[1])] = json.loads(marker.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
        return pids

    def stop(self, grace_s: float = 40) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()
        return self.process.returncode


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class LoadFigures:
    """What a closed-loop load run measured."""

    duration_s: float
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    rss_warm_kb: dict[int, int] = field(default_factory=dict)
    rss_end_kb: dict[int, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rss_growth(self) -> float | None:
        """Worker RSS growth from warm-up to the end (same pids only), as a fraction."""
        same = [pid for pid in self.rss_warm_kb if pid in self.rss_end_kb]
        if not same:
            return None
        warm = sum(self.rss_warm_kb[p] for p in same)
        return (sum(self.rss_end_kb[p] for p in same) - warm) / warm

    def summary(self) -> str:
        growth = self.rss_growth
        return (
            f"requests={self.requests} errors={self.errors} "
            f"rps={self.requests / self.duration_s:.1f} "
            f"p50_ms={self.percentile(0.5):.1f} p99_ms={self.percentile(0.99):.1f} "
            f"worker_rss_warm_mb={sum(self.rss_warm_kb.values()) / 1024:.0f} "
            f"worker_rss_end_mb={sum(self.rss_end_kb.values()) / 1024:.0f} "
            f"rss_growth={'n/a' if growth is None else f'{100 * growth:+.2f}%'}"
        )


SOAK_TEXTS = [
    "claim your free prize now, reply WIN",
    "are we still on for lunch tomorrow?",
    "URGENT: your account was selected for a cash reward " * 3,
    "ok",
]


def run_load(
    url: str,
    duration_s: float,
    concurrency: int,
    pids: Callable[[], dict[int, int]] | None = None,
    warm_up_s: float | None = None,
) -> LoadFigures:
    """``concurrency`` keep-alive clients POST small JSON requests for ``duration_s``.

    Worker RSS is sampled after the warm-up (a tenth of the run, at least 5 s) and at the end.
    """
    figures = LoadFigures(duration_s, concurrency)
    lock = threading.Lock()
    began = time.monotonic()
    deadline = began + duration_s
    warm_at = began + (warm_up_s if warm_up_s is not None else max(5.0, duration_s / 10))

    def client(index: int) -> None:
        session = requests.Session()
        count = index
        while time.monotonic() < deadline:
            body = json.dumps({"inputs": SOAK_TEXTS[count % len(SOAK_TEXTS)]})
            count += 1
            start = time.monotonic()
            try:
                reply = session.post(
                    url + "/invocations",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                ok, detail = reply.status_code == 200, f"{reply.status_code} {reply.text[:200]}"
            except requests.RequestException as err:
                ok, detail = False, repr(err)
            elapsed = 1000 * (time.monotonic() - start)
            with lock:
                if ok:
                    figures.latencies_ms.append(elapsed)
                else:
                    figures.errors += 1
                    if len(figures.error_samples) < 5:
                        figures.error_samples.append(detail)

    def sample() -> dict[int, int]:
        found = {}
        for pid in (pids() if pids else {}).values():
            rss = rss_kb(pid)
            if rss is not None:
                found[pid] = rss
        return found

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    while time.monotonic() < warm_at and time.monotonic() < deadline:
        time.sleep(0.2)
    figures.rss_warm_kb = sample()
    for thread in threads:
        thread.join()
    figures.rss_end_kb = sample()
    return figures


# ---- raw HTTP, for what a well-behaved client library will not send


def raw_exchange(
    port: int, payload: bytes, replies: int = 1, timeout: float = 10, head: bool = False
) -> list[dict]:
    """Send raw bytes on one connection; parse up to ``replies`` HTTP responses from it
    (``head``: answers to HEAD, which have no body whatever their Content-Length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(payload)
        buffer, parsed = b"", []
        deadline = time.monotonic() + timeout
        while len(parsed) < replies and time.monotonic() < deadline:
            while b"\r\n\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return parsed
                buffer += chunk
            header_block, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = header_block.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
            length = 0 if head else int(headers.get("content-length", "0"))
            while len(buffer) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buffer += chunk
            body, buffer = buffer[:length], buffer[length:]
            parsed.append({"status": int(lines[0].split()[1]), "headers": headers, "body": body})
        return parsed


def assert_json_error(reply: dict, status: int | tuple[int, ...]) -> dict:
    statuses = (status,) if isinstance(status, int) else status
    assert reply["status"] in statuses, reply
    assert reply["headers"]["content-type"].startswith("application/json"), reply
    data = json.loads(reply["body"])
    assert data["code"] == reply["status"] and data["error"] and data["type"]
    return data


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


PING = request_bytes("GET", "/ping", {})

# Smuggling-style framing: each must be a 4xx JSON, never read as a body or a second request.
HOSTILE = {
    "negative Content-Length": ({"Content-Length": "-1"}, b"hello"),
    "duplicate Content-Length": ({"Content-Length": "5\r\nContent-Length: 6"}, b"hello!"),
    "Content-Length 1_0": ({"Content-Length": "1_0"}, b"hellohello"),
    "Content-Length and chunked": (
        {"Content-Length": "4", "Transfer-Encoding": "chunked"},
        b"5\r\nhello\r\n0\r\n\r\n",
    ),
    "Transfer-Encoding xchunked": ({"Transfer-Encoding": "xchunked"}, b"5\r\nhello\r\n0\r\n\r\n"),
    "non-hex chunk size": ({"Transfer-Encoding": "chunked"}, b"zz\r\nhello\r\n0\r\n\r\n"),
    "negative chunk size": ({"Transfer-Encoding": "chunked"}, b"-1\r\nhello\r\n0\r\n\r\n"),
    "huge chunk size": ({"Transfer-Encoding": "chunked"}, b"fffffffffffffffff\r\nhi\r\n0\r\n\r\n"),
}
